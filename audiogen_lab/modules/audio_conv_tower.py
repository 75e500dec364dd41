"""Convolutional audio tower: a residual 2-D CNN over the log-mel spectrogram, pooled into one vector per clip.

The alternative to the spectrogram transformer. Activations past each clip's valid frames are zeroed after
every convolution (at that block's time resolution), so padding never leaks into valid positions and a
clip padded into a batch embeds as it does on its own.
"""
from __future__ import annotations

import typing as tp

import torch
from einops import reduce
from torch import nn

from ..data.batch import lengths_to_mask


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of ``[B, C, F, T]`` at every position (no statistics across time)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class ConvBlock(nn.Module):
    """Stride-2 downsampling conv, then a residual pair of 3x3 convs: ``[B, C_in, F, T] -> [B, C_out, F/2, T/2]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm1 = ChannelNorm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = ChannelNorm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        frames = torch.div(frames + 1, 2, rounding_mode="floor")
        keep = lengths_to_mask(frames, (x.shape[-1] + 1) // 2)[:, None, None, :].to(x.dtype)
        x = self.down(x) * keep
        y = self.conv1(self.act(self.norm1(x))) * keep
        y = self.conv2(self.act(self.norm2(y))) * keep
        return x + y, frames


class ConvAudioTower(nn.Module):
    """Log-mel ``[B, n_mels, F]`` with frame lengths ``[B]`` -> clip embedding ``[B, dim]``.

    Args:
        n_mels: mel bands of the input.
        dim: output size.
        channels: channels of each block (each halves frequency and time).
    """

    def __init__(self, n_mels: int = 64, dim: int = 256, channels: tp.Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.n_mels, self.dim = n_mels, dim
        widths = [1, *channels]
        self.blocks = nn.ModuleList(ConvBlock(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.norm = nn.LayerNorm(widths[-1])
        self.proj = nn.Linear(widths[-1], dim)

    @property
    def time_stride(self) -> int:
        """Spectrogram frames per output frame of :meth:`frame_features` (each block halves time)."""
        return 2 ** len(self.blocks)

    @property
    def frame_dim(self) -> int:
        """Channels of the output frames of :meth:`frame_features` (the last block's)."""
        return self.norm.normalized_shape[0]

    def feature_map(self, spec: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``[B, n_mels, F]`` with frame lengths ``[B]`` -> the last block's map ``[B, C, F', T']``
        (zero past each item's valid frames) and its valid frames ``[B]``; each block halves F and T (rounding up)."""
        if spec.dim() != 3 or spec.shape[1] != self.n_mels:
            raise ValueError(f"Expected a log-mel spectrogram [B, {self.n_mels}, F], got {tuple(spec.shape)}.")
        x = spec[:, None]
        for block in self.blocks:
            x, frames = block(x, frames)
        if not bool((frames > 0).all()):
            raise ValueError("An item has no valid frame: its audio is shorter than one spectrogram frame.")
        return x, frames

    def frame_features(self, spec: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """One vector per time step of :meth:`feature_map`, averaged over frequency: ``[B, T', C]``, and the
        valid steps ``[B]``."""
        x, frames = self.feature_map(spec, frames)
        return reduce(x, "b c f t -> b t c", "mean"), frames

    def forward(self, spec: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        x, frames = self.feature_map(spec, frames)
        valid = lengths_to_mask(frames, x.shape[-1]).to(x.dtype)  # [B, T']
        pooled = x.sum(dim=2).mul(valid[:, None]).sum(dim=-1) / (valid.sum(dim=-1, keepdim=True) * x.shape[2])
        return self.proj(self.norm(pooled))
