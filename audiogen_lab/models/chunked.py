"""Long audio through any compression model in overlapping chunks joined by a cross-fade.

A model that is not causal cannot stream, and coding a long file in one call needs memory for the
whole of it. Here the file is cut into chunks of `chunk_seconds` that overlap their neighbours by
`overlap_seconds`; each chunk is encoded and decoded on its own, and consecutive decoded chunks are
cross-faded (Hann or linear ramps that sum to one) over the last `fade_seconds` of their overlap,
where the chunk before is about to end and the chunk after has already seen ``overlap - fade`` of
context. The cross-fade hides the edge effects of each chunk, so the joins leave no click.

Compared with :meth:`CompressionModel.encode_chunked`, which keeps one contiguous code stream of
``ceil(T / hop)`` frames (for language models), the codes here repeat the overlapping frames (about
``overlap / (chunk - overlap)`` more), as the 48 kHz EnCodec does, and the audio is blended.

With a causal model whose receptive field (encoder and decoder together) is at most ``overlap - fade``
samples, the result equals the offline reconstruction (up to float rounding): the chunk before a join
needs no future samples and the chunk after has its whole context before its fade starts. An LSTM's
memory is unbounded, so with one this holds only approximately. A causal model can also stream
exactly, with no overlap at all: see :meth:`CompressionModel.streaming`.
"""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass

import torch

from .compression import CompressionModel

WINDOWS = ('hann', 'linear')


@dataclass
class ChunkedCodes:
    """The output of :func:`encode_long`, what :func:`decode_long` needs to rebuild the audio.

    Attributes:
        codes: one tensor per chunk, codes [B, K, F_i] (latents [B, D, F_i] for continuous models), with
            ``F_i = ceil(L_i / hop)`` for a chunk of ``L_i = min(chunk, length - start_i)`` samples.
        starts: first sample of each chunk in the audio (multiples of the hop).
        length: samples T of the encoded audio.
        chunk: samples per chunk (a multiple of the hop; the last chunk can be shorter).
        overlap: samples shared by consecutive chunks (a multiple of the hop, < chunk).
        fade: samples of the cross-fade at the end of each overlap (<= overlap and <= chunk - overlap).
        scale: [B, 1] from the model's normalisation of the whole audio, or None.
    """
    codes: tp.List[torch.Tensor]
    starts: tp.List[int]
    length: int
    chunk: int
    overlap: int
    fade: int
    scale: tp.Optional[torch.Tensor] = None


def chunk_starts(length: int, chunk: int, overlap: int) -> tp.List[int]:
    """Start samples of chunks of `chunk` samples, each overlapping the previous one by `overlap`, that
    cover [0, length); the last chunk holds more than `overlap` samples of its own."""
    assert 0 <= overlap < chunk, f"overlap must be in [0, chunk), got overlap={overlap}, chunk={chunk}"
    starts = [0]
    while starts[-1] + chunk < length:
        starts.append(starts[-1] + chunk - overlap)
    return starts


def fade_in(fade: int, window: str = 'hann', device: tp.Optional[torch.device] = None) -> torch.Tensor:
    """Ramp [fade] rising from 0 to 1, sampled at the centres of its samples, so that ``fade_in + flip``
    of the complementary fade-out sums to one: 'hann' (raised cosine) or 'linear'."""
    if window not in WINDOWS:
        raise ValueError(f"Unknown cross-fade window {window!r}: choose one of {list(WINDOWS)}.")
    position = (torch.arange(fade, device=device, dtype=torch.float32) + 0.5) / max(fade, 1)
    return position if window == 'linear' else torch.sin(0.5 * math.pi * position) ** 2


def cross_fade(pieces: tp.Sequence[torch.Tensor], starts: tp.Sequence[int], length: int, overlap: int,
               fade: int, window: str = 'hann') -> torch.Tensor:
    """Join overlapping pieces [B, C, L_i] placed at `starts` into audio [B, C, length].

    Piece ``i > 0`` is ignored over the first ``overlap - fade`` samples it shares with piece ``i - 1``
    and faded in over the next `fade`, exactly where piece ``i - 1`` fades out over its last `fade`
    samples; elsewhere one piece alone gives the audio.
    """
    assert len(pieces) == len(starts) >= 1, "one start per piece expected"
    assert 0 <= fade <= overlap, f"fade must be in [0, overlap], got fade={fade}, overlap={overlap}"
    first = pieces[0]
    ramp = fade_in(fade, window, first.device).to(first.dtype)
    out = first.new_zeros(*first.shape[:-1], length)
    total = first.new_zeros(length)
    for index, (piece, start) in enumerate(zip(pieces, starts)):
        size = piece.shape[-1]
        assert start + size <= length, f"piece {index} ({size} samples at {start}) ends after {length}"
        assert index == 0 or size > overlap, f"piece {index} ({size} samples) must outlast the overlap ({overlap})"
        weight = piece.new_ones(size)
        if index > 0:
            weight[:overlap - fade] = 0.
            weight[overlap - fade:overlap] = ramp
        if index < len(pieces) - 1:
            weight[size - fade:] *= 1. - ramp
        out[..., start:start + size] += weight * piece
        total[start:start + size] += weight
    assert bool((total > 0).all()), "the pieces leave gaps: each start must be before the previous piece ends"
    return out / total


def _plan(model: CompressionModel, chunk_seconds: float, overlap_seconds: float,
          fade_seconds: tp.Optional[float]) -> tp.Tuple[int, int, int]:
    """(chunk, overlap, fade) in samples: chunk and overlap rounded to whole frames."""
    hop, rate = model.hop_length, model.sample_rate
    if chunk_seconds <= 0 or overlap_seconds < 0:
        raise ValueError(f"chunk_seconds must be > 0 and overlap_seconds >= 0, got {chunk_seconds}, "
                         f"{overlap_seconds}.")
    chunk = max(1, round(chunk_seconds * rate / hop)) * hop
    overlap = math.ceil(overlap_seconds * rate / hop - 1e-9) * hop
    fade = overlap if fade_seconds is None else round(fade_seconds * rate)
    if not overlap < chunk:
        raise ValueError(f"overlap_seconds ({overlap_seconds}) must be shorter than chunk_seconds ({chunk_seconds}).")
    if not 0 <= fade <= min(overlap, chunk - overlap):
        raise ValueError(f"fade_seconds ({fade_seconds}) must be between 0 and the overlap ({overlap_seconds} s), "
                         f"and at most chunk_seconds - overlap_seconds.")
    return chunk, overlap, fade


@torch.no_grad()
def encode_long(model: CompressionModel, wav: torch.Tensor, chunk_seconds: float = 10.,
                overlap_seconds: float = 1., fade_seconds: tp.Optional[float] = None) -> ChunkedCodes:
    """Encode long audio `wav` [B, C, T] in overlapping chunks (no gradients).

    Args:
        model: any compression model, causal or not.
        wav: audio [B, C, T].
        chunk_seconds: length of each chunk, rounded to whole frames.
        overlap_seconds: audio shared by consecutive chunks, rounded up to whole frames.
        fade_seconds: length of the cross-fade at the end of each overlap (None: the whole overlap).
    Returns:
        the chunks' codes and where they go (see :class:`ChunkedCodes`); the model's normalisation, if
        any, is computed once on the whole audio.
    """
    assert wav.dim() == 3 and wav.shape[1] == model.channels, \
        f"expected audio [B, {model.channels}, T], got shape {tuple(wav.shape)}"
    chunk, overlap, fade = _plan(model, chunk_seconds, overlap_seconds, fade_seconds)
    length = wav.shape[-1]
    wav, scale = model.preprocess(wav)
    starts = chunk_starts(length, chunk, overlap)
    codes = [model.encode_unscaled(wav[..., start:start + chunk]) for start in starts]
    return ChunkedCodes(codes, starts, length, chunk, overlap, fade, scale)


@torch.no_grad()
def decode_long(model: CompressionModel, chunked: ChunkedCodes, window: str = 'hann') -> torch.Tensor:
    """Decode the output of :func:`encode_long` into audio [B, C, T]: each chunk decoded on its own,
    trimmed to its samples, cross-faded with its neighbours with a 'hann' or 'linear' ramp."""
    pieces = []
    for codes, start in zip(chunked.codes, chunked.starts):
        audio = model.decode_unscaled(codes)
        size = min(chunked.chunk, chunked.length - start)
        assert audio.shape[-1] >= size, f"a chunk of {size} samples decoded to only {audio.shape[-1]}"
        pieces.append(audio[..., :size])
    audio = cross_fade(pieces, chunked.starts, chunked.length, chunked.overlap, chunked.fade, window)
    return model.postprocess(audio, chunked.scale)


def reconstruct_long(model: CompressionModel, wav: torch.Tensor, chunk_seconds: float = 10.,
                     overlap_seconds: float = 1., fade_seconds: tp.Optional[float] = None,
                     window: str = 'hann') -> torch.Tensor:
    """Encode then decode long audio `wav` [B, C, T] -> [B, C, T] (see :func:`encode_long`, :func:`decode_long`)."""
    return decode_long(model, encode_long(model, wav, chunk_seconds, overlap_seconds, fade_seconds), window)
