"""Residual finite scalar quantizer (Mentzer et al., 2023, in residual form): a channel-first wrapper over
``vector_quantize_pytorch.ResidualFSQ``.

Each level rounds every channel of the code space to a fixed grid (``levels[i]`` values on channel i),
shrunk by ``levels ** -k`` at level k; a code is the index of the grid point, so a level has
``prod(levels)`` codes. The latents [B, D, T] are linearly projected to ``len(levels)`` channels and back
unless D == len(levels). There is no codebook state and no commitment loss: `penalty` is zero.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from vector_quantize_pytorch import ResidualFSQ

from .residual_scalar import ResidualScalarQuantizer


class ResidualFiniteScalarQuantizer(ResidualScalarQuantizer):
    """Residual FSQ of latents [B, D, T] into codes [B, K, T] in [0, prod(levels)).

    The library bounds the projected latents (a soft clamp to the grid's range) before the first level;
    the output's gradient is that of ``project_out(bounded(project_in(x)))`` (see
    :mod:`~audiogen_lab.quantization.residual_scalar`).

    Args:
        dimension: latent dimension D.
        levels: grid size of each code-space channel (each >= 2); ``[8, 5, 5, 5]`` gives 1000 codes.
        n_q: number of residual levels.
        q_dropout: in training, use a random number of levels (1..num_codebooks) per batch; the number used
            is reported in ``metrics['num_codebooks']``.
    """

    def __init__(self, dimension: int = 128, levels: tp.Sequence[int] = (8, 5, 5, 5), n_q: int = 8,
                 q_dropout: bool = False):
        levels = [int(level) for level in levels]
        assert dimension >= 1 and n_q >= 1, f"dimension and n_q must be >= 1, got {dimension}, {n_q}"
        assert len(levels) >= 1 and all(level >= 2 for level in levels), \
            f"levels must list grid sizes >= 2 (one per code channel), got {levels}"
        residual = ResidualFSQ(dim=dimension, levels=levels, num_quantizers=n_q, quantize_dropout=q_dropout)
        super().__init__(residual, dimension=dimension, n_q=n_q, cardinality=math.prod(levels))
        self.levels = levels
        self.q_dropout = q_dropout

    def _run(self, latents: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        _, indices = self.residual(latents)
        return indices, torch.zeros((), device=latents.device)

    def _codebooks(self) -> torch.Tensor:
        # grid points [n_q, prod(levels), C] times each level's scale [n_q, C]
        return self.residual.codebooks * self.residual.scales.unsqueeze(1)
