"""Metrics of generated latents: latent Fréchet distance, per-dimension moment errors and the seam ratio."""
from __future__ import annotations

import typing as tp

from einops import rearrange
import torch

from .fad import GaussianStats


def frame_stats(latents: torch.Tensor) -> GaussianStats:
    """Gaussian statistics of the latent frames `[B, D, T]` (every frame is one D-dim sample)."""
    return GaussianStats.from_embeddings(rearrange(latents.detach().double().cpu(), 'b d t -> (b t) d'))


def latent_frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the frames of `real` and `fake` latents `[B, D, T]`."""
    return frame_stats(real).distance(frame_stats(fake))


def moment_errors(real: torch.Tensor, fake: torch.Tensor) -> tp.Dict[str, float]:
    """Mean absolute error over dimensions between the per-dimension means and stds of `real` and `fake`
    latents `[B, D, T]`: `mean_error`, `std_error`."""
    real, fake = real.detach().double(), fake.detach().double()
    return {'mean_error': float((real.mean((0, 2)) - fake.mean((0, 2))).abs().mean()),
            'std_error': float((real.std((0, 2)) - fake.std((0, 2))).abs().mean())}


def seam_ratio(latents: torch.Tensor, period: int) -> float:
    """Mean |latent jump| `|x[t+1] - x[t]|` (averaged over D) across the boundaries of independently generated
    blocks of `period` frames, over the mean jump inside them; about 1 when the joins are seamless.

    Args:
        latents: `[B, D, T]` with T a multiple of `period` and at least two blocks.
        period: frames per block (for the latent GAN, half a window: each half is generated alone).
    """
    profile = jump_profile(latents, period)
    return float(profile[-1] / profile[:-1].mean().clamp(min=1e-12))


def jump_profile(latents: torch.Tensor, period: int) -> torch.Tensor:
    """Mean |latent jump| (averaged over D) at each position of blocks of `period` frames: `[period]`, where
    entry `k` is the jump from frame `k` to frame `k + 1` of a block and the last entry the jump across the
    boundary into the next block.

    Args:
        latents: `[B, D, T]` with T a multiple of `period` and at least two blocks.
        period: frames per block.
    """
    assert latents.shape[-1] >= 2 * period and latents.shape[-1] % period == 0, (
        f"Need a whole number (>= 2) of blocks of {period} frames, got {latents.shape[-1]} frames.")
    jumps = (latents[..., 1:] - latents[..., :-1]).abs().double().mean(1)  # [B, T - 1]
    jumps = torch.cat([jumps, jumps.new_full((jumps.shape[0], 1), float('nan'))], dim=-1)  # no jump after the end
    return jumps.reshape(jumps.shape[0], -1, period).flatten(0, 1).nanmean(0)


def worst_jump_ratio(latents: torch.Tensor, period: int) -> float:
    """The largest mean jump at any position of the blocks of `period` frames (the boundary included) over
    the mean jump inside them: like :func:`seam_ratio`, but it also catches a discontinuity a generator
    has moved a few frames away from the boundary. About 1 when no position stands out."""
    profile = jump_profile(latents, period)
    return float(profile.max() / profile[:-1].mean().clamp(min=1e-12))
