"""Discriminators for adversarial training of audio models."""
from .base import (FeatureMapType, LogitsType, MultiDiscriminator, MultiDiscriminatorOutputType, float32_weights,
                   normalized_conv)
from .latent_critic import LatentCritic
from .mpd import MultiPeriodDiscriminator, PeriodDiscriminator
from .msd import MultiScaleDiscriminator, ScaleDiscriminator
from .msstftd import DiscriminatorSTFT, MultiScaleSTFTDiscriminator

__all__ = [
    "DiscriminatorSTFT",
    "FeatureMapType",
    "LatentCritic",
    "LogitsType",
    "MultiDiscriminator",
    "MultiDiscriminatorOutputType",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "PeriodDiscriminator",
    "ScaleDiscriminator",
    "float32_weights",
    "normalized_conv",
]
