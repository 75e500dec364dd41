"""Residual lookup-free quantizer (Yu et al., 2023, in residual form): a channel-first wrapper over
``vector_quantize_pytorch.ResidualLFQ``.

Each level keeps the sign of every channel of a log2(bins)-channel code space, with codewords
``±2 ** -k`` at level k; a code is the integer whose bits are those signs, so a level has `bins` codes.
The latents [B, D, T] are linearly projected to log2(bins) channels and back unless D == log2(bins).
Training adds the library's auxiliary loss per level to `penalty`: an entropy term (confident
assignments, every code used across the batch; it can make the penalty negative) and a commitment term.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from vector_quantize_pytorch import ResidualLFQ

from .residual_scalar import ResidualScalarQuantizer


class ResidualLookupFreeQuantizer(ResidualScalarQuantizer):
    """Residual LFQ of latents [B, D, T] into codes [B, K, T] in [0, bins).

    The output's gradient is that of ``project_out(project_in(x))`` (see
    :mod:`~audiogen_lab.quantization.residual_scalar`); the penalty's gradient reaches the input too.

    Args:
        dimension: latent dimension D.
        n_q: number of residual levels.
        q_dropout: in training, use a random number of levels (1..num_codebooks) per batch; the number used
            is reported in ``metrics['num_codebooks']``.
        bins: codes per level, a power of 2 (log2(bins) code channels).
        entropy_loss_weight: weight of the entropy term inside `penalty`.
        commitment_weight: weight of the commitment term (mse between each level's input and codeword).
        diversity_gamma: weight of the batch-usage entropy against the per-sample entropy.
    """

    def __init__(self, dimension: int = 128, n_q: int = 8, q_dropout: bool = False, bins: int = 1024,
                 entropy_loss_weight: float = 0.1, commitment_weight: float = 0.25, diversity_gamma: float = 1.0):
        assert dimension >= 1 and n_q >= 1, f"dimension and n_q must be >= 1, got {dimension}, {n_q}"
        assert bins >= 2 and bins & (bins - 1) == 0, \
            f"bins must be a power of 2 (one bit per code channel), got {bins}"
        assert entropy_loss_weight >= 0 and commitment_weight >= 0, \
            f"loss weights must be >= 0, got {entropy_loss_weight}, {commitment_weight}"
        residual = ResidualLFQ(dim=dimension, num_quantizers=n_q, codebook_size=bins, quantize_dropout=q_dropout,
                               entropy_loss_weight=entropy_loss_weight, commitment_loss_weight=commitment_weight,
                               diversity_gamma=diversity_gamma)
        super().__init__(residual, dimension=dimension, n_q=n_q, cardinality=bins)
        self.bins = bins
        self.q_dropout = q_dropout
        self.code_channels = int(math.log2(bins))

    def _run(self, latents: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        _, indices, losses = self.residual(latents)
        return indices, losses.sum()  # zero in eval mode

    def _codebooks(self) -> torch.Tensor:
        return self.residual.codebooks  # [n_q, bins, log2(bins)], level scales included
