"""Residual scalar quantizers with fixed codebooks (FSQ, LFQ) behind the :class:`BaseQuantizer` contract.

vector-quantize-pytorch's ``ResidualFSQ`` and ``ResidualLFQ`` project the latents [B, T, D] to a small
code space of C channels (a learned linear map unless D == C), quantize the residual of each level by
rounding every channel to a fixed grid shrunk at each level, and project the sum back to D channels.
Their codebooks are implicit (the grid points), so there is no codebook state to train or initialise.

This shared wrapper adds the [B, D, T] layout, the bandwidth bookkeeping, inference with fewer levels,
the per-level outputs used by codebook-level losses, and one gradient estimator for both families: the
output is ``project_out(sum of level codewords)`` with the rounding made straight-through, i.e. its
gradient is that of ``project_out(z)`` where z [B, T, C] is the library's input to its first level
(the projected latents, bounded by FSQ). The library itself sums one straight-through term per level,
which would scale the gradient by the number of levels.
"""
from __future__ import annotations

import typing as tp
from abc import abstractmethod

import torch
from einops import rearrange, reduce
from torch import nn
from torch.nn import functional as F

from .base import LevelledQuantizer, QuantizedResult
from .levels import check_codes, eval_mode, first_levels, levels_used, lookup_levels, straight_through


class ResidualScalarQuantizer(LevelledQuantizer):
    """Residual quantization of latents [B, D, T] into codes [B, K, T] by a library residual quantizer
    with fixed codebooks, `residual`, which must hold ``layers``, ``num_quantizers``, ``project_in`` and
    ``project_out`` (``nn.Identity`` or ``nn.Linear``) and take latents [B, T, D].

    Subclasses pass the library module and say how to run it (:meth:`_run`) and what its codewords are
    (:meth:`_codebooks`).

    Args:
        residual: the library residual quantizer.
        dimension: latent dimension D.
        n_q: number of levels of `residual`.
        cardinality: number of codes per level.
    """

    def __init__(self, residual: nn.Module, dimension: int, n_q: int, cardinality: int):
        super().__init__(dimension, n_q)
        assert residual.num_quantizers == n_q, \
            f"the library quantizer holds {residual.num_quantizers} levels, not n_q={n_q}"
        self.residual = residual
        self._cardinality = int(cardinality)

    @abstractmethod
    def _run(self, latents: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Run the library on `latents` [B, T, D]: (indices [B, T, Q] with -1 on dropped levels, penalty)."""

    @abstractmethod
    def _codebooks(self) -> torch.Tensor:
        """Codewords [n_q, cardinality, C] of every level in the code space, level scale included."""

    # -- codebook selection ------------------------------------------------------------------------

    @property
    def cardinality(self) -> int:
        return self._cardinality

    def _project_levels(self, vectors: torch.Tensor) -> torch.Tensor:
        """Per-level vectors [B, K, T, C] in the code space -> [B, K, T, D]; the projection's bias goes to
        the first level so that the levels sum to the projected sum."""
        project_out = self.residual.project_out
        if isinstance(project_out, nn.Identity):
            return vectors
        levels = F.linear(vectors, project_out.weight)
        if project_out.bias is None:
            return levels
        return torch.cat([levels[:, :1] + project_out.bias, levels[:, 1:]], dim=1)

    # -- quantization ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        """Quantize `x` [B, D, T].

        Returns x [B, D, T] (quantized), codes [B, K, T] with K the levels used, the bandwidth, the
        penalty of the family and `layer_outputs` [B, K, D, T] (the projected codewords of each level,
        the projection's bias on the first), each with the straight-through gradient of the output.
        """
        self._check_latents(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            first_inputs: tp.List[torch.Tensor] = []
            hook = self.residual.layers[0].register_forward_pre_hook(
                lambda module, args: first_inputs.append(args[0]))
            try:
                with first_levels(self.residual, self._num_codebooks):
                    indices, penalty = self._run(rearrange(x, 'b d t -> b t d'))
            finally:
                hook.remove()
            # the first level's scale is 1: its input is the projected (and bounded) latents z [B, T, C]
            through = straight_through(first_inputs[0])
            used = levels_used(indices)
            codes = rearrange(indices[..., :used].long(), 'b t k -> b k t')
            vectors = lookup_levels(codes, self._codebooks()[:used])  # [B, K, T, C], constants
            quantized = self.residual.project_out(reduce(vectors, 'b k t c -> b t c', 'sum') + through)
            layer_outputs = self._project_levels(vectors + rearrange(through, 'b t c -> b 1 t c'))
        bandwidth = torch.tensor(used * self.bandwidth_per_codebook(frame_rate), device=x.device)
        return QuantizedResult(rearrange(quantized, 'b t d -> b d t'), codes, bandwidth, penalty=penalty,
                               metrics={'num_codebooks': float(used)},
                               layer_outputs=rearrange(layer_outputs, 'b k t d -> b k d t'))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, num_codebooks, T] of `x` [B, D, T]; never drops levels."""
        self._check_latents(x)
        with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad(), \
                eval_mode(self.residual), first_levels(self.residual, self._num_codebooks):
            indices, _ = self._run(rearrange(x.float(), 'b d t -> b t d'))
        return rearrange(indices.long(), 'b t k -> b k t')

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, T] (float32) of `codes` [B, K, T], using the first K levels."""
        check_codes(codes, self.n_q)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            vectors = lookup_levels(codes, self._codebooks()[:codes.shape[1]])
            latents = self.residual.project_out(reduce(vectors, 'b k t c -> b t c', 'sum'))
        return rearrange(latents, 'b t d -> b d t')
