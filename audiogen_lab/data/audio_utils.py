"""Waveform conversions: channel count, sample rate (julius) and loudness normalisation.

Waveforms are `[..., C, T]`. Conversions compute in float32 with autocast disabled and return the
input's floating dtype.
"""
import functools
import typing as tp

import julius
import torch


def convert_audio_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert `[..., C, T]` to `[..., channels, T]`.

    Mono to many channels repeats the signal; many channels to mono takes the mean. Other changes
    (e.g. 6 -> 2 channels) have no single right answer and raise a ValueError.
    """
    if wav.dim() < 2:
        raise ValueError(f"Expected a waveform [..., C, T], got shape {tuple(wav.shape)}.")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}.")
    src = wav.shape[-2]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if src == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).contiguous()
    raise ValueError(f"Cannot convert audio with {src} channels to {channels} channels: only mono <-> "
                     f"multi-channel conversions are defined. Downmix the files or set channels to 1 or {src}.")


@functools.lru_cache(maxsize=32)
def _resampler(old_sr: int, new_sr: int, device: str) -> julius.ResampleFrac:
    # Building the windowed-sinc kernel dominates the cost of a short resampling: keep it.
    return julius.ResampleFrac(old_sr, new_sr).to(device)


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample `[..., T]` from `from_rate` to `to_rate` Hz with julius (band-limited sinc).

    The output has `floor(T * to_rate / from_rate)` frames.
    """
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"Sample rates must be positive, got {from_rate} -> {to_rate}.")
    if from_rate == to_rate:
        return wav
    dtype = wav.dtype if wav.is_floating_point() else torch.float32
    with torch.autocast(device_type=wav.device.type, enabled=False):
        out = _resampler(from_rate, to_rate, str(wav.device))(wav.float())
    return out.to(dtype)


def convert_audio(wav: torch.Tensor, from_rate: int, to_rate: int, to_channels: int) -> torch.Tensor:
    """Convert `[..., C, T]` at `from_rate` Hz to `[..., to_channels, T']` at `to_rate` Hz."""
    if to_channels < wav.shape[-2]:
        # Downmix first: fewer channels to resample.
        return resample(convert_audio_channels(wav, to_channels), from_rate, to_rate)
    return convert_audio_channels(resample(wav, from_rate, to_rate), to_channels)


def peak_normalize(wav: torch.Tensor, peak: float = 0.99, eps: float = 1e-8) -> torch.Tensor:
    """Scale `[..., C, T]` so that the peak absolute value over channels and time is `peak`.

    Near-silent inputs (peak below `eps`) are returned unchanged.
    """
    max_abs = wav.detach().abs().amax(dim=(-2, -1), keepdim=True).float()
    gain = torch.where(max_abs > eps, peak / max_abs.clamp_min(eps), torch.ones_like(max_abs))
    return wav * gain.to(wav.dtype)


def rms_normalize(wav: torch.Tensor, target_db: float = -20., max_peak: tp.Optional[float] = 1.,
                  eps: float = 1e-8) -> torch.Tensor:
    """Scale `[..., C, T]` to an RMS of `target_db` dBFS, then limit the peak to `max_peak` if given.

    Near-silent inputs (RMS below `eps`) are returned unchanged.
    """
    with torch.autocast(device_type=wav.device.type, enabled=False):
        rms = wav.detach().float().pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
        gain = torch.where(rms > eps, 10 ** (target_db / 20) / rms.clamp_min(eps), torch.ones_like(rms))
        out = wav.float() * gain
        if max_peak is not None:
            max_abs = out.detach().abs().amax(dim=(-2, -1), keepdim=True)
            out = out * torch.where(max_abs > max_peak, max_peak / max_abs.clamp_min(eps), torch.ones_like(max_abs))
    return out.to(wav.dtype)
