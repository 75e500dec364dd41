"""Discriminators for adversarial training of audio models."""
from .base import FeatureMapType, LogitsType, MultiDiscriminator, MultiDiscriminatorOutputType
from .msstftd import DiscriminatorSTFT, MultiScaleSTFTDiscriminator

__all__ = [
    "DiscriminatorSTFT",
    "FeatureMapType",
    "LogitsType",
    "MultiDiscriminator",
    "MultiDiscriminatorOutputType",
    "MultiScaleSTFTDiscriminator",
]
