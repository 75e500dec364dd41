"""Residual vector quantizer: a channel-first wrapper over ``vector_quantize_pytorch.ResidualVQ``.

The library provides the EMA codebooks, k-means initialisation on the first batch, dead-code expiry,
the commitment loss and quantizer dropout. This wrapper adds the [B, D, T] layout, the bandwidth
bookkeeping, inference with fewer codebooks, the per-level outputs used by codebook-level losses, and
a lean inference search (`encode`) that reads the library's codebook buffers and gives the same codes.
"""
from __future__ import annotations

import contextlib
import typing as tp

import torch
from einops import rearrange, reduce
from torch.nn import functional as F
from vector_quantize_pytorch import ResidualVQ
from vector_quantize_pytorch.vector_quantize_pytorch import cdist as codebook_distance

from .base import LevelledQuantizer, QuantizedResult
from .levels import check_codes, eval_mode, first_levels, lookup_levels, straight_through


class ResidualVectorQuantizer(LevelledQuantizer):
    """Residual vector quantization of latents [B, D, T] into codes [B, K, T].

    Gradients follow EnCodec: the quantized output is the sum of the levels' codewords with an identity
    (straight-through) gradient to the input, and each level's commitment loss
    ``mse(q_k.detach(), r_k)`` on its residual ``r_k`` reaches the input too. Codebooks are not trained
    by gradients: they follow an exponential moving average of the vectors assigned to them.

    Args:
        dimension: latent dimension D.
        n_q: number of codebook levels.
        q_dropout: in training, use a random number of levels (1..num_codebooks) per batch so that the
            decoder learns every bandwidth; the number used is reported in ``metrics['num_codebooks']``.
        bins: codebook size (log2(bins) bits per code).
        decay: EMA decay of the codebooks.
        kmeans_init: initialise the codebooks with k-means on the first training batch.
        kmeans_iters: k-means iterations of that initialisation.
        threshold_ema_dead_code: codes whose EMA usage falls below this are replaced by batch vectors.
        commitment_weight: weight of the commitment loss inside `penalty`.
    """

    def __init__(self, dimension: int = 128, n_q: int = 8, q_dropout: bool = False, bins: int = 1024,
                 decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 2, commitment_weight: float = 1.0):
        super().__init__(dimension, n_q)
        assert dimension >= 1 and n_q >= 1 and bins >= 2, \
            f"dimension and n_q must be >= 1 and bins >= 2, got {dimension}, {n_q}, {bins}"
        assert 0. <= decay < 1., f"decay must be in [0, 1), got {decay}"
        self.q_dropout = q_dropout
        self.bins = bins
        self.vq = ResidualVQ(
            dim=dimension, num_quantizers=n_q, codebook_size=bins, decay=decay, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, quantize_dropout=q_dropout,
            rotation_trick=False)  # plain straight-through estimator, as in EnCodec

    # -- codebook selection ------------------------------------------------------------------------

    @property
    def cardinality(self) -> int:
        return self.bins

    @contextlib.contextmanager
    def _record_levels(self, store: tp.List[torch.Tensor]) -> tp.Iterator[None]:
        """Collect the quantized vectors [B, T, D] of each level that runs, in order."""
        handles = [layer.register_forward_hook(lambda module, args, out: store.append(out[0].detach()))
                   for layer in self.vq.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _codebooks_initialised(self, n_levels: int) -> bool:
        return all(bool(layer._codebook.initted) for layer in self.vq.layers[:n_levels])

    def _nearest_codes(self, x: torch.Tensor, n_levels: int) -> torch.Tensor:
        """Greedy residual search of the nearest codewords of `x` [B, D, T] (float32) in the first
        `n_levels` codebooks: codes [B, n_levels, T].

        Per level: one distance matmul over all B * T vectors, an argmax and a codeword lookup. The
        distance is the library's own function on the library's codebook buffers, and argmax keeps the
        first of tied codes as the library does, so the codes are those of the library's eval-mode loop,
        without its per-level bookkeeping (one-hot matrices, losses, masks, dropout, beam search).
        """
        batch = x.shape[0]
        # contiguous like the library's packed input: the matmul's rounding depends on the memory layout,
        # and duplicated codewords (k-means on few vectors) are exact ties that rounding can flip
        residual = rearrange(x, 'b d t -> 1 (b t) d').contiguous()
        codes = []
        for layer in self.vq.layers[:n_levels]:
            codebook = layer._codebook.embed  # [1, bins, D]: the EMA codebook buffer
            index = (-codebook_distance(residual, codebook)).argmax(dim=-1)  # [1, B * T]
            residual = residual - F.embedding(index, codebook[0])
            codes.append(index)
        return rearrange(torch.cat(codes), 'k (b t) -> b k t', b=batch)

    # -- quantization ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        """Quantize `x` [B, D, T]; in training this also updates the codebooks (EMA, dead codes).

        Returns x [B, D, T] (quantized), codes [B, K, T] with K the levels used, the bandwidth, the
        commitment penalty (summed over levels; zero in eval mode) and `layer_outputs` [B, K, D, T].
        """
        self._check_latents(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            levels: tp.List[torch.Tensor] = []
            with self._record_levels(levels), first_levels(self.vq, self._num_codebooks):
                _, codes, losses = self.vq(rearrange(x, 'b d t -> b t d'))
            used = len(levels)
            quantized_levels = rearrange(torch.stack(levels), 'k b t d -> b k d t')
            # values are the codewords exactly; gradients reach `x` as identity (straight-through)
            through = straight_through(x)
            layer_outputs = quantized_levels + through.unsqueeze(1)
            quantized = reduce(quantized_levels, 'b k d t -> b d t', 'sum') + through
            codes = rearrange(codes[..., :used], 'b t k -> b k t')
            penalty = losses.sum()
        bandwidth = torch.tensor(used * self.bandwidth_per_codebook(frame_rate), device=x.device)
        return QuantizedResult(quantized, codes, bandwidth, penalty=penalty,
                               metrics={'num_codebooks': float(used)}, layer_outputs=layer_outputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, num_codebooks, T] of `x` [B, D, T]. Never updates the codebooks nor drops levels.

        With initialised codebooks this is a lean nearest-codeword search (`_nearest_codes`) giving the
        library's codes; before the codebooks are initialised it runs the library, which initialises
        them with k-means on `x` as its forward does in any mode.
        """
        self._check_latents(x)
        if self._codebooks_initialised(self._num_codebooks):
            with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad():
                return self._nearest_codes(x.float(), self._num_codebooks)
        with eval_mode(self.vq), torch.autocast(device_type=x.device.type, enabled=False), \
                first_levels(self.vq, self._num_codebooks):
            _, codes, _ = self.vq(rearrange(x.float(), 'b d t -> b t d'))
        return rearrange(codes, 'b t k -> b k t')

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, T] (float32) of `codes` [B, K, T], using the first K levels."""
        check_codes(codes, self.n_q)
        vectors = lookup_levels(codes, self.vq.codebooks[:codes.shape[1]])
        return reduce(vectors, 'b k t d -> b d t', 'sum')
