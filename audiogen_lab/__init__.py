"""audiogen_lab: a research framework for training audio generative models.

One trainer base (:mod:`audiogen_lab.solvers.base`), one Hydra config tree (``config/``) and one
launcher (Dora) serve every model family: compression models, latent GANs, hierarchical token LMs
and contrastive audio-text models.
"""

__version__ = "0.1.0"

import typing as _tp

if _tp.TYPE_CHECKING:
    from .models.encoder_decoder import EncoderDecoder  # noqa: F401

_LAZY = {"EncoderDecoder": "audiogen_lab.models.encoder_decoder"}


def __getattr__(name: str) -> _tp.Any:
    """Import the public classes of :data:`_LAZY` on first access, so that ``import audiogen_lab`` stays light."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audiogen_lab' has no attribute {name!r}")
