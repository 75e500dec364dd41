"""Seams in audio assembled from separately decoded pieces: is the audio around a join any more abrupt
than elsewhere?

The measure is spectral flux, the change of the magnitude spectrum from one short-time frame to the next
relative to the magnitude there (so that loud bins count most and noisy quiet bins do not drown a change):
a click, a phase break or a jump of level or timbre where two pieces meet raises it there. A
generative decoder makes its own phase, so a seam cannot be read off a sample-by-sample comparison with
a reference; the flux of the joined audio is compared with its own flux away from the joins instead.
"""
from __future__ import annotations

import typing as tp

import torch


@torch.no_grad()
def spectral_flux(audio: torch.Tensor, n_fft: int = 512, hop_length: int = 128,
                  floor: float = 1e-5) -> torch.Tensor:
    """Relative change of the magnitude spectrum between consecutive STFT frames (Hann window, centred
    frames), `sum_f |M[f, t + 1] - M[f, t]| / sum_f (M[f, t + 1] + M[f, t])` in [0, 1], averaged over
    channels, in float32.

    Args:
        audio: `[B, C, T]`.
        n_fft, hop_length: the STFT (frame `t` is centred on sample `t * hop_length`).
        floor: added to the denominator (silence does not count as change).
    Returns:
        `[B, N - 1]`: entry `t` is the change from frame `t` to frame `t + 1`, centred on sample
        `(t + 0.5) * hop_length`.
    """
    assert audio.dim() == 3, f"Expected audio [B, C, T], got shape {tuple(audio.shape)}."
    flat = audio.float().reshape(-1, audio.shape[-1])
    spec = torch.stft(flat, n_fft, hop_length, window=torch.hann_window(n_fft, device=audio.device),
                      return_complex=True)
    mag = spec.abs()  # [B * C, F, N]
    flux = (mag[..., 1:] - mag[..., :-1]).abs().sum(1) / ((mag[..., 1:] + mag[..., :-1]).sum(1) + floor)
    return flux.reshape(audio.shape[0], audio.shape[1], -1).mean(1)


@torch.no_grad()
def join_flux_ratio(audio: torch.Tensor, regions: tp.Sequence[tp.Tuple[int, int]], n_fft: int = 512,
                    hop_length: int = 128) -> float:
    """Spectral flux where pieces meet over the flux elsewhere: about 1 when the joins are seamless.

    Args:
        audio: `[B, C, T]`.
        regions: `(begin, end)` sample ranges where pieces meet (a cross-fade, or a few samples around a
            cut). Flux values within `n_fft` samples of a region count as at the join; those farther away
            as elsewhere.
        n_fft, hop_length: the STFT of :func:`spectral_flux`.
    """
    assert regions, "Give at least one join region."
    flux = spectral_flux(audio, n_fft, hop_length)
    centres = (torch.arange(flux.shape[-1], device=flux.device, dtype=torch.float64) + 0.5) * hop_length
    distance = torch.full_like(centres, float('inf'))
    for begin, end in regions:
        assert 0 <= begin <= end <= audio.shape[-1], f"Region ({begin}, {end}) is outside audio of {audio.shape[-1]}."
        outside = torch.maximum(begin - centres, centres - end).clamp(min=0)
        distance = torch.minimum(distance, outside)
    at_join = distance <= n_fft
    elsewhere = distance > 2 * n_fft
    assert at_join.any() and elsewhere.any(), "The audio is too short to tell the joins from the rest."
    return float(flux[:, at_join].double().mean() / flux[:, elsewhere].double().mean().clamp(min=1e-12))
