"""Networks of a consistency autoencoder over complex spectrograms (after Pasini, Lattner and Fazekas,
"Music2Latent: Consistency Autoencoders for Latent Audio Compression", ISMIR 2024).

The input is a complex STFT as two real channels, x [B, 2, F, N] (F frequency bins, N frames).

- :class:`ConsistencyEncoder`: x [B, 2, F, N] -> latents [B, latent_dim, N / 8] in [-1, 1] (8 is the
  `time_downsampling` of the presets: three (2, 2) downsamplings). A 2-D residual network goes down a
  pyramid of levels (frequency-only downsampling first, then frequency and time), its last map is
  flattened to a sequence [B, C * F', N / 8] and 1-D residual blocks and a 1x1 conv with tanh give
  the latents.
- :class:`LatentUpsampler`: latents -> a pyramid of feature maps, one [B, C_l, F_l, N_l] per level,
  mirroring the encoder.
- :class:`ConsistencyDecoder`: a noise-conditioned 2-D U-Net that denoises x_noisy [B, 2, F, N] given
  the noise level c_noise [B] and the pyramid, which is added to the input of every residual block.
  The decoder owns the upsampler: ``pyramid = decoder.prepare(latents)`` is computed once per decode
  and passed to every sampling step, ``decoder(x_noisy, c_noise, pyramid)``.

The three share the level plan (:class:`LevelPlan`): level ``l`` has ``base_channels *
multipliers[l]`` channels; between levels ``l`` and ``l + 1`` the map is downsampled by
``(freq_only_factor, 1)`` when ``freq_downsample[l]`` and by ``(2, 2)`` otherwise. Attention
(:class:`~audiogen_lab.modules.unet2d.FrequencyAttention`, along frequency within each frame) follows
every residual block of the levels flagged in ``attention_levels``.

Presets: ``consistency_net_kwargs('reference' | 'debug')`` (see :data:`PRESETS`).
"""
from __future__ import annotations

import dataclasses
import math
import typing as tp

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .unet2d import (Downsample2d, FrequencyAttention, FrequencyScaling, NoiseEmbedding, ResBlock, Upsample2d,
                     group_norm)


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """Resolution levels shared by the encoder, the upsampler and the decoder.

    Attributes:
        channels: width of each level, ``base_channels * multipliers[l]``.
        freq_bins: frequency bins of each level (level 0 has the input's `frequency_bins`).
        factors: (frequency, time) downsampling factor from level ``l`` to ``l + 1``.
        time_downsampling: product of the time factors; the frame count must be a multiple of it.
    """
    channels: tp.Tuple[int, ...]
    freq_bins: tp.Tuple[int, ...]
    factors: tp.Tuple[tp.Tuple[int, int], ...]
    time_downsampling: int

    @classmethod
    def build(cls, frequency_bins: int, base_channels: int, multipliers: tp.Sequence[int],
              freq_downsample: tp.Sequence[bool], freq_only_factor: int = 4) -> 'LevelPlan':
        """Check the level arguments and compute the plan (see the module docstring)."""
        levels = len(multipliers)
        assert levels >= 1 and all(int(m) >= 1 for m in multipliers), \
            f"multipliers must be a non-empty sequence of ints >= 1, got {list(multipliers)}"
        assert len(freq_downsample) == levels - 1, \
            f"freq_downsample needs one flag per transition ({levels - 1} for {levels} multipliers), " \
            f"got {list(freq_downsample)}"
        assert freq_only_factor >= 1, f"freq_only_factor must be >= 1, got {freq_only_factor}"
        factors = tuple((freq_only_factor, 1) if flag else (2, 2) for flag in freq_downsample)
        freq_bins = [int(frequency_bins)]
        for f, _ in factors:
            assert freq_bins[-1] % f == 0, \
                f"frequency_bins={frequency_bins} cannot be downsampled by the factors {[f for f, _ in factors]}: " \
                f"use a number of bins divisible by {math.prod(f for f, _ in factors)}"
            freq_bins.append(freq_bins[-1] // f)
        return cls(channels=tuple(base_channels * int(m) for m in multipliers), freq_bins=tuple(freq_bins),
                   factors=factors, time_downsampling=math.prod(t for _, t in factors))

    @property
    def levels(self) -> int:
        return len(self.channels)


def _per_level(value: tp.Union[int, bool, tp.Sequence], levels: int, name: str) -> tp.List:
    """Broadcast a scalar to one value per level, or check a sequence has one per level."""
    if isinstance(value, (int, bool)):
        return [value] * levels
    values = list(value)
    assert len(values) == levels, f"{name} needs one value per level ({levels}), got {values}"
    return values


def _check_spectrogram(x: torch.Tensor, channels: int, frequency_bins: int, frame_multiple: int) -> None:
    """Assert x is [B, channels, frequency_bins, N] with N a multiple of `frame_multiple`."""
    assert x.dim() == 4 and x.shape[1] == channels and x.shape[2] == frequency_bins, \
        f"expected a spectrogram [B, {channels}, {frequency_bins}, N], got {list(x.shape)}"
    assert x.shape[-1] % frame_multiple == 0, \
        f"the number of frames N={x.shape[-1]} must be a multiple of {frame_multiple}: pad the time axis " \
        f"to a multiple of {frame_multiple} frames"


class _Stage(nn.Module):
    """Residual blocks of one level, each followed by frequency attention when `attention`.

    [B, C_in, F, T] (and emb [B, E] when conditioned) -> [B, C_out, F, T]; the first block changes
    the width. The decoder calls the blocks one by one (:attr:`blocks`, :attr:`attentions`).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, heads: int,
                 emb_dim: tp.Optional[int] = None, max_groups: int = 32):
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(in_channels if i == 0 else out_channels, out_channels, emb_dim,
                                              max_groups=max_groups) for i in range(num_blocks)])
        self.attentions = nn.ModuleList([FrequencyAttention(out_channels, heads, max_groups) if attention
                                         else nn.Identity() for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor, emb: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        for block, attention in zip(self.blocks, self.attentions):
            x = attention(block(x, emb))
        return x


class ConsistencyEncoder(nn.Module):
    """Spectrogram encoder x [B, in_channels, F, N] -> latents [B, latent_dim, N / time_downsampling].

    Args:
        frequency_bins: `F` the input must have (1024 for n_fft 2048 without the Nyquist bin).
        in_channels: input channels (2: real and imaginary parts).
        base_channels, multipliers, freq_downsample, freq_only_factor: the level plan (:class:`LevelPlan`).
        layers_per_level: residual blocks per level (an int or one per level).
        attention_levels: frequency attention after the blocks of a level (a bool or one per level).
        heads: attention heads.
        bottleneck_channels: width of the 1-D residual blocks after flattening.
        bottleneck_layers: number of those blocks.
        latent_dim: latent channels.
        frequency_gain: learn a gain per input frequency bin after the input conv.
        max_groups: GroupNorm groups cap.
    """

    def __init__(self, frequency_bins: int = 1024, in_channels: int = 2, base_channels: int = 64,
                 multipliers: tp.Sequence[int] = (1, 2, 4, 4, 4),
                 freq_downsample: tp.Sequence[bool] = (True, False, False, False), freq_only_factor: int = 4,
                 layers_per_level: tp.Union[int, tp.Sequence[int]] = 1,
                 attention_levels: tp.Union[bool, tp.Sequence[bool]] = (False, False, True, True, True),
                 heads: int = 4, bottleneck_channels: int = 512, bottleneck_layers: int = 4, latent_dim: int = 64,
                 frequency_gain: bool = True, max_groups: int = 32):
        super().__init__()
        self.plan = LevelPlan.build(frequency_bins, base_channels, multipliers, freq_downsample, freq_only_factor)
        plan = self.plan
        self.frequency_bins = frequency_bins
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.time_downsampling = plan.time_downsampling
        layers = _per_level(layers_per_level, plan.levels, 'layers_per_level')
        attention = _per_level(attention_levels, plan.levels, 'attention_levels')

        self.conv_in = nn.Conv2d(in_channels, plan.channels[0], 3, padding=1)
        self.gain = nn.Parameter(torch.ones(frequency_bins, 1)) if frequency_gain else None
        self.stages = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        width = plan.channels[0]
        for level in range(plan.levels):
            self.stages.append(_Stage(width, plan.channels[level], layers[level], attention[level], heads,
                                      max_groups=max_groups))
            width = plan.channels[level]
            if level < plan.levels - 1:
                self.downsamples.append(Downsample2d(width, width, plan.factors[level], max_groups))
        self.norm_2d = group_norm(width, max_groups)
        self.feature_dim = width * plan.freq_bins[-1]

        self.proj_in = nn.Conv1d(self.feature_dim, bottleneck_channels, 1)
        self.bottleneck = nn.ModuleList([ResBlock(bottleneck_channels, bottleneck_channels, dims=1,
                                                  max_groups=max_groups) for _ in range(bottleneck_layers)])
        self.norm_out = group_norm(bottleneck_channels, max_groups)
        self.proj_out = nn.Conv1d(bottleneck_channels, latent_dim, 1)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_channels, F, N] -> flattened 2-D features [B, feature_dim, N / time_downsampling]."""
        _check_spectrogram(x, self.in_channels, self.frequency_bins, self.time_downsampling)
        h = self.conv_in(x)
        if self.gain is not None:
            h = h * self.gain
        for level, stage in enumerate(self.stages):
            h = stage(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        return rearrange(self.norm_2d(h), 'b c f t -> b (c f) t')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_channels, F, N] -> latents [B, latent_dim, N / time_downsampling], in [-1, 1]."""
        h = self.proj_in(self.extract_features(x))
        for block in self.bottleneck:
            h = block(h)
        return torch.tanh(self.proj_out(F.silu(self.norm_out(h))))


class LatentUpsampler(nn.Module):
    """Latents [B, latent_dim, N / 8] -> pyramid, a list of maps [B, C_l, F_l, N_l] for levels 0..L-1.

    1-D residual blocks on the latents, a 1x1 conv to ``C_{L-1} * F_{L-1}`` channels unflattened to the
    coarsest map, then residual blocks and upsampling level by level back to level 0 (finest first in
    the returned list). Takes the level-plan arguments of :class:`ConsistencyEncoder`.
    """

    def __init__(self, frequency_bins: int = 1024, base_channels: int = 64,
                 multipliers: tp.Sequence[int] = (1, 2, 4, 4, 4),
                 freq_downsample: tp.Sequence[bool] = (True, False, False, False), freq_only_factor: int = 4,
                 layers_per_level: tp.Union[int, tp.Sequence[int]] = 1,
                 attention_levels: tp.Union[bool, tp.Sequence[bool]] = (False, False, True, True, True),
                 heads: int = 4, bottleneck_channels: int = 512, bottleneck_layers: int = 4, latent_dim: int = 64,
                 max_groups: int = 32):
        super().__init__()
        self.plan = LevelPlan.build(frequency_bins, base_channels, multipliers, freq_downsample, freq_only_factor)
        plan = self.plan
        self.latent_dim = latent_dim
        layers = _per_level(layers_per_level, plan.levels, 'layers_per_level')
        attention = _per_level(attention_levels, plan.levels, 'attention_levels')

        self.proj_in = nn.Conv1d(latent_dim, bottleneck_channels, 1)
        self.bottleneck = nn.ModuleList([ResBlock(bottleneck_channels, bottleneck_channels, dims=1,
                                                  max_groups=max_groups) for _ in range(bottleneck_layers)])
        self.norm_1d = group_norm(bottleneck_channels, max_groups)
        self.proj_out = nn.Conv1d(bottleneck_channels, plan.channels[-1] * plan.freq_bins[-1], 1)
        # Index l holds level l; they run from the coarsest level to the finest.
        self.stages = nn.ModuleList([_Stage(plan.channels[level], plan.channels[level], layers[level],
                                            attention[level], heads, max_groups=max_groups)
                                     for level in range(plan.levels)])
        self.upsamples = nn.ModuleList([Upsample2d(plan.channels[level + 1], plan.channels[level],
                                                   plan.factors[level]) for level in range(plan.levels - 1)])

    def forward(self, latents: torch.Tensor) -> tp.List[torch.Tensor]:
        """latents [B, latent_dim, T] -> [map_0, ..., map_{L-1}], map_l [B, C_l, F_l, N_l].

        ``N_0 = T * time_downsampling`` and ``N_l`` divides it by the time factors of the first l
        transitions (the plan's `channels`, `freq_bins` and `factors`)."""
        assert latents.dim() == 3 and latents.shape[1] == self.latent_dim, \
            f"expected latents [B, {self.latent_dim}, T], got {list(latents.shape)}"
        h = self.proj_in(latents)
        for block in self.bottleneck:
            h = block(h)
        h = self.proj_out(F.silu(self.norm_1d(h)))
        h = rearrange(h, 'b (c f) t -> b c f t', f=self.plan.freq_bins[-1])
        pyramid: tp.List[torch.Tensor] = []
        for level in reversed(range(self.plan.levels)):
            h = self.stages[level](h)
            pyramid.append(h)
            if level > 0:
                h = self.upsamples[level - 1](h)
        return pyramid[::-1]


class ConsistencyDecoder(nn.Module):
    """Noise-conditioned U-Net: x_noisy [B, in_channels, F, N], c_noise [B], pyramid -> [B, in_channels, F, N].

    The network output is raw: the consistency preconditioning (c_skip, c_out, c_in) is left to the
    caller. Its head conv starts at zero, so an untrained decoder outputs exactly zero.

    Structure: input conv; down path of `layers_per_level` noise-conditioned residual blocks per level
    (each followed by frequency attention at `attention_levels`), downsampling between levels; up path
    mirroring it, each block taking the sum of the current map and the matching skip divided by sqrt(2);
    before every block of level ``l`` (both paths) the pyramid map ``l`` is added with a learned
    per-channel gain. The noise embedding modulates every residual block (scale and shift). With
    `frequency_scaling`, a :class:`~audiogen_lab.modules.unet2d.FrequencyScaling` gain [B, C_l, F_l]
    computed from the noise embedding multiplies the map at the entry of every level of the down path
    and before the output head.

    The decoder owns the :class:`LatentUpsampler` (:attr:`upsampler`): call ``prepare(latents)`` once
    per decode and pass its result to every call of ``forward``.

    Args:
        frequency_bins, in_channels, base_channels, multipliers, freq_downsample, freq_only_factor,
        attention_levels, heads, max_groups: as :class:`ConsistencyEncoder`.
        layers_per_level: conditioned residual blocks per level in each path (an int or one per level).
        emb_dim: width of the noise embedding.
        noise_embedding: ``'sinusoidal'`` or ``'fourier'`` features of c_noise.
        fourier_scale: frequency scale of the Fourier features.
        frequency_scaling: apply the noise-conditioned per-bin, per-channel gains.
        frequency_scaling_rank: rank of those gain maps.
        latent_dim, bottleneck_channels, bottleneck_layers: of the upsampler.
        upsampler_layers_per_level: residual blocks per level of the upsampler (an int or one per level).
        upsampler_attention_levels: attention flags of the upsampler's levels (None: `attention_levels`).
    """

    def __init__(self, frequency_bins: int = 1024, in_channels: int = 2, base_channels: int = 64,
                 multipliers: tp.Sequence[int] = (1, 2, 4, 4, 4),
                 freq_downsample: tp.Sequence[bool] = (True, False, False, False), freq_only_factor: int = 4,
                 layers_per_level: tp.Union[int, tp.Sequence[int]] = 2,
                 attention_levels: tp.Union[bool, tp.Sequence[bool]] = (False, False, True, True, True),
                 heads: int = 4, emb_dim: int = 256, noise_embedding: str = 'sinusoidal',
                 fourier_scale: float = 16.0, frequency_scaling: bool = True, frequency_scaling_rank: int = 3,
                 latent_dim: int = 64, bottleneck_channels: int = 512, bottleneck_layers: int = 4,
                 upsampler_layers_per_level: tp.Union[int, tp.Sequence[int]] = 1,
                 upsampler_attention_levels: tp.Optional[tp.Union[bool, tp.Sequence[bool]]] = None,
                 max_groups: int = 32):
        super().__init__()
        self.plan = LevelPlan.build(frequency_bins, base_channels, multipliers, freq_downsample, freq_only_factor)
        plan = self.plan
        self.frequency_bins = frequency_bins
        self.in_channels = in_channels
        self.time_downsampling = plan.time_downsampling
        layers = _per_level(layers_per_level, plan.levels, 'layers_per_level')
        attention = _per_level(attention_levels, plan.levels, 'attention_levels')

        self.upsampler = LatentUpsampler(
            frequency_bins=frequency_bins, base_channels=base_channels, multipliers=multipliers,
            freq_downsample=freq_downsample, freq_only_factor=freq_only_factor,
            layers_per_level=upsampler_layers_per_level,
            attention_levels=attention if upsampler_attention_levels is None else upsampler_attention_levels,
            heads=heads, bottleneck_channels=bottleneck_channels, bottleneck_layers=bottleneck_layers,
            latent_dim=latent_dim, max_groups=max_groups)
        self.noise_embedding = NoiseEmbedding(emb_dim, kind=noise_embedding, fourier_scale=fourier_scale)
        self.conv_in = nn.Conv2d(in_channels, plan.channels[0], 3, padding=1)
        self.frequency_scalings = nn.ModuleList([
            FrequencyScaling(emb_dim, plan.channels[level], plan.freq_bins[level], frequency_scaling_rank)
            for level in range(plan.levels)]) if frequency_scaling else None
        self.scaling_out = FrequencyScaling(emb_dim, plan.channels[0], plan.freq_bins[0],
                                            frequency_scaling_rank) if frequency_scaling else None

        self.down = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.up = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in range(plan.levels):
            width = plan.channels[level]
            self.down.append(_Stage(width, width, layers[level], attention[level], heads, emb_dim, max_groups))
            self.up.append(_Stage(width, width, layers[level], attention[level], heads, emb_dim, max_groups))
            if level < plan.levels - 1:
                self.downsamples.append(Downsample2d(width, plan.channels[level + 1], plan.factors[level],
                                                     max_groups))
                self.upsamples.append(Upsample2d(plan.channels[level + 1], width, plan.factors[level]))
        # One learned per-channel gain per block and path for the pyramid map it receives.
        self.down_gains = nn.ParameterList([nn.Parameter(torch.ones(layers[level], plan.channels[level], 1, 1))
                                            for level in range(plan.levels)])
        self.up_gains = nn.ParameterList([nn.Parameter(torch.ones(layers[level], plan.channels[level], 1, 1))
                                          for level in range(plan.levels)])
        self.norm_out = group_norm(plan.channels[0], max_groups)
        self.conv_out = nn.Conv2d(plan.channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def prepare(self, latents: torch.Tensor) -> tp.List[torch.Tensor]:
        """latents [B, latent_dim, N / time_downsampling] -> pyramid (see :class:`LatentUpsampler`).

        Compute it once per decode and reuse it for every sampling step."""
        return self.upsampler(latents)

    def _check(self, x: torch.Tensor, c_noise: torch.Tensor, pyramid: tp.Sequence[torch.Tensor]) -> None:
        _check_spectrogram(x, self.in_channels, self.frequency_bins, self.time_downsampling)
        assert c_noise.numel() == x.shape[0], \
            f"c_noise must hold one noise level per example ({x.shape[0]}), got shape {list(c_noise.shape)}"
        assert len(pyramid) == self.plan.levels, \
            f"the pyramid must have one map per level ({self.plan.levels}), got {len(pyramid)}: " \
            "build it with decoder.prepare(latents)"
        assert pyramid[0].shape[-1] == x.shape[-1] and pyramid[0].shape[0] == x.shape[0], \
            f"the pyramid was built for {pyramid[0].shape[0]} examples of {pyramid[0].shape[-1]} frames, " \
            f"x_noisy has {x.shape[0]} of {x.shape[-1]}"

    def forward(self, x_noisy: torch.Tensor, c_noise: torch.Tensor,
                pyramid: tp.Sequence[torch.Tensor]) -> torch.Tensor:
        """x_noisy [B, in_channels, F, N], c_noise [B], pyramid from :meth:`prepare` -> [B, in_channels, F, N]."""
        self._check(x_noisy, c_noise, pyramid)
        emb = self.noise_embedding(c_noise)
        h = self.conv_in(x_noisy)
        skips: tp.List[torch.Tensor] = []
        for level, stage in enumerate(self.down):
            if self.frequency_scalings is not None:
                h = self.frequency_scalings[level](h, emb)
            gains = self.down_gains[level]
            for i, (block, attention) in enumerate(zip(stage.blocks, stage.attentions)):
                h = attention(block(torch.addcmul(h, pyramid[level], gains[i]), emb))
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        for level in reversed(range(self.plan.levels)):
            stage, gains = self.up[level], self.up_gains[level]
            for i, (block, attention) in enumerate(zip(stage.blocks, stage.attentions)):
                merged = torch.addcmul((h + skips.pop()) * math.sqrt(0.5), pyramid[level], gains[i])
                h = attention(block(merged, emb))
            if level > 0:
                h = self.upsamples[level - 1](h)
        h = F.silu(self.norm_out(h))
        if self.scaling_out is not None:
            h = self.scaling_out(h, emb)
        return self.conv_out(h)


#: Keyword arguments of the encoder and the decoder for each size. ``reference`` follows Music2Latent's
#: published hyperparameters (44.1 kHz, hop 512, 1024 bins; about 58 M parameters in total). Its
#: transposed-conv upsampling has fewer weights than interpolation + conv; rank-3 frequency scaling
#: brings the total back to the reference size at no measurable cost (the gains are per example).
PRESETS: tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]] = {
    'reference': {
        'encoder': dict(frequency_bins=1024, base_channels=64, multipliers=(1, 2, 4, 4, 4),
                        freq_downsample=(True, False, False, False), freq_only_factor=4, layers_per_level=1,
                        attention_levels=(False, False, True, True, True), heads=4, bottleneck_channels=512,
                        bottleneck_layers=4, latent_dim=64),
        'decoder': dict(frequency_bins=1024, base_channels=64, multipliers=(1, 2, 4, 4, 4),
                        freq_downsample=(True, False, False, False), freq_only_factor=4, layers_per_level=2,
                        attention_levels=(False, False, True, True, True), heads=4, emb_dim=256,
                        frequency_scaling=True, frequency_scaling_rank=3, latent_dim=64, bottleneck_channels=512,
                        bottleneck_layers=4, upsampler_layers_per_level=1),
    },
    'debug': {
        'encoder': dict(frequency_bins=64, base_channels=16, multipliers=(1, 2, 2, 2),
                        freq_downsample=(False, False, False), layers_per_level=1,
                        attention_levels=(False, False, True, True), heads=2, bottleneck_channels=64,
                        bottleneck_layers=1, latent_dim=8),
        'decoder': dict(frequency_bins=64, base_channels=16, multipliers=(1, 2, 2, 2),
                        freq_downsample=(False, False, False), layers_per_level=1,
                        attention_levels=(False, False, True, True), heads=2, emb_dim=32,
                        frequency_scaling=True, latent_dim=8, bottleneck_channels=64, bottleneck_layers=1,
                        upsampler_layers_per_level=1),
    },
}
REFERENCE = 'reference'


def consistency_net_kwargs(name: str = REFERENCE) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """Copies of the preset's keyword arguments: ``{'encoder': {...}, 'decoder': {...}}``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown consistency net preset {name!r}: choose one of {sorted(PRESETS)}.")
    return {part: dict(kwargs) for part, kwargs in PRESETS[name].items()}


def build_consistency_nets(name: str = REFERENCE, encoder_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None,
                           decoder_kwargs: tp.Optional[tp.Dict[str, tp.Any]] = None, **shared: tp.Any
                           ) -> tp.Tuple[ConsistencyEncoder, ConsistencyDecoder]:
    """Encoder and decoder of a preset. `shared` overrides (level plan, ``latent_dim``, bottleneck,
    e.g. ``frequency_bins=...``) apply to both; `encoder_kwargs` / `decoder_kwargs` to one only."""
    kwargs = consistency_net_kwargs(name)
    return (ConsistencyEncoder(**{**kwargs['encoder'], **shared, **(encoder_kwargs or {})}),
            ConsistencyDecoder(**{**kwargs['decoder'], **shared, **(decoder_kwargs or {})}))
