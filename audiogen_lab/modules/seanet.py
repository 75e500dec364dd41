"""SEANet convolutional encoder and decoder, the autoencoder of EnCodec (Défossez et al., 2022).

The encoder maps audio [B, channels, T] to latents [B, dimension, T / hop] with strided convolutions
(hop = prod(ratios)), residual units with growing dilation, an optional LSTM and a final projection;
the decoder mirrors it with transposed convolutions.
"""
from __future__ import annotations

import typing as tp

import numpy as np
import torch
from torch import nn

from .conv import StreamableConv1d, StreamableConvTranspose1d
from .lstm import StreamableLSTM


def get_activation(name: str, params: tp.Optional[tp.Dict[str, tp.Any]] = None) -> nn.Module:
    """Instantiate ``torch.nn.<name>(**params)``, e.g. ``get_activation('ELU', {'alpha': 1.0})``."""
    klass = getattr(nn, name, None)
    if not (isinstance(klass, type) and issubclass(klass, nn.Module)):
        raise ValueError(f"Unknown activation {name!r}: give the name of a torch.nn module such as "
                         "'ELU', 'LeakyReLU', 'GELU', 'Tanh'.")
    return klass(**(params or {}))


class SEANetResnetBlock(nn.Module):
    """Residual unit [B, dim, T] -> [B, dim, T]: (activation, conv) pairs, narrowed by `compress`.

    Args:
        dim: channels.
        kernel_sizes, dilations: one entry per convolution of the residual branch.
        activation, activation_params: torch.nn activation name and its keyword arguments.
        norm, norm_params: conv normalisation (see :mod:`audiogen_lab.modules.conv`).
        causal, pad_mode: as :class:`StreamableConv1d`.
        compress: hidden channels of the branch are ``dim // compress``.
        true_skip: identity shortcut; otherwise a 1x1 convolution.
    """

    def __init__(self, dim: int, kernel_sizes: tp.Sequence[int] = (3, 1), dilations: tp.Sequence[int] = (1, 1),
                 activation: str = 'ELU', activation_params: tp.Optional[tp.Dict[str, tp.Any]] = None,
                 norm: str = 'none', norm_params: tp.Optional[tp.Dict[str, tp.Any]] = None,
                 causal: bool = False, pad_mode: str = 'reflect', compress: int = 2, true_skip: bool = True):
        super().__init__()
        assert len(kernel_sizes) == len(dilations), \
            f"one dilation per kernel size expected, got {list(kernel_sizes)} and {list(dilations)}"
        hidden = max(1, dim // compress)
        layers: tp.List[nn.Module] = []
        last = len(kernel_sizes) - 1
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations)):
            layers.append(get_activation(activation, activation_params))
            layers.append(StreamableConv1d(dim if i == 0 else hidden, dim if i == last else hidden,
                                           kernel_size, dilation=dilation, norm=norm, norm_kwargs=norm_params,
                                           causal=causal, pad_mode=pad_mode))
        self.block = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity() if true_skip else StreamableConv1d(
            dim, dim, 1, norm=norm, norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class _SEANetBase(nn.Module):
    """Arguments shared by the encoder and the decoder (see :class:`SEANetEncoder`)."""

    def __init__(self, channels: int, dimension: int, n_filters: int, n_residual_layers: int,
                 ratios: tp.Sequence[int], disable_norm_outer_blocks: int):
        super().__init__()
        assert channels >= 1 and dimension >= 1 and n_filters >= 1, \
            f"channels, dimension and n_filters must be >= 1, got {channels}, {dimension}, {n_filters}"
        assert n_residual_layers >= 0, f"n_residual_layers must be >= 0, got {n_residual_layers}"
        assert len(ratios) >= 1 and all(int(r) >= 1 for r in ratios), f"ratios must be >= 1, got {list(ratios)}"
        self.channels = channels
        self.dimension = dimension
        self.n_filters = n_filters
        self.n_residual_layers = n_residual_layers
        self.ratios = [int(r) for r in ratios]
        self.hop_length = int(np.prod(self.ratios))
        self.n_blocks = len(self.ratios) + 2  # first conv, one block per ratio, last conv
        assert 0 <= disable_norm_outer_blocks <= self.n_blocks, \
            f"disable_norm_outer_blocks must be in [0, {self.n_blocks}], got {disable_norm_outer_blocks}"
        self.disable_norm_outer_blocks = disable_norm_outer_blocks

    def _norm_for(self, norm: str, distance_to_waveform: int) -> str:
        """Blocks counted from the waveform side (0 = the conv touching audio) lose their norm
        when closer than `disable_norm_outer_blocks`."""
        return 'none' if distance_to_waveform < self.disable_norm_outer_blocks else norm


class SEANetEncoder(_SEANetBase):
    """SEANet encoder: audio [B, channels, T] -> latents [B, dimension, ceil(T / hop)], hop = prod(ratios).

    Args:
        channels: audio channels.
        dimension: latent channels.
        n_filters: channels after the first convolution; doubled after each downsampling.
        n_residual_layers: residual units per resolution, with dilations ``dilation_base ** j``.
        ratios: up-sampling ratios of the decoder; the encoder downsamples by them in reverse order.
        activation, activation_params: torch.nn activation name and its keyword arguments.
        norm, norm_params: 'none' | 'weight_norm' | 'time_group_norm' and its keyword arguments.
        kernel_size: kernel of the first convolution.
        last_kernel_size: kernel of the last convolution.
        residual_kernel_size: kernel of the first convolution of each residual unit.
        dilation_base: dilation growth factor across residual units.
        causal: only left padding, unidirectional LSTM: frame `i` depends on samples ``< (i + 1) * hop``.
        pad_mode: padding mode of the convolutions.
        true_skip: identity shortcuts in residual units (else 1x1 convolutions).
        compress: channel reduction inside residual units.
        lstm: number of LSTM layers before the last convolution (0 = none).
        disable_norm_outer_blocks: number of blocks, counted from the audio side, without normalisation.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, n_residual_layers: int = 1,
                 ratios: tp.Sequence[int] = (8, 5, 4, 2), activation: str = 'ELU',
                 activation_params: tp.Optional[tp.Dict[str, tp.Any]] = None, norm: str = 'none',
                 norm_params: tp.Optional[tp.Dict[str, tp.Any]] = None, kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, dilation_base: int = 2,
                 causal: bool = False, pad_mode: str = 'reflect', true_skip: bool = True, compress: int = 2,
                 lstm: int = 0, disable_norm_outer_blocks: int = 0):
        super().__init__(channels, dimension, n_filters, n_residual_layers, ratios, disable_norm_outer_blocks)
        conv_kw: tp.Dict[str, tp.Any] = dict(norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)
        mult = 1
        layers: tp.List[nn.Module] = [
            StreamableConv1d(channels, n_filters, kernel_size, norm=self._norm_for(norm, 0), **conv_kw)]
        for i, ratio in enumerate(reversed(self.ratios)):
            block_norm = self._norm_for(norm, i + 1)
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(
                    mult * n_filters, kernel_sizes=(residual_kernel_size, 1), dilations=(dilation_base ** j, 1),
                    activation=activation, activation_params=activation_params, norm=block_norm,
                    norm_params=norm_params, causal=causal, pad_mode=pad_mode, compress=compress,
                    true_skip=true_skip))
            layers.append(get_activation(activation, activation_params))
            layers.append(StreamableConv1d(mult * n_filters, 2 * mult * n_filters, 2 * ratio, stride=ratio,
                                           norm=block_norm, **conv_kw))
            mult *= 2
        if lstm:
            layers.append(StreamableLSTM(mult * n_filters, num_layers=lstm))
        layers.append(get_activation(activation, activation_params))
        layers.append(StreamableConv1d(mult * n_filters, dimension, last_kernel_size,
                                       norm=self._norm_for(norm, self.n_blocks - 1), **conv_kw))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3 and x.shape[1] == self.channels, \
            f"expected audio [B, {self.channels}, T], got shape {tuple(x.shape)}"
        return self.model(x)


class SEANetDecoder(_SEANetBase):
    """SEANet decoder: latents [B, dimension, T'] -> audio [B, channels, T' * hop].

    Arguments as :class:`SEANetEncoder` (ratios in up-sampling order; `disable_norm_outer_blocks` counts
    from the audio output side), plus:
        final_activation, final_activation_params: optional torch.nn activation applied to the output
            (e.g. 'Tanh'); ``None`` for a linear output.
        trim_right_ratio: causal only: share of each transposed convolution's overhang trimmed on the right.
    """

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32, n_residual_layers: int = 1,
                 ratios: tp.Sequence[int] = (8, 5, 4, 2), activation: str = 'ELU',
                 activation_params: tp.Optional[tp.Dict[str, tp.Any]] = None,
                 final_activation: tp.Optional[str] = None,
                 final_activation_params: tp.Optional[tp.Dict[str, tp.Any]] = None, norm: str = 'none',
                 norm_params: tp.Optional[tp.Dict[str, tp.Any]] = None, kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, dilation_base: int = 2,
                 causal: bool = False, pad_mode: str = 'reflect', true_skip: bool = True, compress: int = 2,
                 lstm: int = 0, disable_norm_outer_blocks: int = 0, trim_right_ratio: float = 1.0):
        super().__init__(channels, dimension, n_filters, n_residual_layers, ratios, disable_norm_outer_blocks)
        conv_kw: tp.Dict[str, tp.Any] = dict(norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode)
        mult = 2 ** len(self.ratios)
        layers: tp.List[nn.Module] = [StreamableConv1d(
            dimension, mult * n_filters, kernel_size, norm=self._norm_for(norm, self.n_blocks - 1), **conv_kw)]
        if lstm:
            layers.append(StreamableLSTM(mult * n_filters, num_layers=lstm))
        for i, ratio in enumerate(self.ratios):
            block_norm = self._norm_for(norm, len(self.ratios) - i)
            layers.append(get_activation(activation, activation_params))
            layers.append(StreamableConvTranspose1d(
                mult * n_filters, mult * n_filters // 2, 2 * ratio, stride=ratio, norm=block_norm,
                norm_kwargs=norm_params, causal=causal, trim_right_ratio=trim_right_ratio))
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(
                    mult * n_filters // 2, kernel_sizes=(residual_kernel_size, 1),
                    dilations=(dilation_base ** j, 1), activation=activation,
                    activation_params=activation_params, norm=block_norm, norm_params=norm_params,
                    causal=causal, pad_mode=pad_mode, compress=compress, true_skip=true_skip))
            mult //= 2
        layers.append(get_activation(activation, activation_params))
        layers.append(StreamableConv1d(n_filters, channels, last_kernel_size, norm=self._norm_for(norm, 0),
                                       **conv_kw))
        if final_activation is not None:
            layers.append(get_activation(final_activation, final_activation_params))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 3 and z.shape[1] == self.dimension, \
            f"expected latents [B, {self.dimension}, T], got shape {tuple(z.shape)}"
        return self.model(z)
