"""Grouped residual vector quantizer: a channel-first wrapper over ``vector_quantize_pytorch.GroupedResidualVQ``.

The latent channels are split into `groups` contiguous slices, each quantized by its own residual VQ
(EMA codebooks, k-means initialisation, dead-code expiry, commitment loss, as in
:class:`~audiogen_lab.quantization.rvq.ResidualVectorQuantizer`); quantizer dropout draws one number of
levels for all groups.

Codes layout, level-major: row ``k = level * groups + group`` of codes [B, K, T], i.e.
``[level 0 of group 0, level 0 of group 1, ..., level 1 of group 0, ...]``. A prefix of ``n * groups``
rows is then the code of the first `n` levels of every group, as with the plain residual quantizer.
"""
from __future__ import annotations

import contextlib
import typing as tp

import torch
from einops import rearrange, reduce, repeat
from vector_quantize_pytorch import GroupedResidualVQ

from .base import LevelledQuantizer, QuantizedResult
from .levels import check_codes, eval_mode, first_levels, lookup_levels, straight_through


class GroupedResidualVectorQuantizer(LevelledQuantizer):
    """Grouped residual vector quantization of latents [B, D, T] into codes [B, groups * levels, T].

    Gradients follow the plain residual quantizer: the quantized output is the codewords with an identity
    (straight-through) gradient to the input, plus each level's commitment loss in `penalty`; codebooks
    follow an exponential moving average of the vectors assigned to them.

    Args:
        dimension: latent dimension D, a multiple of `groups`.
        n_q: residual levels per group; the quantizer holds ``groups * n_q`` codebooks.
        groups: number of channel groups, each of D / groups channels.
        q_dropout: in training, use a random number of levels (the same for every group) per batch; the
            number of codebooks used is reported in ``metrics['num_codebooks']``.
        bins: codebook size (log2(bins) bits per code).
        decay: EMA decay of the codebooks.
        kmeans_init: initialise the codebooks with k-means on the first batch.
        kmeans_iters: k-means iterations of that initialisation.
        threshold_ema_dead_code: codes whose EMA usage falls below this are replaced by batch vectors.
        commitment_weight: weight of the commitment loss inside `penalty`.
    """

    def __init__(self, dimension: int = 128, n_q: int = 4, groups: int = 2, q_dropout: bool = False,
                 bins: int = 1024, decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 2, commitment_weight: float = 1.0):
        super().__init__(dimension, n_q)
        assert n_q >= 1 and groups >= 1 and bins >= 2, \
            f"n_q and groups must be >= 1 and bins >= 2, got {n_q}, {groups}, {bins}"
        assert dimension >= groups and dimension % groups == 0, \
            f"dimension ({dimension}) must be a multiple of groups ({groups}): change groups"
        assert 0. <= decay < 1., f"decay must be in [0, 1), got {decay}"
        self.groups = groups
        self.q_dropout = q_dropout
        self.bins = bins
        self._num_codebooks = groups * n_q
        self.vq = GroupedResidualVQ(
            dim=dimension, groups=groups, num_quantizers=n_q, codebook_size=bins, decay=decay,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
            commitment_weight=commitment_weight, quantize_dropout=q_dropout,
            rotation_trick=False)  # plain straight-through estimator, as in EnCodec

    # -- codebook selection ------------------------------------------------------------------------

    @property
    def total_codebooks(self) -> int:
        return self.groups * self.n_q

    def set_num_codebooks(self, n: int) -> None:
        """Use the first ``n / groups`` levels of every group: `n` counts codebooks over all groups."""
        if not (1 <= n <= self.total_codebooks and n % self.groups == 0):
            raise ValueError(f"num_codebooks must be a multiple of groups={self.groups} in "
                             f"[{self.groups}, {self.total_codebooks}] (groups * n_q), got {n}.")
        self._num_codebooks = int(n)

    @property
    def cardinality(self) -> int:
        return self.bins

    @contextlib.contextmanager
    def _first_levels(self, n: int) -> tp.Iterator[None]:
        """Run the first `n` levels of every group only."""
        with contextlib.ExitStack() as stack:
            for rvq in self.vq.rvqs:
                stack.enter_context(first_levels(rvq, n))
            yield

    @contextlib.contextmanager
    def _record_levels(self) -> tp.Iterator[tp.List[tp.List[torch.Tensor]]]:
        """Collect, per group, the quantized vectors [B, T, D / groups] of each level that runs."""
        store: tp.List[tp.List[torch.Tensor]] = [[] for _ in self.vq.rvqs]
        handles = [layer.register_forward_hook(lambda module, args, out, levels=levels: levels.append(out[0].detach()))
                   for rvq, levels in zip(self.vq.rvqs, store) for layer in rvq.layers]
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    def _group_masks(self, n_levels: int, device: torch.device) -> torch.Tensor:
        """[K, D] with K = n_levels * groups (level-major): 1 on the channels of row k's group, 0 elsewhere."""
        eye = torch.eye(self.groups, device=device)
        return repeat(eye, 'g h -> (l g) (h c)', l=n_levels, c=self.dimension // self.groups)

    # -- quantization ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        """Quantize `x` [B, D, T]; in training this also updates the codebooks (EMA, dead codes).

        Returns x [B, D, T] (quantized), codes [B, K, T] (level-major rows), the bandwidth, the commitment
        penalty (summed over groups and levels; zero in eval mode) and `layer_outputs` [B, K, D, T]: row k
        holds its codeword on its group's channels and zeros elsewhere (the rows sum to `x`), with an
        identity gradient to the input channels of that group.
        """
        self._check_latents(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            with self._record_levels() as levels, self._first_levels(self._num_codebooks // self.groups):
                _, indices, losses = self.vq(rearrange(x, 'b d t -> b t d'))
            used = len(levels[0])
            vectors = torch.stack([torch.stack(group) for group in levels])  # [G, L, B, T, D / G]
            eye = torch.eye(self.groups, device=x.device)
            placed = rearrange(torch.einsum('glbtc,gh->blghct', vectors, eye), 'b l g h c t -> b (l g) (h c) t')
            through = straight_through(x)
            masks = rearrange(self._group_masks(used, x.device), 'k d -> 1 k d 1')
            layer_outputs = placed + rearrange(through, 'b d t -> b 1 d t') * masks
            quantized = reduce(placed, 'b k d t -> b d t', 'sum') + through
            codes = rearrange(indices[..., :used], 'g b t l -> b (l g) t')
            penalty = losses.sum()
        n_codebooks = used * self.groups
        bandwidth = torch.tensor(n_codebooks * self.bandwidth_per_codebook(frame_rate), device=x.device)
        return QuantizedResult(quantized, codes, bandwidth, penalty=penalty,
                               metrics={'num_codebooks': float(n_codebooks)}, layer_outputs=layer_outputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, num_codebooks, T] (level-major rows) of `x` [B, D, T]. Never updates the codebooks nor
        drops levels; codebooks that were never initialised are k-means initialised on `x` first, as the
        library's forward does in any mode."""
        self._check_latents(x)
        with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad(), eval_mode(self.vq), \
                self._first_levels(self._num_codebooks // self.groups):
            _, indices, _ = self.vq(rearrange(x.float(), 'b d t -> b t d'))
        return rearrange(indices, 'g b t l -> b (l g) t')

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, T] (float32) of `codes` [B, K, T] (level-major rows), using the first
        K / groups levels of every group."""
        check_codes(codes, self.total_codebooks)
        assert codes.shape[1] % self.groups == 0, \
            f"codes hold {codes.shape[1]} rows, not a multiple of groups={self.groups}"
        n_levels = codes.shape[1] // self.groups
        codebooks = rearrange(self.vq.codebooks[:, :n_levels], 'g l n c -> (l g) n c')
        vectors = lookup_levels(codes, codebooks)  # [B, K, T, D / G]
        return reduce(vectors, 'b (l g) t c -> b (g c) t', 'sum', g=self.groups)
