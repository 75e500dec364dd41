"""Quantizer interface and the result record shared by every quantizer and compression model."""
from __future__ import annotations

import typing as tp
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizedResult:
    """What a quantizer (or a compression model's forward) returns.

    Attributes:
        x: quantized latents [B, D, T]; the reconstruction [B, C, T] when returned by
            ``CompressionModel.forward``.
        codes: code indices [B, K, T] (long), K = number of codebooks used for this batch.
        bandwidth: scalar tensor, kbps spent by `codes`.
        penalty: commitment loss summed over the codebook levels (not multiplied by any solver weight),
            or None when the quantizer has none.
        metrics: extra values to log (plain numbers).
        layer_outputs: per-level quantized vectors [B, K, D, T] of the levels used, whose sum over K is
            `x`; gradients flow to the quantizer input straight through. None when not available.
    """
    x: torch.Tensor
    codes: torch.Tensor
    bandwidth: torch.Tensor
    penalty: tp.Optional[torch.Tensor] = None
    metrics: dict = field(default_factory=dict)
    layer_outputs: tp.Optional[torch.Tensor] = None


class BaseQuantizer(nn.Module, ABC):
    """A module turning latents [B, D, T] into codes [B, K, T] and back."""

    @abstractmethod
    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        """Quantize `x` [B, D, T] whose frames come at `frame_rate` Hz (used for the bandwidth)."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] of latents `x` [B, D, T], with K = :attr:`num_codebooks`."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, D, T] of `codes` [B, K, T]."""

    @property
    @abstractmethod
    def total_codebooks(self) -> int:
        """Number of codebooks the quantizer holds."""

    @property
    @abstractmethod
    def num_codebooks(self) -> int:
        """Number of codebooks currently used by forward and encode."""

    @abstractmethod
    def set_num_codebooks(self, n: int) -> None:
        """Use the first `n` codebooks only (lower bandwidth)."""

    @property
    @abstractmethod
    def cardinality(self) -> int:
        """Number of entries of each codebook."""

    @property
    def is_continuous(self) -> bool:
        """True when the quantizer passes latents through instead of producing codes."""
        return False


class LevelledQuantizer(BaseQuantizer):
    """Bookkeeping shared by quantizers with `n_q` levels of :attr:`cardinality` codes over latents
    [B, dimension, T]: which codebooks are used, the bandwidth of one, and the input check.

    Subclasses set :attr:`cardinality`; those with several codebooks per level (grouped) override
    :attr:`total_codebooks` and :meth:`set_num_codebooks`.
    """

    def __init__(self, dimension: int, n_q: int):
        super().__init__()
        self.dimension = dimension
        self.n_q = n_q
        self._num_codebooks = n_q

    @property
    def total_codebooks(self) -> int:
        return self.n_q

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    def set_num_codebooks(self, n: int) -> None:
        if not 1 <= n <= self.n_q:
            raise ValueError(f"num_codebooks must be in [1, {self.n_q}] (n_q), got {n}.")
        self._num_codebooks = int(n)

    def bandwidth_per_codebook(self, frame_rate: float) -> float:
        """kbps spent by one codebook at `frame_rate` frames per second."""
        return math.log2(self.cardinality) * frame_rate / 1000

    def _check_latents(self, x: torch.Tensor) -> None:
        assert x.dim() == 3 and x.shape[1] == self.dimension, \
            f"expected latents [B, {self.dimension}, T], got shape {tuple(x.shape)}"


class DummyQuantizer(BaseQuantizer):
    """Identity "quantizer" for continuous latents: encode/decode pass [B, D, T] through unchanged.

    `codes` in its results are empty ([B, 0, T]); the bandwidth is that of float32 latents.
    """

    def forward(self, x: torch.Tensor, frame_rate: float) -> QuantizedResult:
        assert x.dim() == 3, f"expected latents [B, D, T], got shape {tuple(x.shape)}"
        codes = torch.empty(x.shape[0], 0, x.shape[-1], dtype=torch.long, device=x.device)
        bandwidth = torch.tensor(x.shape[1] * 32 * frame_rate / 1000, device=x.device)
        return QuantizedResult(x, codes, bandwidth, penalty=None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous latents: returns `x` [B, D, T] itself."""
        return x

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Continuous latents: returns its input [B, D, T] itself."""
        return codes

    @property
    def total_codebooks(self) -> int:
        return 0

    @property
    def num_codebooks(self) -> int:
        return 0

    def set_num_codebooks(self, n: int) -> None:
        raise ValueError("DummyQuantizer passes continuous latents through and has no codebooks to select.")

    @property
    def cardinality(self) -> int:
        return 0

    @property
    def is_continuous(self) -> bool:
        return True
