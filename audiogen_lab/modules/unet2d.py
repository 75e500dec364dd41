"""Building blocks of 2-D U-Nets over spectrogram-like maps [B, C, F, T] (frequency x time).

- :func:`group_norm`: GroupNorm with at most 32 groups that always divides the channels.
- :class:`NoiseEmbedding`: a scalar noise level per example [B] -> conditioning vector [B, E].
- :class:`ResBlock`: pre-norm residual block (GroupNorm, SiLU, conv) in 1-D or 2-D, optionally
  modulated by the noise embedding (scale and shift after its second normalisation).
- :class:`FrequencyAttention`: multi-head self-attention along the frequency axis, one sequence per
  time frame, so its cost is linear in the number of frames.
- :class:`Downsample2d` / :class:`Upsample2d`: strided conv / transposed conv with a separate factor
  for frequency and time.
- :class:`FrequencyScaling`: a per-channel, per-frequency-bin gain computed from the noise embedding.
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm over `channels` with ``gcd(max_groups, channels)`` groups (32 for the usual widths)."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


class NoiseEmbedding(nn.Module):
    """Noise-level embedding c_noise [B] -> [B, dim]: sinusoidal or random Fourier features, then an MLP.

    Args:
        dim: output width `E` (also the MLP width).
        features: number of sinusoidal / Fourier features (even).
        kind: ``'sinusoidal'`` (geometric frequencies from 1 to ``1 / max_period``) or ``'fourier'``
            (fixed Gaussian frequencies of standard deviation `fourier_scale`).
        fourier_scale: standard deviation of the Fourier frequencies.
        max_period: longest period of the sinusoidal features.
    """

    def __init__(self, dim: int, features: int = 256, kind: str = 'sinusoidal', fourier_scale: float = 16.0,
                 max_period: float = 10000.0):
        super().__init__()
        assert features % 2 == 0 and features >= 2, f"features must be even and >= 2, got {features}"
        half = features // 2
        if kind == 'sinusoidal':
            freqs = torch.exp(-math.log(max_period) * torch.arange(half) / max(half - 1, 1))
        elif kind == 'fourier':
            freqs = 2 * math.pi * fourier_scale * torch.randn(half)
        else:
            raise ValueError(f"Unknown noise embedding kind {kind!r}: use 'sinusoidal' or 'fourier'.")
        self.register_buffer('freqs', freqs, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """c_noise [B] (or a scalar) -> embedding [B, dim]."""
        c_noise = c_noise.reshape(-1).to(self.freqs.dtype)
        angles = c_noise[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class ResBlock(nn.Module):
    """Residual block [B, C_in, *S] -> [B, C_out, *S] with S = (F, T) (dims=2) or (T,) (dims=1).

    ``out = skip(x) + conv2(SiLU(mod(GN(conv1(SiLU(GN(x)))), emb)))`` where ``mod`` is
    ``h * (1 + scale) + shift`` with (scale, shift) a linear map of the embedding [B, E] when `emb_dim`
    is given, the identity otherwise; `skip` is a 1x1 conv when the widths differ.

    Args:
        in_channels, out_channels: widths.
        emb_dim: width `E` of the conditioning vector, or None for an unconditioned block.
        dims: 1 or 2 (Conv1d / Conv2d).
        kernel_size: odd kernel of both convolutions.
        max_groups: GroupNorm groups cap.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: tp.Optional[int] = None, dims: int = 2,
                 kernel_size: int = 3, max_groups: int = 32):
        super().__init__()
        assert dims in (1, 2), f"dims must be 1 or 2, got {dims}"
        assert kernel_size % 2 == 1, f"kernel_size must be odd to keep the size, got {kernel_size}"
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.dims = dims
        self.norm1 = group_norm(in_channels, max_groups)
        self.conv1 = conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = group_norm(out_channels, max_groups)
        self.conv2 = conv(out_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels) if emb_dim is not None else None
        self.skip: nn.Module = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """x [B, C_in, *S], emb [B, E] (required iff the block was built with `emb_dim`) -> [B, C_out, *S]."""
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.emb_proj is not None:
            assert emb is not None, "this block is conditioned: pass the noise embedding emb [B, E]"
            scale, shift = self.emb_proj(emb)[(...,) + (None,) * self.dims].chunk(2, dim=1)
            h = torch.addcmul(shift, h, scale + 1)
        return self.skip(x) + self.conv2(F.silu(h))


class FrequencyAttention(nn.Module):
    """Pre-norm multi-head self-attention along frequency, [B, C, F, T] -> [B, C, F, T] (residual).

    Every time frame is an independent sequence of `F` tokens of width `C`; there is no positional
    encoding (the convolutions around it already locate each bin). The output projection starts at
    zero, so a fresh block is the identity.
    """

    def __init__(self, channels: int, heads: int = 4, max_groups: int = 32):
        super().__init__()
        assert channels % heads == 0, f"heads ({heads}) must divide the channels ({channels})"
        self.heads = heads
        self.norm = group_norm(channels, max_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, F, T] -> [B, C, F, T]."""
        frames = x.shape[-1]
        tokens = rearrange(self.norm(x), 'b c f t -> (b t) f c')
        q, k, v = rearrange(self.qkv(tokens), 'n f (k h d) -> k n h f d', k=3, h=self.heads)
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), 'n h f d -> n f (h d)')
        return x + rearrange(self.out(attended), '(b t) f c -> b c f t', t=frames)


def _resampling_kernel(factor: int) -> int:
    """Odd kernel covering a stride of `factor`: 1 for no resampling, 3 for 2 and 3, 5 for 4..."""
    return 2 * (factor // 2) + 1


class Downsample2d(nn.Module):
    """Strided conv [B, C_in, F, T] -> [B, C_out, F / f, T / t] for ``factor = (f, t)``, after a GroupNorm.

    F and T must be multiples of f and t (checked by the caller that plans the levels).
    """

    def __init__(self, in_channels: int, out_channels: int, factor: tp.Tuple[int, int] = (2, 2),
                 max_groups: int = 32):
        super().__init__()
        assert all(int(f) >= 1 for f in factor), f"downsampling factors must be >= 1, got {factor}"
        self.factor = (int(factor[0]), int(factor[1]))
        kernel = tuple(_resampling_kernel(f) for f in self.factor)
        self.norm = group_norm(in_channels, max_groups)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=self.factor,
                              padding=tuple(f // 2 for f in self.factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, F, T] -> [B, C_out, F / f, T / t]."""
        return self.conv(self.norm(x))


class Upsample2d(nn.Module):
    """Transposed conv with kernel = stride = ``factor = (f, t)``, [B, C_in, F, T] -> [B, C_out, F * f, T * t].

    Each input cell is expanded into its own f x t block of outputs: ``C_in * C_out`` multiply-adds per
    output cell, 9 to 5 times fewer than nearest interpolation followed by a 3x3 (or 5x1) conv, and the
    residual blocks that follow provide the spatial context.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: tp.Tuple[int, int] = (2, 2)):
        super().__init__()
        assert all(int(f) >= 1 for f in factor), f"upsampling factors must be >= 1, got {factor}"
        self.factor = (int(factor[0]), int(factor[1]))
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, self.factor, stride=self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, F, T] -> [B, C_out, F * f, T * t]."""
        return self.conv(x)


class FrequencyScaling(nn.Module):
    """Noise-conditioned gain per channel and frequency bin: ``x * (1 + S)`` with S [B, C, F, 1].

    ``S = sum_r u_r v_r^T / rank`` is a rank-`rank` product of a per-channel map u_r [B, C] and a
    per-bin map v_r [B, F], both linear in the noise embedding; this keeps the layer small at full
    resolution (``E * rank * (C + F)`` weights instead of ``E * C * F``). The frequency map starts at
    zero, so a fresh layer is the identity and still receives gradients.

    Args:
        emb_dim: width `E` of the noise embedding.
        channels, freq_bins: the `C` and `F` of the maps it scales.
        rank: rank of the scale map.
    """

    def __init__(self, emb_dim: int, channels: int, freq_bins: int, rank: int = 1):
        super().__init__()
        assert rank >= 1, f"rank must be >= 1, got {rank}"
        self.rank = rank
        self.to_channels = nn.Linear(emb_dim, rank * channels)
        self.to_bins = nn.Linear(emb_dim, rank * freq_bins)
        nn.init.zeros_(self.to_bins.weight)
        nn.init.zeros_(self.to_bins.bias)

    def scale(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, E] -> scale map S [B, C, F]."""
        u = rearrange(self.to_channels(emb), 'b (r c) -> b r c', r=self.rank)
        v = rearrange(self.to_bins(emb), 'b (r f) -> b r f', r=self.rank)
        return torch.einsum('brc,brf->bcf', u, v) / self.rank

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x [B, C, F, T], emb [B, E] -> [B, C, F, T]."""
        return x * (1 + self.scale(emb)[..., None])
