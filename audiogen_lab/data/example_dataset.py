"""The example-dataset builder under its earlier import path; the code lives in `audiogen_lab.data.example`.

    from audiogen_lab.data.example_dataset import build_example_dataset  # same as audiogen_lab.data.example
"""
from .example import *  # noqa: F401,F403
from .example import __all__  # noqa: F401
