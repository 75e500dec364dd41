"""1-D convolutions rewritten for the shapes where oneDNN's CPU kernels are slow.

Waveform codecs run their outer convolutions at the full sample rate with few channels, where oneDNN
reaches a fraction of the speed it has elsewhere. Three rewrites compute the same values (up to float
rounding, gradients included) faster there:

- kernel 1: ``y = W x + b`` with ``W [C_out, C_in]``, a single ``baddbmm``;
- few outputs (``C_out * K <= C_in``, e.g. a decoder's last layer): every tap's output at every input
  position, ``z = W' x`` with ``W' [C_out * K, C_in]`` (one product that reads `x` once where the
  convolution reads it K times), then output frame `t` sums tap `k` at position ``t + k * dilation``,
  a skewed view of the small `z`;
- stride `s` with a kernel, padding and length that are multiples of `s`: the input's `s` phases
  become channels, ``[B, C, T] -> [B, C * s, T / s]``, and the convolution runs with stride 1 and
  ``K / s`` taps on them.

:func:`conv1d` picks them on CPU only (CUDA's kernels are fine for these shapes) and calls ``F.conv1d``
otherwise. Measured side by side on a 2-core AVX-512 CPU, forward and backward of EnCodec's layers at
24 kHz, batch 8 x 1 s: the 32-channel 1x1 convolution 0.35x, the 32 -> 1 output convolution 0.2x,
the causal strided ones 0.7-1.0x (the fewer the channels, the larger the gain) the time of
``F.conv1d``.
"""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange
from torch.nn import functional as F


def pointwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: tp.Optional[torch.Tensor]) -> torch.Tensor:
    """Kernel-1 convolution. x [B, C_in, T], weight [C_out, C_in, 1], bias [C_out] -> [B, C_out, T]."""
    batch, _, length = x.shape
    out_channels = weight.shape[0]
    matrix = weight[..., 0].expand(batch, -1, -1)
    if bias is None:
        return torch.bmm(matrix, x)
    return torch.baddbmm(bias[None, :, None].expand(batch, out_channels, length), matrix, x)


def few_outputs_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: tp.Optional[torch.Tensor],
                       padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """Stride-1 convolution with zero `padding` on both sides, through one product per tap.

    x [B, C_in, T], weight [C_out, C_in, K], bias [C_out] -> [B, C_out, T + 2 * padding - dilation * (K - 1)].
    """
    batch, in_channels, length = x.shape
    out_channels, _, kernel = weight.shape
    frames = length + 2 * padding - dilation * (kernel - 1)
    assert frames > 0, f"input of {length} samples is shorter than the kernel's span {dilation * (kernel - 1) + 1}"
    taps = weight.permute(0, 2, 1).reshape(1, out_channels * kernel, in_channels)
    z = torch.bmm(taps.expand(batch, -1, -1), x)  # [B, C_out * K, T]: tap k of output o at every position
    z = F.pad(z, (padding, padding)).view(batch * out_channels, kernel, length + 2 * padding)
    width = z.shape[-1]
    # skew: in rows of width + dilation, row k starts k * dilation samples further into the padded z
    skewed = F.pad(z.reshape(-1, kernel * width), (0, kernel * dilation)).view(-1, kernel, width + dilation)
    y = skewed[..., :frames].sum(1).view(batch, out_channels, frames)
    if bias is not None:
        y = y + bias[None, :, None]
    return y


def phase_strided_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: tp.Optional[torch.Tensor], stride: int,
                         padding: int = 0) -> torch.Tensor:
    """Strided convolution run on the input's phases; `kernel`, `padding` and the length are multiples of
    `stride`. x [B, C_in, T], weight [C_out, C_in, K] -> [B, C_out, (T + 2 * padding - K) / stride + 1]."""
    length, kernel = x.shape[-1], weight.shape[-1]
    assert kernel % stride == 0 and padding % stride == 0 and length % stride == 0, \
        f"kernel {kernel}, padding {padding} and length {length} must be multiples of the stride {stride}"
    phases = rearrange(x, 'b c (n s) -> b (c s) n', s=stride)
    taps = rearrange(weight, 'o c (k s) -> o (c s) k', s=stride)
    return F.conv1d(phases, taps, bias, 1, padding // stride)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: tp.Optional[torch.Tensor] = None, stride: int = 1,
           padding: int = 0, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """``F.conv1d`` with integer zero padding, through the rewrites above where they apply on CPU.
    x [B, C_in, T] -> [B, C_out, T']."""
    if x.device.type == 'cpu' and x.dim() == 3 and groups == 1:
        out_channels, in_channels, kernel = weight.shape
        if stride == 1 and kernel == 1 and padding == 0:
            return pointwise_conv1d(x, weight, bias)
        if stride == 1 and out_channels * kernel <= in_channels:
            return few_outputs_conv1d(x, weight, bias, padding, dilation)
        if stride > 1 and dilation == 1 and not (kernel % stride or padding % stride or x.shape[-1] % stride):
            return phase_strided_conv1d(x, weight, bias, stride, padding)
    return F.conv1d(x, weight, bias, stride, padding, dilation, groups)


def module_conv1d(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` through :func:`conv1d` for a zero-padded ``nn.Conv1d`` (weight parametrisations
    apply); other padding modes and string paddings go through the module itself. [B, C_in, T]."""
    if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
        return conv(x)
    return conv1d(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], conv.dilation[0], conv.groups)
