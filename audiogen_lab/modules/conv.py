"""Streamable 1d convolutions: padding that keeps frame alignment, causal option, conv normalisation.

A strided convolution over `T` samples gives ``ceil(T / stride)`` frames, and the matching transposed
convolution gives back ``frames * stride`` samples, so that an encoder/decoder pair built from these
layers maps a signal whose length is a multiple of the hop to itself. With ``causal=True`` all the
padding is on the left: output frame `i` only sees the input up to the end of its own frame,
``(i + 1) * stride - 1``.

Causal layers also stream (see :mod:`audiogen_lab.modules.streaming`): a convolution keeps the input
samples its next window still needs, a transposed convolution the overlap its last frames add to the
next ones.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from .cpu_conv import conv1d, module_conv1d
from .streaming import StreamingModule

CONV_NORMALIZATIONS = frozenset({'none', 'weight_norm', 'time_group_norm'})
PAD_MODES = frozenset({'constant', 'reflect', 'replicate', 'circular'})


def _check_norm(norm: str) -> None:
    if norm not in CONV_NORMALIZATIONS:
        raise ValueError(f"Unknown conv norm {norm!r}: choose one of {sorted(CONV_NORMALIZATIONS)}.")


def apply_parametrization_norm(module: nn.Module, norm: str = 'none') -> nn.Module:
    """Reparametrise the weight of `module` when `norm` is a weight parametrisation (``weight_norm``)."""
    _check_norm(norm)
    if norm == 'weight_norm':
        return weight_norm(module)
    return module


def get_norm_module(module: nn.Module, causal: bool = False, norm: str = 'none',
                    **norm_kwargs: tp.Any) -> nn.Module:
    """The normalisation applied to the output of `module`: GroupNorm(1, C) for ``time_group_norm``.

    ``time_group_norm`` normalises over the whole time axis, which is not causal, so it is refused
    when ``causal=True``.
    """
    _check_norm(norm)
    if norm == 'time_group_norm':
        if causal:
            raise ValueError("norm='time_group_norm' uses statistics over the whole time axis and cannot "
                             "be causal: use norm='weight_norm' or 'none' with causal=True.")
        assert isinstance(module, nn.modules.conv._ConvNd), "time_group_norm needs a convolution"
        return nn.GroupNorm(1, module.out_channels, **norm_kwargs)
    return nn.Identity()


def get_extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int = 0) -> int:
    """Right padding needed so that the last convolution window is complete.

    Without it the last input samples that do not fill a whole window would be dropped, and the
    transposed convolution could not rebuild a signal of the original length.
    """
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return max(0, ideal_length - length)


def pad1d(x: torch.Tensor, paddings: tp.Tuple[int, int], mode: str = 'constant',
          value: float = 0.) -> torch.Tensor:
    """``F.pad`` on the last axis of `x` [..., T] that also accepts reflect padding wider than `T`.

    Reflection needs ``T > padding``; shorter inputs are first extended with zeros on the right and
    the extension is removed after reflecting.
    """
    left, right = paddings
    assert left >= 0 and right >= 0, f"paddings must be non-negative, got {paddings}"
    if mode not in PAD_MODES:
        raise ValueError(f"Unknown pad mode {mode!r}: choose one of {sorted(PAD_MODES)}.")
    if mode == 'constant':
        return F.pad(x, (left, right), mode, value)
    length = x.shape[-1]
    extra = 0
    if mode == 'reflect' and length <= max(left, right):
        extra = max(left, right) - length + 1
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode)
    return padded[..., :padded.shape[-1] - extra]


def unpad1d(x: torch.Tensor, paddings: tp.Tuple[int, int]) -> torch.Tensor:
    """Remove `paddings` = (left, right) samples from the last axis of `x` [..., T]."""
    left, right = paddings
    assert left >= 0 and right >= 0, f"paddings must be non-negative, got {paddings}"
    assert left + right <= x.shape[-1], f"cannot remove {left + right} samples from {x.shape[-1]}"
    return x[..., left:x.shape[-1] - right]


class NormConv1d(nn.Module):
    """``nn.Conv1d`` followed by its normalisation (weight norm, time group norm or none). [B, C, T]."""

    def __init__(self, *args: tp.Any, causal: bool = False, norm: str = 'none',
                 norm_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None, **kwargs: tp.Any):
        super().__init__()
        self.conv = apply_parametrization_norm(nn.Conv1d(*args, **kwargs), norm)
        self.norm = get_norm_module(self.conv, causal, norm, **(norm_kwargs or {}))
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(module_conv1d(self.conv, x))


class NormConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` followed by its normalisation. [B, C, T]."""

    def __init__(self, *args: tp.Any, causal: bool = False, norm: str = 'none',
                 norm_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None, **kwargs: tp.Any):
        super().__init__()
        self.convtr = apply_parametrization_norm(nn.ConvTranspose1d(*args, **kwargs), norm)
        self.norm = get_norm_module(self.convtr, causal, norm, **(norm_kwargs or {}))
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class StreamableConv1d(StreamingModule):
    """Conv1d with 'same'-style padding computed from kernel, stride and dilation.

    [B, C_in, T] -> [B, C_out, ceil(T / stride)]. Non-causal: padding split between both sides
    (one more sample on the left for odd totals); causal: all padding on the left.

    Streaming (causal only): each chunk [B, C_in, T_i] gives the frames whose window it completes and
    the layer keeps the last ``effective_kernel - stride`` samples (plus any incomplete stride) for the
    next chunk; the first chunk is padded on the left as offline. Chunks whose lengths are multiples of
    `stride` give ``T_i / stride`` frames, which concatenated equal the offline output; a trailing
    incomplete stride, which offline completes with right padding, stays buffered.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as ``nn.Conv1d``.
        causal: output frame `i` depends only on inputs ``< (i + 1) * stride``.
        norm: 'none' | 'weight_norm' | 'time_group_norm'.
        norm_kwargs: keyword arguments of the normalisation.
        pad_mode: 'constant' (zeros) | 'reflect' | 'replicate' | 'circular'. With ``causal=True`` only
            'constant' and 'replicate' are strictly causal: reflecting the left edge copies the first
            ``padding`` future samples into it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = False,
                 norm: str = 'none', norm_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None,
                 pad_mode: str = 'reflect'):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"Unknown pad_mode {pad_mode!r}: choose one of {sorted(PAD_MODES)}.")
        assert stride == 1 or dilation == 1, \
            f"use stride > 1 or dilation > 1, not both (got stride={stride}, dilation={dilation})"
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                               groups=groups, bias=bias, causal=causal, norm=norm, norm_kwargs=norm_kwargs)
        self.causal = causal
        self.pad_mode = pad_mode
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation

    def check_streamable(self) -> None:
        if not self.causal:
            raise ValueError(f"{self._streaming_name} is not causal: its output depends on future samples, "
                             "so it cannot stream. Build the model with causal=True.")
        if self.pad_mode == 'circular':
            raise ValueError(f"{self._streaming_name} pads with pad_mode='circular', which wraps the end of the "
                             "signal around: use 'constant' or 'replicate' to stream.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            return self._forward_streaming(x)
        left, right = self._paddings(x.shape[-1])
        y = self._convolve_padded_in_place(x, left, right)
        if y is None:
            return self.conv(pad1d(x, (left, right), mode=self.pad_mode))
        return self.conv.norm(y)

    def _paddings(self, length: int) -> tp.Tuple[int, int]:
        """(left, right) padding of an offline input of `length` samples."""
        effective_kernel = (self.kernel_size - 1) * self.dilation + 1
        padding_total = effective_kernel - self.stride
        extra = get_extra_padding_for_conv1d(length, effective_kernel, self.stride, padding_total)
        if self.causal:
            return padding_total, extra
        right = padding_total // 2
        return padding_total - right, right + extra

    def _convolve_padded_in_place(self, x: torch.Tensor, left: int, right: int) -> tp.Optional[torch.Tensor]:
        """The convolution (before its norm) of `x [B, C, T]` padded by (left, right) in `pad_mode`, without
        building the padded copy: the convolution pads with zeros itself, and only the few output frames whose
        windows reach into the padding are recomputed from the padded edges. Equal to
        ``conv(pad1d(x, (left, right), pad_mode))``; None where that shortcut does not apply (circular
        padding, inputs too short for separate edges, or an offset the stride cannot express)."""
        conv = self.conv.conv
        stride, kernel = self.stride, (self.kernel_size - 1) * self.dilation + 1
        symmetric = max(left, right)
        length = x.shape[-1]
        if self.pad_mode == 'circular' or (symmetric - left) % stride or length < 2 * (kernel + symmetric):
            return None
        frames = (length + left + right - kernel) // stride + 1
        offset = (symmetric - left) // stride
        weight = conv.weight  # computed once: a weight parametrisation runs on every access
        y = conv1d(x, weight, conv.bias, stride, symmetric, self.dilation, conv.groups)
        y = y[..., offset:offset + frames]
        if self.pad_mode == 'constant' or (left == 0 and right == 0):
            return y

        def edge(piece: torch.Tensor) -> torch.Tensor:
            return F.conv1d(piece, weight, conv.bias, stride, 0, self.dilation, conv.groups)

        first_inner = -(-left // stride)  # the first frame whose window starts inside x
        last_inner = (length - kernel + left) // stride  # the last frame whose window ends inside x
        # the edge frames are written over the zero-padded ones (the convolution's backward does not need
        # its output); each edge slice keeps more than `left` / `right` samples so that it reflects like x
        if first_inner > 0:
            end = max((first_inner - 1) * stride - left + kernel, left + 1)
            y[..., :first_inner] = edge(pad1d(x[..., :end], (left, 0), mode=self.pad_mode))[..., :first_inner]
        if last_inner < frames - 1:
            start = (last_inner + 1) * stride - left
            start -= stride * -(-max(0, right + 1 - (length - start)) // stride)
            count = frames - last_inner - 1
            y[..., last_inner + 1:] = edge(pad1d(x[..., start:], (0, right), mode=self.pad_mode))[..., -count:]
        return y

    def _forward_streaming(self, x: torch.Tensor) -> torch.Tensor:
        """Next chunk [B, C_in, T_i] -> the frames it completes [B, C_out, F_i]."""
        state = self._stream_state(x)
        effective_kernel = (self.kernel_size - 1) * self.dilation + 1
        padding_total = effective_kernel - self.stride
        previous: tp.Optional[torch.Tensor] = state.get('previous')
        if previous is not None:
            x = torch.cat([previous, x], dim=-1)
        elif x.shape[-1] > 0:  # the first samples of the signal: the offline left padding
            if self.pad_mode == 'reflect' and x.shape[-1] <= padding_total:
                raise ValueError(
                    f"{self._streaming_name} pads with pad_mode='reflect', which needs more than "
                    f"{padding_total} samples in the first chunk it streams but got {x.shape[-1]}: make the "
                    "first chunk longer, or build the model with pad_mode='constant' or 'replicate'.")
            x = pad1d(x, (padding_total, 0), mode=self.pad_mode)
        else:
            return x.new_zeros(x.shape[0], self.conv.conv.out_channels, 0)
        frames = max(0, (x.shape[-1] - effective_kernel) // self.stride + 1)
        state['previous'] = x[..., frames * self.stride:]
        if frames == 0:
            return x.new_zeros(x.shape[0], self.conv.conv.out_channels, 0)
        return self.conv(x[..., :(frames - 1) * self.stride + effective_kernel])


class StreamableConvTranspose1d(StreamingModule):
    """ConvTranspose1d trimmed back to ``frames * stride`` samples: [B, C_in, T] -> [B, C_out, T * stride].

    Streaming (causal with ``trim_right_ratio=1`` only): each chunk of frames [B, C_in, T_i] gives
    ``T_i * stride`` samples, exactly the offline output's samples for those frames, and the
    ``kernel_size - stride`` samples its last frames spill past them wait, without bias, to be added to
    the next chunk's output. Offline trims that spill after the last frame, so nothing is lost when the
    stream ends.

    Args:
        in_channels, out_channels, kernel_size, stride, bias: as ``nn.ConvTranspose1d``.
        causal: trim on the right (see `trim_right_ratio`) so that outputs never depend on later frames.
        norm, norm_kwargs: as :class:`StreamableConv1d`.
        trim_right_ratio: causal only: the share of the ``kernel_size - stride`` overhang removed on the
            right (1.0 = all of it, fully causal); the rest is removed on the left.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, causal: bool = False, norm: str = 'none',
                 trim_right_ratio: float = 1., norm_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None):
        super().__init__()
        assert kernel_size >= stride, f"kernel_size ({kernel_size}) must be >= stride ({stride})"
        assert 0. <= trim_right_ratio <= 1., f"trim_right_ratio must be in [0, 1], got {trim_right_ratio}"
        assert causal or trim_right_ratio == 1., "trim_right_ratio != 1 is only meaningful with causal=True"
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride, bias=bias,
                                          causal=causal, norm=norm, norm_kwargs=norm_kwargs)
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio
        self.kernel_size = kernel_size
        self.stride = stride

    def check_streamable(self) -> None:
        if not self.causal or self.trim_right_ratio != 1.:
            raise ValueError(f"{self._streaming_name} trims part of its overhang on the left (causal="
                             f"{self.causal}, trim_right_ratio={self.trim_right_ratio}): its samples depend on "
                             "later frames, so it cannot stream. Build the model with causal=True and "
                             "trim_right_ratio=1.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            return self._forward_streaming(x)
        y = self.convtr(x)
        padding_total = self.kernel_size - self.stride
        if self.causal:
            right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            right = padding_total // 2
        return unpad1d(y, (padding_total - right, right))

    def _forward_streaming(self, x: torch.Tensor) -> torch.Tensor:
        """Next frames [B, C_in, T_i] -> their samples [B, C_out, T_i * stride]."""
        state = self._stream_state(x)
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.convtr.out_channels, 0)
        y = self.convtr(x)  # [B, C_out, (T_i - 1) * stride + kernel_size]
        spill = self.kernel_size - self.stride
        pending: tp.Optional[torch.Tensor] = state.get('pending')
        if pending is not None:
            y = torch.cat([y[..., :spill] + pending, y[..., spill:]], dim=-1)
        length = x.shape[-1] * self.stride
        pending = y[..., length:]
        bias = self.convtr.convtr.bias
        state['pending'] = pending if bias is None else pending - bias[:, None]  # the next chunk adds its own
        return y[..., :length]
