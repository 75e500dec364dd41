"""Adversarial training: discriminators, criteria, feature matching and the adversarial loss wrapper."""
from .discriminators import (LatentCritic, MultiDiscriminator, MultiPeriodDiscriminator, MultiScaleDiscriminator,
                             MultiScaleSTFTDiscriminator)
from .losses import (AdversarialLoss, FeatureMatchingLoss, get_adv_criterion, get_fake_criterion,
                     get_real_criterion, hinge_fake_loss, hinge_gen_loss, hinge_real_loss, mse_fake_loss,
                     mse_gen_loss, mse_real_loss)

__all__ = [
    "AdversarialLoss",
    "FeatureMatchingLoss",
    "LatentCritic",
    "MultiDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "get_adv_criterion",
    "get_fake_criterion",
    "get_real_criterion",
    "hinge_fake_loss",
    "hinge_gen_loss",
    "hinge_real_loss",
    "mse_fake_loss",
    "mse_gen_loss",
    "mse_real_loss",
]
