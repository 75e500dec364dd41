"""SoundStream's convolutional encoder and decoder (Zeghidour et al., 2021), with an optional local
transformer at the bottleneck.

SoundStream's blocks are SEANet blocks with other sizes: per resolution three residual units with
dilations 1, 3, 9 (``dilation_base ** j``), a 7-tap dilated convolution then a 1x1 one at full width
(``compress=1``), identity shortcuts, ELU, a strided convolution of kernel ``2 * stride`` doubling the
channels, causal padding, and a 3-tap projection to the latent dimension. They are built with
:class:`~audiogen_lab.modules.seanet.SEANetEncoder` / ``SEANetDecoder`` so that both codecs share one
implementation of streamable convolutions.
"""
from __future__ import annotations

import typing as tp

import torch
from torch import nn

from .seanet import SEANetDecoder, SEANetEncoder
from .transformer import LocalTransformer

# SEANet arguments that define SoundStream's blocks (the paper's values); every one can be overridden.
SOUNDSTREAM_BLOCKS: tp.Dict[str, tp.Any] = dict(
    n_residual_layers=3, dilation_base=3, residual_kernel_size=7, kernel_size=7, last_kernel_size=3,
    compress=1, true_skip=True, lstm=0, activation="ELU", norm="weight_norm", causal=True, pad_mode="constant")


def _bottleneck(dimension: int, transformer: tp.Optional[tp.Dict[str, tp.Any]], causal: bool) -> tp.Optional[nn.Module]:
    """A :class:`LocalTransformer` on the latents when ``transformer['num_layers'] > 0``, else None."""
    kwargs = dict(transformer or {})
    if not kwargs.get("num_layers"):
        return None
    kwargs.setdefault("causal", causal)
    return LocalTransformer(dimension, **kwargs)


class SoundStreamEncoder(nn.Module):
    """Audio [B, channels, T] -> latents [B, dimension, ceil(T / hop)], hop = prod(ratios).

    Args:
        channels, dimension, n_filters, ratios: as :class:`SEANetEncoder` (`ratios` in up-sampling order,
            e.g. ``[8, 5, 4, 2]``: the encoder downsamples by 2, 4, 5, 8).
        transformer: keyword arguments of a :class:`LocalTransformer` after the convolutions
            (``num_layers: 0`` or None for none); it is causal when the convolutions are.
        **blocks: SEANet arguments overriding :data:`SOUNDSTREAM_BLOCKS`.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 ratios: tp.Sequence[int] = (8, 5, 4, 2),
                 transformer: tp.Optional[tp.Dict[str, tp.Any]] = None, **blocks: tp.Any):
        super().__init__()
        kwargs = {**SOUNDSTREAM_BLOCKS, **blocks}
        self.convs = SEANetEncoder(channels=channels, dimension=dimension, n_filters=n_filters, ratios=ratios,
                                   **kwargs)
        self.transformer = _bottleneck(dimension, transformer, kwargs["causal"])
        self.channels, self.dimension, self.hop_length = channels, dimension, self.convs.hop_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.convs(x)
        return z if self.transformer is None else self.transformer(z)  # residual inside its layers


class SoundStreamDecoder(nn.Module):
    """Latents [B, dimension, T'] -> audio [B, channels, T' * hop]: the mirror of
    :class:`SoundStreamEncoder` (its transformer, if any, comes first)."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 ratios: tp.Sequence[int] = (8, 5, 4, 2),
                 transformer: tp.Optional[tp.Dict[str, tp.Any]] = None, **blocks: tp.Any):
        super().__init__()
        kwargs = {**SOUNDSTREAM_BLOCKS, **blocks}
        self.transformer = _bottleneck(dimension, transformer, kwargs["causal"])
        self.convs = SEANetDecoder(channels=channels, dimension=dimension, n_filters=n_filters, ratios=ratios,
                                   **kwargs)
        self.channels, self.dimension, self.hop_length = channels, dimension, self.convs.hop_length

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.transformer is not None:
            z = self.transformer(z)
        return self.convs(z)
