"""Meta's released EnCodec models as our :class:`EncodecModel`: checkpoint conversion and the
segmented coding of the 48 kHz model.

The checkpoint files of the ``encodec`` package (``encodec_24khz-d7cc33bc.th``,
``encodec_48khz-7e698e3e.th``) hold the state dict of the package's model. Its layers line up one to
one with ours (SEANet built from ``config/model/encodec/meta_{24,48}khz.yaml``); only these names and
layouts differ:

==========================================================  ===================================================
package                                                     ours
==========================================================  ===================================================
``<conv>.weight_g`` / ``<conv>.weight_v`` (weight norm)     ``<conv>.parametrizations.weight.original0`` / ``1``
``quantizer.vq.layers.<k>._codebook.embed`` [N, D]          same name, [1, N, D] (vector-quantize-pytorch)
``..._codebook.embed_avg`` [N, D], ``cluster_size`` [N]     same names, [1, N, D] and [1, N]
``..._codebook.inited`` float [1]                           ``..._codebook.initted`` bool []
==========================================================  ===================================================

``embed_avg`` and ``cluster_size`` keep their meaning (EMA of the assigned vectors' sum and of the
counts, codeword = ``embed_avg`` / Laplace-smoothed count in both libraries), so fine-tuning continues
the codebooks' moving averages; ``initted`` is set, so k-means never runs again.

The 48 kHz package model codes audio in 1 s segments with 1 % overlap, each divided by its own RMS,
and decodes by cross-fading the segments. Our model codes a whole clip with one RMS (and its time
group norms see the whole clip): on clips of at most 0.99 s (47,520 samples: one segment) both are the
same computation, which is also what training on 1 s segments does. For longer audio,
:func:`encode_segmented` / :func:`decode_segmented` reproduce the package's segmented stream (codes
with 150 frames per segment, one scale per segment); ``model.encode`` / ``encode_chunked`` instead give
one seamless stream at 150 Hz with a single scale, which the package never produces.
"""
from __future__ import annotations

import math
import re
import typing as tp

import torch

from .compression import CompressionModel, EncodeResult

StateDict = tp.Dict[str, torch.Tensor]

_WEIGHT_NORM = re.compile(r'^(?P<prefix>.+)\.weight_(?P<part>[gv])$')
_CODEBOOK = re.compile(r'^(?P<prefix>quantizer\.vq\.layers\.\d+\._codebook)\.(?P<buffer>inited|embed|embed_avg|'
                       r'cluster_size)$')


def convert_encodec_state_dict(state: tp.Mapping[str, torch.Tensor]) -> StateDict:
    """State dict of an ``encodec`` package ``EncodecModel`` -> state dict of our EncodecModel built from
    the matching ``meta_*`` config (see the table in the module docstring). Tensors are copied."""
    converted: StateDict = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"entry {key!r} is a {type(value).__name__}, not a tensor: not an EnCodec state dict.")
        weight_norm = _WEIGHT_NORM.match(key)
        codebook = _CODEBOOK.match(key)
        if weight_norm:
            index = 0 if weight_norm['part'] == 'g' else 1
            converted[f"{weight_norm['prefix']}.parametrizations.weight.original{index}"] = value.clone()
        elif codebook and codebook['buffer'] == 'inited':
            converted[f"{codebook['prefix']}.initted"] = torch.tensor(bool(value.flatten()[0]))
        elif codebook:
            converted[key] = value.unsqueeze(0).clone()  # one codebook head
        else:
            converted[key] = value.clone()
    return converted


# -- the package's 1 s segments ------------------------------------------------------------------------

def _segment_plan(sample_rate: int, segment: float, overlap: float) -> tp.Tuple[int, int]:
    """(segment length, stride) in samples."""
    assert segment > 0 and 0 <= overlap < 1, f"segment must be > 0 and overlap in [0, 1), got {segment}, {overlap}"
    length = int(segment * sample_rate)
    return length, max(1, int((1 - overlap) * length))


def encode_segmented(model: CompressionModel, x: torch.Tensor, segment: float = 1.,
                     overlap: float = 0.01) -> EncodeResult:
    """Code `x` [B, C, T] in segments of `segment` seconds starting every ``(1 - overlap) * segment``
    seconds, each encoded on its own (with its own scale), as the ``encodec`` package does for its
    48 kHz model.

    Returns codes [B, K, T'], the segments' codes concatenated along time (``ceil(segment * rate / hop)``
    frames per full segment, the last may be shorter), and scale [B, S] (one per segment) when the
    model renormalises, else None.
    """
    assert x.dim() == 3, f"expected audio [B, C, T], got shape {tuple(x.shape)}"
    length, stride = _segment_plan(model.sample_rate, segment, overlap)
    pieces = [model.encode(x[..., start:start + length]) for start in range(0, x.shape[-1], stride)]
    codes = torch.cat([piece_codes for piece_codes, _ in pieces], dim=-1)
    scales = [piece_scale for _, piece_scale in pieces]
    return codes, None if scales[0] is None else torch.cat(scales, dim=1)


def _cross_fade(pieces: tp.Sequence[torch.Tensor], stride: int) -> torch.Tensor:
    """Overlap-add pieces [..., L_i] placed every `stride` samples, each weighted by a triangle that
    peaks at the middle of a full piece; the weights are normalised to sum to one everywhere."""
    full = pieces[0].shape[-1]
    position = torch.arange(1, full + 1, device=pieces[0].device, dtype=pieces[0].dtype) / (full + 1)
    window = 0.5 - (position - 0.5).abs()
    total = stride * (len(pieces) - 1) + pieces[-1].shape[-1]
    out = pieces[0].new_zeros(*pieces[0].shape[:-1], total)
    weight = pieces[0].new_zeros(total)
    for index, piece in enumerate(pieces):
        start, size = index * stride, piece.shape[-1]
        out[..., start:start + size] += window[:size] * piece
        weight[start:start + size] += window[:size]
    return out / weight


def decode_segmented(model: CompressionModel, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None,
                     segment: float = 1., overlap: float = 0.01) -> torch.Tensor:
    """Decode the output of :func:`encode_segmented`: codes [B, K, T'] (+ scale [B, S]) -> audio
    [B, C, T''], the segments decoded one by one, rescaled and cross-faded where they overlap. The audio
    can be a little longer than the encoded one (whole frames): trim it to the original length."""
    assert codes.dim() == 3, f"expected codes [B, K, T], got shape {tuple(codes.shape)}"
    length, stride = _segment_plan(model.sample_rate, segment, overlap)
    segments = torch.split(codes, math.ceil(length / model.hop_length), dim=-1)
    if scale is None:
        scales: tp.List[tp.Optional[torch.Tensor]] = [None] * len(segments)
    else:
        assert scale.shape == (codes.shape[0], len(segments)), \
            f"expected scale [B, {len(segments)}] (one per segment), got {tuple(scale.shape)}"
        scales = list(scale.split(1, dim=1))
    return _cross_fade([model.decode(seg, seg_scale) for seg, seg_scale in zip(segments, scales)], stride)
