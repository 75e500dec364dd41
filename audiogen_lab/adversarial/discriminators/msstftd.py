"""Multi-scale STFT discriminator (EnCodec): 2D convolutions over complex spectrograms at several resolutions."""
from __future__ import annotations

import typing as tp

import torch
import torchaudio
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .base import FeatureMapType, LogitsType, MultiDiscriminator, MultiDiscriminatorOutputType


def _same_padding(kernel_size: tp.Tuple[int, int], dilation: tp.Tuple[int, int] = (1, 1)) -> tp.Tuple[int, int]:
    return ((kernel_size[0] - 1) * dilation[0] // 2, (kernel_size[1] - 1) * dilation[1] // 2)


class DiscriminatorSTFT(nn.Module):
    """One STFT-resolution discriminator.

    The complex STFT of each input channel is split into real and imaginary channels, laid out as an
    image `[B, 2*C, frames, freqs]`, and passed through weight-normalized 2D convolutions: a first
    convolution, then one per entry of `dilations` (dilated over time, strided by `stride` over
    frequency), a last convolution and a projection to `out_channels` logits.

    Args:
        filters: channels of the first convolution.
        in_channels: audio channels C.
        out_channels: logit channels.
        n_fft, hop_length, win_length: STFT parameters (Hann window, centred frames, reflect padding).
        max_filters: cap on the number of channels.
        filters_scale: channel growth factor per dilated convolution.
        kernel_size: `(time, freq)` kernel of the convolutions.
        dilations: time dilation of each strided convolution.
        stride: `(time, freq)` stride of the dilated convolutions.
        normalized: normalize the STFT by the window norm.
        negative_slope: slope of the LeakyReLU activations.

    `forward(x [B, C, T]) -> (logits [B, out_channels, frames, freqs'], fmaps)`; the STFT is in fp32.
    """

    def __init__(self, filters: int, in_channels: int = 1, out_channels: int = 1, n_fft: int = 1024,
                 hop_length: int = 256, win_length: int = 1024, max_filters: int = 1024, filters_scale: int = 1,
                 kernel_size: tp.Tuple[int, int] = (3, 9), dilations: tp.Sequence[int] = (1, 2, 4),
                 stride: tp.Tuple[int, int] = (1, 2), normalized: bool = True, negative_slope: float = 0.2) -> None:
        super().__init__()
        assert win_length <= n_fft, f"win_length ({win_length}) must not exceed n_fft ({n_fft})."
        self.in_channels = in_channels
        self.n_fft = n_fft
        self.spec_transform = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, hop_length=hop_length, win_length=win_length, window_fn=torch.hann_window,
            normalized=normalized, center=True, pad_mode="reflect", power=None)
        self.activation = nn.LeakyReLU(negative_slope)
        channels = min(filters, max_filters)
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(
            2 * in_channels, channels, kernel_size=kernel_size, padding=_same_padding(kernel_size)))])
        for i, dilation in enumerate(dilations):
            out = min(filters_scale ** (i + 1) * filters, max_filters)
            self.convs.append(weight_norm(nn.Conv2d(
                channels, out, kernel_size=kernel_size, stride=stride, dilation=(dilation, 1),
                padding=_same_padding(kernel_size, (dilation, 1)))))
            channels = out
        last_kernel = (kernel_size[0], kernel_size[0])
        self.convs.append(weight_norm(nn.Conv2d(
            channels, channels, kernel_size=last_kernel, padding=_same_padding(last_kernel))))
        self.conv_post = weight_norm(nn.Conv2d(
            channels, out_channels, kernel_size=last_kernel, padding=_same_padding(last_kernel)))

    def forward(self, x: torch.Tensor) -> tp.Tuple[LogitsType, FeatureMapType]:
        assert x.dim() == 3 and x.shape[1] == self.in_channels, (
            f"Expected a waveform [B, {self.in_channels}, T], got shape {tuple(x.shape)}.")
        if x.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"Audio of {x.shape[-1]} samples is too short for the STFT discriminator with "
                             f"n_fft={self.n_fft}: use segments longer than {self.n_fft // 2} samples.")
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = self.spec_transform(x.float())  # [B, C, F, frames], complex
            z = rearrange(torch.view_as_real(spec), "b c f t r -> b (c r) t f")
        fmaps: FeatureMapType = []
        for conv in self.convs:
            z = self.activation(conv(z))
            fmaps.append(z)
        return self.conv_post(z), fmaps


class MultiScaleSTFTDiscriminator(MultiDiscriminator):
    """One :class:`DiscriminatorSTFT` per STFT resolution (`n_ffts[i]`, `hop_lengths[i]`, `win_lengths[i]`).

    Extra keyword arguments (`max_filters`, `filters_scale`, `kernel_size`, `dilations`, `stride`,
    `normalized`, `negative_slope`) are passed to every sub-discriminator.
    `forward(x [B, C, T])` returns one logits tensor and one list of feature maps per resolution.
    """

    def __init__(self, filters: int = 32, in_channels: int = 1, out_channels: int = 1,
                 n_ffts: tp.Sequence[int] = (1024, 2048, 512, 256, 128),
                 hop_lengths: tp.Sequence[int] = (256, 512, 128, 64, 32),
                 win_lengths: tp.Sequence[int] = (1024, 2048, 512, 256, 128), **kwargs: tp.Any) -> None:
        super().__init__()
        assert len(n_ffts) == len(hop_lengths) == len(win_lengths), (
            f"n_ffts, hop_lengths and win_lengths need one entry per scale, got lengths "
            f"{len(n_ffts)}, {len(hop_lengths)}, {len(win_lengths)}.")
        self.discriminators = nn.ModuleList([
            DiscriminatorSTFT(filters, in_channels=in_channels, out_channels=out_channels, n_fft=n_fft,
                              hop_length=hop, win_length=win, **kwargs)
            for n_fft, hop, win in zip(n_ffts, hop_lengths, win_lengths)])

    @property
    def num_discriminators(self) -> int:
        return len(self.discriminators)

    def forward(self, x: torch.Tensor) -> MultiDiscriminatorOutputType:
        return self.run_each(x)
