"""Training augmentations of variable-length batches: spectrogram masking, time stretch, random crop.

Spectrogram augmentations take normalised log-mel spectrograms ``spec [B, F, T]`` with valid frame
lengths ``lengths [B]`` (long); frames at or past an item's length are padding and hold the fill value
``FILL_VALUE`` (0.0, as produced by `LogMelFrontend`). Every augmentation keeps that invariant: padding
frames come out equal to the fill value, whatever the mask value. The modules act only in training mode
(``module.train()``) and are the identity in eval mode.

Randomness comes from torch's global generator (or an optional `torch.Generator` where a `generator`
argument exists), so seeding the trainer makes the augmentations reproducible.
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from ..data.batch import lengths_to_mask

FILL_VALUE = 0.0


def _check_spec(spec: torch.Tensor, lengths: torch.Tensor) -> None:
    if spec.dim() != 3:
        raise ValueError(f"Expected spectrograms [B, F, T], got shape {tuple(spec.shape)}.")
    if lengths.shape != spec.shape[:1]:
        raise ValueError(f"lengths must be [B] with B={spec.shape[0]}, got shape {tuple(lengths.shape)}.")
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > spec.shape[-1]):
        raise ValueError(f"lengths must lie in [0, T={spec.shape[-1]}], got {lengths.tolist()}.")


def _rand(size: int, generator: tp.Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float64 draws ``[size]`` on `device`, from `generator` (any device) or the global one."""
    rng_device = generator.device if generator is not None else device
    return torch.rand(size, generator=generator, device=rng_device, dtype=torch.float64).to(device)


def _fill_padding(spec: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Set the frames past each item's length to the fill value."""
    valid = lengths_to_mask(lengths.to(spec.device), spec.shape[-1])  # [B, T]
    return spec.masked_fill(~valid[:, None, :], FILL_VALUE)


class SpecAugment(nn.Module):
    """SpecAugment masking (Park et al., 2019) of ``spec [B, F, T]`` with valid lengths ``[B]``.

    Each item gets its own masks: `num_freq_masks` bands of ``w ~ U{0, ..., freq_mask_param - 1}`` mel bins
    (torchaudio's `FrequencyMasking` with iid masks) and `num_time_masks` spans of
    ``w ~ U{0, ..., min(time_mask_param, length)}`` frames placed inside the item's valid frames; masked
    cells take `mask_value`. Masks may overlap. Padding frames stay at the fill value. Identity in eval mode.

    Args:
        freq_mask_param: frequency masks are narrower than this many bins.
        time_mask_param: maximum width of a time mask, in frames.
        num_freq_masks: frequency masks per item.
        num_time_masks: time masks per item.
        mask_value: value written in the masked cells.
    """

    def __init__(self, freq_mask_param: int = 8, time_mask_param: int = 20, num_freq_masks: int = 2,
                 num_time_masks: int = 2, mask_value: float = 0.0) -> None:
        super().__init__()
        for name, value in [('freq_mask_param', freq_mask_param), ('time_mask_param', time_mask_param),
                            ('num_freq_masks', num_freq_masks), ('num_time_masks', num_time_masks)]:
            if value < 0:
                raise ValueError(f"SpecAugment: {name} must be >= 0, got {value}.")
        self.time_mask_param = time_mask_param
        self.num_freq_masks = num_freq_masks
        self.num_time_masks = num_time_masks
        self.mask_value = float(mask_value)
        self.freq_masking = torchaudio.transforms.FrequencyMasking(freq_mask_param, iid_masks=True)

    def time_masks(self, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Bool mask ``[B, num_frames]``: the union of `num_time_masks` random spans inside each item's length."""
        device = lengths.device
        frames = torch.arange(num_frames, device=device)
        masked = torch.zeros(len(lengths), num_frames, dtype=torch.bool, device=device)
        max_width = lengths.clamp(max=self.time_mask_param)
        for _ in range(self.num_time_masks):
            width = (_rand(len(lengths), None, device) * (max_width + 1)).long().clamp(max=max_width)
            start = (_rand(len(lengths), None, device) * (lengths - width + 1)).long().clamp(max=lengths - width)
            masked |= (frames >= start[:, None]) & (frames < (start + width)[:, None])
        return masked

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Masked copy of `spec` ``[B, F, T]`` (same shape and dtype); `spec` itself in eval mode."""
        _check_spec(spec, lengths)
        if not self.training:
            return spec
        lengths = lengths.to(spec.device)
        for _ in range(self.num_freq_masks):
            spec = self.freq_masking(spec, self.mask_value)
        if self.num_time_masks:
            spec = spec.masked_fill(self.time_masks(lengths, spec.shape[-1])[:, None, :], self.mask_value)
        return _fill_padding(spec, lengths)


def time_stretch(spec: torch.Tensor, lengths: torch.Tensor, rates: torch.Tensor
                 ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Resample the valid frames of each item along time by its rate (linear interpolation).

    Item ``b`` keeps its ``lengths[b]`` valid frames resampled to ``max(1, round(lengths[b] / rates[b]))``
    frames (0 stays 0): a rate above 1 plays faster and gives fewer frames. Items are re-padded with the
    fill value to the longest new length.

    Args:
        spec: spectrograms ``[B, F, T]``.
        lengths: valid frames ``[B]`` (long).
        rates: positive stretch rates ``[B]``; a rate of exactly 1 leaves the item unchanged.
    Returns:
        ``(spec [B, F, T'], lengths [B])`` with ``T' = max(new lengths)``.
    """
    _check_spec(spec, lengths)
    if rates.shape != lengths.shape or bool((rates <= 0).any()):
        raise ValueError(f"rates must be positive and [B] with B={len(lengths)}, got {rates.tolist()}.")
    old = lengths.tolist()
    new = [0 if n == 0 else max(1, round(n / float(r))) for n, r in zip(old, rates.tolist())]
    out = spec.new_full((spec.shape[0], spec.shape[1], max(new, default=0)), FILL_VALUE)
    for b, (n, m, rate) in enumerate(zip(old, new, rates.tolist())):
        if n == 0:
            continue
        valid = spec[b, :, :n]
        if rate != 1.0:
            valid = F.interpolate(valid[None], size=m, mode='linear', align_corners=False)[0]
        out[b, :, :m] = valid
    return out, torch.tensor(new, dtype=lengths.dtype, device=lengths.device)


class RandomTimeStretch(nn.Module):
    """Random time stretch of ``spec [B, F, T]`` with valid lengths ``[B]``: see `time_stretch`.

    With probability `prob`, an item is stretched by a rate drawn log-uniformly in ``[min_rate, max_rate]``
    (so that speeding up and slowing down by the same factor are equally likely when the range is
    symmetric); otherwise it is left unchanged. Identity in eval mode.

    Args:
        min_rate, max_rate: range of the rates (> 0); a rate above 1 gives fewer frames.
        prob: probability that an item is stretched.
    """

    def __init__(self, min_rate: float = 0.8, max_rate: float = 1.25, prob: float = 1.0) -> None:
        super().__init__()
        if not 0 < min_rate <= max_rate:
            raise ValueError(f"RandomTimeStretch needs 0 < min_rate <= max_rate, got {min_rate} and {max_rate}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomTimeStretch: prob must lie in [0, 1], got {prob}.")
        self.min_rate, self.max_rate, self.prob = float(min_rate), float(max_rate), float(prob)

    def sample_rates(self, batch: int, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
        """Rates ``[B]`` (float64, CPU): log-uniform in the range, 1.0 for the items left unchanged."""
        low, high = math.log(self.min_rate), math.log(self.max_rate)
        rates = torch.exp(low + (high - low) * _rand(batch, generator, torch.device('cpu')))
        keep = _rand(batch, generator, torch.device('cpu')) >= self.prob
        return rates.masked_fill(keep, 1.0)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor, generator: tp.Optional[torch.Generator] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """``(spec [B, F, T'], lengths [B])`` stretched; the inputs unchanged in eval mode."""
        _check_spec(spec, lengths)
        if not self.training:
            return spec, lengths
        return time_stretch(spec, lengths, self.sample_rates(spec.shape[0], generator))


def random_crop(wave: torch.Tensor, lengths: torch.Tensor, min_ratio: float,
                generator: tp.Optional[torch.Generator] = None) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous crop of each item's valid samples, left-aligned and zero-padded.

    Item ``b`` keeps ``n`` consecutive samples of its ``lengths[b]`` valid ones, with ``n`` uniform among
    the integers in ``[ceil(min_ratio * lengths[b]), lengths[b]]`` (at least 1 for a non-empty item) and
    the start uniform among the positions where the crop fits.

    Args:
        wave: audio ``[B, C, T]`` (or any ``[B, C, T]`` signal).
        lengths: valid samples ``[B]`` (long).
        min_ratio: smallest kept fraction of an item, in (0, 1].
        generator: random generator (any device); torch's global one when None.
    Returns:
        ``(wave [B, C, T'], lengths [B])`` with ``T' = max(new lengths)``.
    """
    if wave.dim() != 3:
        raise ValueError(f"random_crop takes audio [B, C, T], got shape {tuple(wave.shape)}.")
    if lengths.shape != wave.shape[:1]:
        raise ValueError(f"lengths must be [B] with B={wave.shape[0]}, got shape {tuple(lengths.shape)}.")
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > wave.shape[-1]):
        raise ValueError(f"lengths must lie in [0, T={wave.shape[-1]}], got {lengths.tolist()}.")
    if not 0.0 < min_ratio <= 1.0:
        raise ValueError(f"random_crop: min_ratio must lie in (0, 1], got {min_ratio}.")
    device = wave.device
    lengths = lengths.to(device)
    shortest = torch.ceil(lengths.double() * min_ratio - 1e-9).long().clamp(min=1)
    shortest = torch.minimum(shortest, lengths)
    new = shortest + (_rand(len(lengths), generator, device) * (lengths - shortest + 1)).long()
    new = torch.minimum(new, lengths)
    start = (_rand(len(lengths), generator, device) * (lengths - new + 1)).long()
    start = torch.minimum(start, lengths - new)
    out_len = int(new.max()) if new.numel() else 0
    positions = torch.arange(out_len, device=device)
    index = (start[:, None] + positions).clamp(max=max(wave.shape[-1] - 1, 0))  # [B, T']
    cropped = wave.gather(-1, index[:, None, :].expand(-1, wave.shape[1], -1))
    valid = positions < new[:, None]
    return cropped.masked_fill(~valid[:, None, :], 0.0), new
