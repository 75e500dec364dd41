"""Multi-scale waveform discriminator (MelGAN, HiFi-GAN): strided grouped 1D convolutions over the
waveform at several average-pooled resolutions."""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import (FeatureMapType, LogitsType, MultiDiscriminator, MultiDiscriminatorOutputType, float32_weights,
                   normalized_conv)


class ScaleDiscriminator(nn.Module):
    """One waveform discriminator: a wide first convolution, one strided grouped convolution per entry of
    `strides`, a last convolution and a projection to logits, all 1D, with LeakyReLU activations.

    Args:
        in_channels: audio channels C.
        out_channels: logit channels.
        filters: channels of the first convolution.
        max_filters: cap on the number of channels.
        filters_scale: channel growth of the grouped convolutions: the i-th has
            `min(filters * filters_scale ** i, max_filters)` output channels.
        first_kernel_size, kernel_size, last_kernel_size: kernels (odd) of the first, the grouped and the
            last convolution; the projection has kernel 3.
        strides: stride of each grouped convolution.
        groups: groups of each grouped convolution, or one number for all; a group count must divide
            the convolution's input and output channels.
        norm: weight reparametrization of every convolution, 'weight_norm' or 'spectral_norm'.
        negative_slope: slope of the LeakyReLU activations.

    `forward(x [B, C, T]) -> (logits [B, out_channels, ceil(T / prod(strides))], fmaps)`, with one
    feature map `[B, channels, frames]` per convolution before the projection.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, filters: int = 128, max_filters: int = 1024,
                 filters_scale: int = 2, first_kernel_size: int = 15, kernel_size: int = 41,
                 last_kernel_size: int = 5, strides: tp.Sequence[int] = (2, 2, 4, 4, 1),
                 groups: tp.Union[int, tp.Sequence[int]] = (4, 16, 16, 16, 16), norm: str = "weight_norm",
                 negative_slope: float = 0.1) -> None:
        super().__init__()
        for name, size in [("first_kernel_size", first_kernel_size), ("kernel_size", kernel_size),
                           ("last_kernel_size", last_kernel_size)]:
            assert size % 2 == 1, f"{name}={size}: use an odd kernel so that the convolutions are centred."
        groups = [groups] * len(strides) if isinstance(groups, int) else list(groups)
        assert len(groups) == len(strides), (
            f"groups needs one entry per stride: got {len(groups)} groups for {len(strides)} strides.")
        self.in_channels = in_channels
        self.activation = nn.LeakyReLU(negative_slope)
        channels = min(filters, max_filters)
        self.convs = nn.ModuleList([normalized_conv(nn.Conv1d(
            in_channels, channels, first_kernel_size, padding=first_kernel_size // 2), norm)])
        for i, (stride, group) in enumerate(zip(strides, groups)):
            out = min(filters * filters_scale ** i, max_filters)
            assert channels % group == 0 and out % group == 0, (
                f"groups[{i}]={group} must divide the channels of grouped convolution {i} ({channels} in, "
                f"{out} out): change groups or filters.")
            self.convs.append(normalized_conv(nn.Conv1d(
                channels, out, kernel_size, stride=stride, groups=group, padding=kernel_size // 2), norm))
            channels = out
        self.convs.append(normalized_conv(nn.Conv1d(
            channels, channels, last_kernel_size, padding=last_kernel_size // 2), norm))
        self.conv_post = normalized_conv(nn.Conv1d(channels, out_channels, 3, padding=1), norm)

    def forward(self, x: torch.Tensor) -> tp.Tuple[LogitsType, FeatureMapType]:
        assert x.dim() == 3 and x.shape[1] == self.in_channels, (
            f"Expected a waveform [B, {self.in_channels}, T], got shape {tuple(x.shape)}.")
        fmaps: FeatureMapType = []
        with float32_weights([*self.convs, self.conv_post], x.device.type):
            for conv in self.convs:
                x = self.activation(conv(x))
                fmaps.append(x)
            return self.conv_post(x), fmaps


class MultiScaleDiscriminator(MultiDiscriminator):
    """`scales` :class:`ScaleDiscriminator` on the waveform average-pooled 0, 1, 2, ... times
    (downsampled by 1, `pool_stride`, `pool_stride ** 2`, ...).

    Each pooling has kernel `pool_kernel_size`, stride `pool_stride` and `(pool_kernel_size - pool_stride) // 2`
    samples of padding that do not count in the averages. The first scale, which sees the raw waveform,
    is normalized by `first_scale_norm` (HiFi-GAN: spectral norm), the others by `norm`. Extra keyword
    arguments (`filters`, `max_filters`, `filters_scale`, `first_kernel_size`, `kernel_size`,
    `last_kernel_size`, `strides`, `groups`, `negative_slope`) are passed to every sub-discriminator.

    `forward(x [B, C, T])` returns one logits tensor `[B, out_channels, frames]` and one list of feature
    maps per scale; the input is cast to the parameters' dtype (float32), so low-precision audio works
    with or without autocast.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, scales: int = 3, pool_kernel_size: int = 4,
                 pool_stride: int = 2, norm: str = "weight_norm", first_scale_norm: str = "spectral_norm",
                 **kwargs: tp.Any) -> None:
        super().__init__()
        assert scales >= 1, f"scales={scales}: need at least one scale."
        assert pool_kernel_size >= pool_stride >= 1, (
            f"pool_kernel_size={pool_kernel_size}, pool_stride={pool_stride}: need kernel >= stride >= 1.")
        self.pool_kernel_size = pool_kernel_size
        self.pool_stride = pool_stride
        self.pool_padding = (pool_kernel_size - pool_stride) // 2
        self.discriminators = nn.ModuleList([
            ScaleDiscriminator(in_channels, out_channels, norm=first_scale_norm if scale == 0 else norm, **kwargs)
            for scale in range(scales)])
        self.min_length = self._min_length()

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    def _pooled_length(self, length: int) -> int:
        return math.floor((length + 2 * self.pool_padding - self.pool_kernel_size) / self.pool_stride) + 1

    def _min_length(self) -> int:
        """Shortest input for which every pooled waveform keeps at least one sample."""
        length = 1
        while True:
            current = length
            for _ in range(self.num_discriminators - 1):
                current = self._pooled_length(current)
                if current < 1:
                    break
            if current >= 1:
                return length
            length += 1

    def forward(self, x: torch.Tensor) -> MultiDiscriminatorOutputType:
        if x.shape[-1] < self.min_length:
            raise ValueError(f"Audio of {x.shape[-1]} samples is too short for the multi-scale discriminator with "
                             f"{self.num_discriminators} scales: use at least {self.min_length} samples.")
        x = x.to(next(self.parameters()).dtype)
        logits, fmaps = [], []
        for scale, disc in enumerate(self.discriminators):
            if scale > 0:
                x = F.avg_pool1d(x, self.pool_kernel_size, self.pool_stride, padding=self.pool_padding,
                                 count_include_pad=False)
            logit, fmap = disc(x)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps
