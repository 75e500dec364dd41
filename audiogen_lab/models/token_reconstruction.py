"""Teacher-forced reconstruction metrics of the acoustic AudioLM stages: how far the audio of a stage's
predictions is from the codec's own ceiling.

A coarse or fine stage predicts some RVQ levels of a codec's codes ``[B, K, T]``. Given the true past (the
packed rows of :mod:`.token_sequences`), the stage's argmax at each target position is a code; putting these
codes in place of the true codes of the stage's levels, and keeping the true codes of every other level,
gives *mixed* codes. Decoding them and the true codes with the same codec, and scoring one audio against the
other, measures only what the stage gets wrong: a perfect stage scores like the codec itself (infinite
SI-SNR, zero mel distance), whatever the codec's own quality.

The chance reference (*shuffled*) replaces the stage's levels by the true codes of the same levels at
randomly permuted frames of the same item: the right codes in the wrong order, what a model that knows
each item's code statistics but nothing of their timing would give.

Only each item's real frames are decoded (padding never reaches the codec). Codes are decoded without the
per-item scale some codecs return from ``encode``: SI-SNR ignores it and it cancels in the log-mel difference.
"""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange

from ..metrics.audio import MelDistance, si_snr
from .compression import CompressionModel
from .token_layout import AcousticLayout
from .token_sequences import Sequences

#: options of the :class:`MelDistance` of ``recon_mel`` (32 ms windows, 8 ms hop at 16 kHz)
MEL_OPTIONS: tp.Dict[str, int] = {"n_fft": 512, "hop_length": 128, "win_length": 512, "n_mels": 64}


def check_codec(codec: CompressionModel, num_levels: int, cardinality: int) -> None:
    """Raise when `codec` cannot decode codes ``[B, num_levels, T]`` of `cardinality` codes per level."""
    if getattr(codec, "is_continuous", False):
        raise ValueError("compression_model_checkpoint names a continuous model (latents, not codes): the "
                         "acoustic token stages need a codec with discrete codes.")
    if int(codec.cardinality) != cardinality or int(codec.total_codebooks) < num_levels:
        raise ValueError(f"compression_model_checkpoint holds {codec.total_codebooks} codebooks of "
                         f"{codec.cardinality} codes, but the acoustic shards hold {num_levels} levels of "
                         f"{cardinality} codes: point it at the codec that made the shards.")


def teacher_forced_codes(logits: torch.Tensor, sequences: Sequences, layout: AcousticLayout, offset: int,
                         num_frames: int) -> torch.Tensor:
    """The codes a stage predicts for its own levels from the true past.

    Args:
        logits: ``[B, L, V]`` of the LM on ``sequences.inputs`` (joint vocabulary).
        sequences: the packed rows; the position whose ``target_index`` is ``n >= 0`` predicts the stage's
            frame ``n // K`` at level ``n % K`` (K = ``layout.num_levels``).
        layout: the stage's target layout.
        offset: where the layout's ids start in the joint vocabulary.
        num_frames: T, the frames of the batch's codes.
    Returns:
        Codes ``[B, K, T]`` (long, levels counted within the stage): at each predicted frame and level the
        argmax among that level's codes (so neither EOS nor another level's id can win, as when sampling
        under :meth:`AcousticLayout.logits_mask`), and -1 where nothing is predicted (padding frames).
    """
    levels = layout.num_levels
    rows, positions = (sequences.target_index >= 0).nonzero(as_tuple=True)
    index = sequences.target_index[rows, positions]
    level, frame = index % levels, index // levels
    if frame.numel() and int(frame.max()) >= num_frames:
        raise ValueError(f"The sequences predict frame {int(frame.max())} but the codes hold {num_frames} frames.")
    code_logits = rearrange(logits[rows, positions, offset:offset + layout.num_codes], "m (k c) -> m k c", k=levels)
    chosen = code_logits[torch.arange(index.numel(), device=index.device), level].argmax(dim=-1)
    out = torch.full((logits.shape[0], levels, num_frames), -1, dtype=torch.long, device=logits.device)
    out[rows, level, frame] = chosen
    return out


def mix_levels(codes: torch.Tensor, predicted: torch.Tensor, first_level: int) -> torch.Tensor:
    """True codes ``[B, K_all, T]`` with levels ``first_level .. first_level + K - 1`` replaced by `predicted`
    ``[B, K, T]`` wherever it is not -1. Returns new codes ``[B, K_all, T]``."""
    levels = predicted.shape[1]
    if first_level + levels > codes.shape[1] or predicted.shape[-1] != codes.shape[-1]:
        raise ValueError(f"Predicted codes {tuple(predicted.shape)} from level {first_level} do not fit in codes "
                         f"{tuple(codes.shape)}.")
    mixed = codes.clone().long()
    block = mixed[:, first_level:first_level + levels]
    mixed[:, first_level:first_level + levels] = torch.where(predicted >= 0, predicted, block)
    return mixed


def shuffle_levels(codes: torch.Tensor, lengths: torch.Tensor, first_level: int, num_levels: int,
                   generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """The chance reference: codes ``[B, K_all, T]`` whose levels ``first_level .. first_level + num_levels - 1``
    are moved, frame by frame, along one random permutation of each item's ``lengths[b]`` real frames;
    the other levels and the padding frames are unchanged. Returns new codes ``[B, K_all, T]``."""
    shuffled = codes.clone().long()
    block = slice(first_level, first_level + num_levels)
    for item, length in enumerate(lengths.tolist()):
        order = torch.randperm(int(length), generator=generator).to(codes.device)
        shuffled[item, block, :length] = codes[item, block, order]
    return shuffled


@torch.no_grad()
def score_against_true(codec: CompressionModel, codes: torch.Tensor, lengths: torch.Tensor,
                       variants: tp.Dict[str, torch.Tensor], mel: MelDistance) -> tp.Dict[str, torch.Tensor]:
    """Decode the true codes and each variant over each item's real frames, and score each variant's audio
    against the true codes' audio.

    Args:
        codec: a discrete compression model, ``decode(codes [B, K, T]) -> audio [B, C, T * hop]``.
        codes: ``[B, K, T]`` true codes.
        lengths: ``[B]`` real frames of each item.
        variants: codes ``[B, K, T]`` by name suffix (e.g. ``""``, ``"_shuffled"``).
        mel: the mel distance; items whose audio is too short for its STFT (at most ``n_fft // 2`` samples)
            are not scored.
    Returns:
        ``recon_si_snr{suffix}`` (dB, higher is better) and ``recon_mel{suffix}`` (lower is better), each the
        mean over the scored items; empty when no item is long enough.
    """
    names = list(variants)
    scores: tp.Dict[str, tp.List[torch.Tensor]] = {f"recon_{kind}{name}": [] for name in names
                                                   for kind in ("si_snr", "mel")}
    hop, min_samples = int(codec.hop_length), mel.melspec.n_fft // 2
    for length in sorted(set(lengths.tolist())):
        if length * hop <= min_samples:
            continue
        items = (lengths == length).nonzero(as_tuple=True)[0]
        stack = torch.cat([codes[items, :, :length]] + [variants[name][items, :, :length] for name in names])
        audio = codec.decode(stack).float().chunk(1 + len(names))
        for name, estimate in zip(names, audio[1:]):
            scores[f"recon_si_snr{name}"].append(si_snr(estimate, audio[0]))
            scores[f"recon_mel{name}"].append(mel(estimate, audio[0]))
    return {key: torch.cat(values).mean() for key, values in scores.items() if values}


@torch.no_grad()
def teacher_forced_reconstruction(codec: CompressionModel, logits: torch.Tensor, sequences: Sequences,
                                  codes: torch.Tensor, lengths: torch.Tensor, layout: AcousticLayout, offset: int,
                                  max_items: tp.Optional[int] = None, mel: tp.Optional[MelDistance] = None,
                                  seed: int = 0) -> tp.Dict[str, torch.Tensor]:
    """``recon_si_snr`` / ``recon_mel`` of the stage's teacher-forced codes, and their chance reference
    ``recon_si_snr_shuffled`` / ``recon_mel_shuffled`` (see the module docstring).

    Args:
        codec: the discrete codec that made the codes (see :func:`score_against_true`).
        logits: ``[B, L, V]`` of the stage's LM on ``sequences.inputs``.
        sequences: the packed rows of the batch.
        codes: ``[B, K_all, T]`` true codes of every level of the codec.
        lengths: ``[B]`` real frames of each item.
        layout: the stage's target layout; its levels are ``layout.first_level ..`` of the codec's.
        offset: where the layout's ids start in the joint vocabulary.
        max_items: score only the first items of the batch (all when None).
        mel: the mel distance (default: :class:`MelDistance` with :data:`MEL_OPTIONS`).
        seed: of the frame permutations of the chance reference.
    """
    count = logits.shape[0] if max_items is None else min(int(max_items), logits.shape[0])
    sequences = Sequences(inputs=sequences.inputs[:count], targets=sequences.targets[:count],
                          weights=sequences.weights[:count], target_index=sequences.target_index[:count])
    codes, lengths = codes[:count].long(), lengths[:count].long()
    predicted = teacher_forced_codes(logits[:count], sequences, layout, offset, codes.shape[-1])
    generator = torch.Generator().manual_seed(seed)
    variants = {"": mix_levels(codes, predicted, layout.first_level),
                "_shuffled": shuffle_levels(codes, lengths, layout.first_level, layout.num_levels, generator)}
    mel = mel if mel is not None else MelDistance(int(codec.sample_rate), **MEL_OPTIONS).to(codes.device)
    return score_against_true(codec, codes, lengths, variants, mel)
