"""Build the latent GAN's generator and critic from the Hydra config (``config/model/latent_gan/*.yaml``)::

    latent_gan: {latent_dim, coord_dim, style_dim, anchor_spacing, window}
    latent_generator: {...LatentGenerator kwargs but latent_dim, coord_dim, style_dim...}
    latent_critic: {...LatentCritic kwargs but latent_dim...}
"""
from __future__ import annotations

import omegaconf

from ..adversarial.discriminators.latent_critic import LatentCritic
from .builders import _instantiate, _kwargs
from .latent_gan import LatentGAN
from .latent_gan_generator import LatentGenerator


def get_latent_gan_model(cfg: omegaconf.DictConfig) -> LatentGAN:
    """The generator with its sampler; the normaliser and rate are set later (from the latent folder) or
    loaded with the weights."""
    gan = cfg.latent_gan
    if gan.get("latent_dim") is None:
        raise ValueError("latent_gan.latent_dim is null: set it to the dimension of the training latents "
                         "(`dim` in the latent folder's meta.json).")
    generator = _instantiate(LatentGenerator, {**_kwargs(cfg, "latent_generator"), "latent_dim": int(gan.latent_dim),
                                               "coord_dim": int(gan.coord_dim), "style_dim": int(gan.style_dim)},
                             "latent_generator")
    return LatentGAN(generator, anchor_spacing=int(gan.anchor_spacing), window=int(gan.window))


def get_latent_critic(cfg: omegaconf.DictConfig) -> LatentCritic:
    """The window critic, with the reconstruction head when ``latent_critic.reconstruction``."""
    return _instantiate(LatentCritic, {**_kwargs(cfg, "latent_critic"), "latent_dim": int(cfg.latent_gan.latent_dim)},
                        "latent_critic")
