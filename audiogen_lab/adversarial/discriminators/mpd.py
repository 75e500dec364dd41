"""Multi-period discriminator (HiFi-GAN): 2D convolutions over the waveform folded into columns of
`period` samples, one sub-discriminator per period."""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .base import (FeatureMapType, LogitsType, MultiDiscriminator, MultiDiscriminatorOutputType, float32_weights,
                   normalized_conv)


class PeriodDiscriminator(nn.Module):
    """One period discriminator: the waveform `[B, C, T]` is reflect-padded to a multiple of `period` and
    folded into `[B, C, T / period, period]`, so that samples `period` apart share a column; 2D
    convolutions with kernels `(kernel_size, 1)` and strides `(stride, 1)` then run along the columns,
    each column independently, followed by a projection with kernel `(3, 1)`.

    Args:
        period: samples per row of the folded waveform.
        in_channels: audio channels C.
        out_channels: logit channels.
        filters: channels of the first convolution.
        max_filters: cap on the number of channels.
        filters_scale: channel growth: convolution i has `min(filters * filters_scale ** i, max_filters)`
            output channels.
        kernel_size: kernel (odd) of the convolutions along the columns.
        strides: one convolution per entry, with that stride along the columns.
        norm: weight reparametrization of every convolution, 'weight_norm' or 'spectral_norm'.
        negative_slope: slope of the LeakyReLU activations.

    `forward(x [B, C, T]) -> (logits [B, out_channels, ceil(ceil(T / period) / prod(strides)), period], fmaps)`,
    with one feature map `[B, channels, rows, period]` per convolution before the projection.
    """

    def __init__(self, period: int, in_channels: int = 1, out_channels: int = 1, filters: int = 32,
                 max_filters: int = 1024, filters_scale: int = 4, kernel_size: int = 5,
                 strides: tp.Sequence[int] = (3, 3, 3, 3, 1), norm: str = "weight_norm",
                 negative_slope: float = 0.1) -> None:
        super().__init__()
        assert period >= 1, f"period={period}: need a positive period."
        assert kernel_size % 2 == 1, (
            f"kernel_size={kernel_size}: use an odd kernel so that the convolutions are centred.")
        assert len(strides) >= 1, "strides is empty: the period discriminator needs at least one convolution."
        self.period = period
        self.in_channels = in_channels
        self.activation = nn.LeakyReLU(negative_slope)
        channels = in_channels
        self.convs = nn.ModuleList()
        for i, stride in enumerate(strides):
            out = min(filters * filters_scale ** i, max_filters)
            self.convs.append(normalized_conv(nn.Conv2d(
                channels, out, (kernel_size, 1), stride=(stride, 1), padding=(kernel_size // 2, 0)), norm))
            channels = out
        self.conv_post = normalized_conv(nn.Conv2d(channels, out_channels, (3, 1), padding=(1, 0)), norm)

    def forward(self, x: torch.Tensor) -> tp.Tuple[LogitsType, FeatureMapType]:
        assert x.dim() == 3 and x.shape[1] == self.in_channels, (
            f"Expected a waveform [B, {self.in_channels}, T], got shape {tuple(x.shape)}.")
        length = x.shape[-1]
        if length < self.period:
            raise ValueError(f"Audio of {length} samples is too short for the period discriminator with "
                             f"period {self.period}: use at least {self.period} samples.")
        pad = -length % self.period
        if pad:
            x = F.pad(x, (0, pad), mode="reflect")
        z = rearrange(x, "b c (t p) -> b c t p", p=self.period)
        fmaps: FeatureMapType = []
        with float32_weights([*self.convs, self.conv_post], x.device.type):
            for conv in self.convs:
                z = self.activation(conv(z))
                fmaps.append(z)
            return self.conv_post(z), fmaps


class MultiPeriodDiscriminator(MultiDiscriminator):
    """One :class:`PeriodDiscriminator` per entry of `periods` (HiFi-GAN: the primes 2, 3, 5, 7, 11, so
    that the periods share few common multiples).

    Extra keyword arguments (`filters`, `max_filters`, `filters_scale`, `kernel_size`, `strides`, `norm`,
    `negative_slope`) are passed to every sub-discriminator.
    `forward(x [B, C, T])` returns one logits tensor `[B, out_channels, rows, period]` and one list of
    feature maps per period; the input is cast to the parameters' dtype (float32), so low-precision audio
    works with or without autocast.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 periods: tp.Sequence[int] = (2, 3, 5, 7, 11), **kwargs: tp.Any) -> None:
        super().__init__()
        assert len(periods) >= 1, "periods is empty: give at least one period."
        self.discriminators = nn.ModuleList([
            PeriodDiscriminator(period, in_channels, out_channels, **kwargs) for period in periods])

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    def forward(self, x: torch.Tensor) -> MultiDiscriminatorOutputType:
        x = x.to(next(self.parameters()).dtype)
        return self.run_each(x)
