"""Long audio in cross-faded chunks: no seam at the joins, exact for a causal model with enough context."""
from __future__ import annotations

import typing as tp

import pytest
import torch

from audiogen_lab.models.chunked import (chunk_starts, cross_fade, decode_long, encode_long, fade_in,
                                         reconstruct_long)
from tests.models.test_encodec import SAMPLE_RATE, _audio, _initialised, _tiny_model

CHUNK = 0.5  # seconds: 400 samples, 50 frames


def _offline(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        codes, scale = model.encode(x)
        return model.decode(codes, scale)[..., :x.shape[-1]]


def _joins(length: int, overlap: int) -> tp.List[int]:
    """The sample where each chunk after the first has fully taken over: the end of its fade."""
    return [start + overlap for start in chunk_starts(length, int(CHUNK * SAMPLE_RATE), overlap)[1:]]


def _click(y: torch.Tensor, reference: torch.Tensor, start: int, stop: int) -> float:
    """The largest jump between consecutive samples of `y` [B, C, T] over [start, stop), relative to
    the largest one of `reference` (the offline reconstruction, same content) there; a click raises it
    above 1. Averaged over the batch."""
    def peak(z: torch.Tensor) -> torch.Tensor:
        return (z[..., start + 1:stop] - z[..., start:stop - 1]).abs().amax(dim=(-2, -1))
    return (peak(y) / peak(reference)).mean().item()


def _seams_and_interior(y: torch.Tensor, reference: torch.Tensor, overlap: int, fade: int, margin: int = 4,
                        seed: int = 0) -> tp.Tuple[tp.List[float], tp.List[float]]:
    """:func:`_click` over each fade (with `margin` samples on both sides; the cut itself without
    fade), and over windows of the same length at 100 random positions at least 50 samples away."""
    length = y.shape[-1]
    joins = _joins(length, overlap)
    span = fade + 2 * margin
    seams = [_click(y, reference, join - fade - margin, join + margin) for join in joins]
    gen = torch.Generator().manual_seed(seed)
    interior: tp.List[float] = []
    while len(interior) < 100:
        start = int(torch.randint(1, length - span - 1, (1,), generator=gen))
        if all(start + span + 50 <= join - fade - margin or start >= join + margin + 50 for join in joins):
            interior.append(_click(y, reference, start, start + span))
    return seams, interior


def test_cross_fade_hides_the_seams_of_a_non_causal_model():
    torch.manual_seed(0)
    model = _initialised(_tiny_model(causal=False, lstm=1))
    x = _audio(batch=2, seconds=4., seed=7)
    offline = _offline(model, x)
    faded = reconstruct_long(model, x, chunk_seconds=CHUNK, overlap_seconds=0.1)  # an 80-sample Hann fade
    cut = reconstruct_long(model, x, chunk_seconds=CHUNK, overlap_seconds=0.)
    assert faded.shape == cut.shape == x.shape

    seams, interior = _seams_and_interior(faded, offline, overlap=80, fade=80)
    assert len(seams) >= 8
    assert max(seams) <= 1.1 * max(interior), (seams, max(interior))
    cut_seams, cut_interior = _seams_and_interior(cut, offline, overlap=0, fade=0)
    assert min(cut_seams) > 1.3 * max(cut_interior), (cut_seams, max(cut_interior))

    # the cross-fade also brings the joins close to the offline reconstruction, which the cut does not
    def error_at_joins(y: torch.Tensor, overlap: int) -> float:
        return max((y - offline)[..., j - 8:j + 8].abs().mean().item() for j in _joins(x.shape[-1], overlap))
    assert error_at_joins(faded, 80) < 0.1 * error_at_joins(cut, 0)


def test_causal_model_with_enough_context_equals_offline():
    torch.manual_seed(0)
    model = _initialised(_tiny_model(causal=True, lstm=0))
    x = _audio(batch=2, seconds=2.03, seed=8)  # not a whole number of frames
    offline = _offline(model, x)
    chunked = encode_long(model, x, chunk_seconds=CHUNK, overlap_seconds=0.4, fade_seconds=0.1)
    assert chunked.overlap == 320 and chunked.fade == 80 and chunked.starts[:3] == [0, 80, 160]
    assert len(chunked.codes) == len(chunked.starts) and chunked.codes[0].shape == (2, 3, 50)
    torch.testing.assert_close(decode_long(model, chunked, window='linear'), offline, rtol=0, atol=1e-5)
    # without that context the chunks' first frames differ from offline
    no_context = reconstruct_long(model, x, chunk_seconds=CHUNK, overlap_seconds=0.1)
    assert (no_context - offline).abs().max() > 1e-3


def test_renormalising_model_uses_one_scale():
    torch.manual_seed(0)
    model = _initialised(_tiny_model(renormalize=True))
    x = _audio(batch=2, seconds=1.5, seed=9)
    chunked = encode_long(model, x, chunk_seconds=CHUNK, overlap_seconds=0.1)
    torch.testing.assert_close(chunked.scale, model.encode(x)[1])
    torch.testing.assert_close(reconstruct_long(model, 3 * x, CHUNK, 0.1), 3 * decode_long(model, chunked),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('window', ['hann', 'linear'])
def test_fades_sum_to_one_and_join_constant_pieces(window):
    ramp = fade_in(16, window)
    torch.testing.assert_close(ramp + ramp.flip(0), torch.ones(16))
    assert ramp[0] < 0.05 and ramp[-1] > 0.95 and bool((ramp[1:] > ramp[:-1]).all())
    starts = chunk_starts(100, 40, 12)
    assert starts == [0, 28, 56, 84]
    pieces = [torch.full((1, 1, min(40, 100 - s)), 2.) for s in starts]
    torch.testing.assert_close(cross_fade(pieces, starts, 100, 12, 8, window), torch.full((1, 1, 100), 2.))


def test_plan_errors():
    model = _tiny_model()
    x = torch.zeros(1, 1, 800)
    with pytest.raises(ValueError, match='shorter than chunk_seconds'):
        encode_long(model, x, chunk_seconds=0.1, overlap_seconds=0.1)
    with pytest.raises(ValueError, match='fade_seconds'):
        encode_long(model, x, chunk_seconds=0.5, overlap_seconds=0.1, fade_seconds=0.2)
    with pytest.raises(ValueError, match='window'):
        reconstruct_long(model, x, chunk_seconds=0.5, overlap_seconds=0.1, window='kaiser')
