"""Latent GAN, adaptive R1 on/off x critic reconstruction head on/off: `dora grid latent_gan.latent_gan`.

Point it at latent folders with `AUDIOGEN_LAB_GRID_OVERRIDES="datasource.train=DIR datasource.valid=DIR
latent_gan.latent_dim=D"` (see grids/_explorers.py)."""
from .._explorers import LatentGANExplorer


@LatentGANExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, mem_per_gpu=16, cpus_per_gpu=8)
    launcher.bind_(solver="latent_gan/default")
    for adaptive in (True, False):
        for head in (False, True):
            launcher({"latent_gan.adaptive_r1": adaptive, "latent_critic.reconstruction": head})
