"""Spectral-flux seam measure: about 1 on continuous audio, large where two pieces meet abruptly."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.metrics.seams import join_flux_ratio, spectral_flux

RATE = 16000


def _tone(seconds: float, freq: float = 440.0, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    return torch.sin(2 * math.pi * freq * t + phase).float()


def test_flux_shape_and_zero_for_a_steady_tone():
    audio = _tone(1.0)[None, None].repeat(2, 3, 1)
    flux = spectral_flux(audio, n_fft=512, hop_length=128)
    assert flux.shape == (2, 1 + 16000 // 128 - 1)
    assert float(flux[:, 4:-4].max()) < 0.05  # a steady tone's spectrum does not change (edges aside)


def test_join_ratio_tells_cuts_from_continuous_audio():
    noise = 0.05 * torch.randn(1, 1, 2 * RATE, generator=torch.Generator().manual_seed(0))
    steady = _tone(2.0)[None, None] + noise
    cut = torch.cat([_tone(1.0), _tone(1.0, freq=660.0, phase=2.0)])[None, None] + noise
    region = [(RATE - 8, RATE + 8)]
    assert join_flux_ratio(steady, region) == pytest.approx(1.0, abs=0.15)
    assert join_flux_ratio(cut, region) > 1.6
    # a cross-fade between the two pieces is far smoother than the cut
    fade = torch.linspace(0, 1, 4000)
    faded = steady.clone()[0, 0]
    other = _tone(2.0, freq=660.0, phase=2.0)
    faded[RATE:RATE + 4000] = (1 - fade) * _tone(2.0)[RATE:RATE + 4000] + fade * other[RATE:RATE + 4000]
    faded[RATE + 4000:] = other[RATE + 4000:]
    faded = faded[None, None] + noise
    assert join_flux_ratio(faded, [(RATE, RATE + 4000)]) < 0.6 * join_flux_ratio(cut, region)


def test_regions_must_fit():
    with pytest.raises(AssertionError, match="outside"):
        join_flux_ratio(torch.zeros(1, 1, RATE), [(RATE - 10, RATE + 10)])
