"""Token layouts of the hierarchical (AudioLM-style) token language models: codes <-> flat token ids.

Acoustic tokens are the RVQ codes `[B, K, T]` of a codec (K levels of `cardinality` codes each, T
frames). A stage that models `num_levels` of these levels (the coarse stage the first levels, the fine
stage the remaining ones) sees them as one flat sequence, time-major: frame 0 level 0, frame 0 level 1,
..., frame 1 level 0, ... Each level has its own block of ids, so that the same code at two levels gives
two different tokens: code `c` of level `k` (counted within the stage) is id `k * cardinality + c`.

Semantic tokens `[B, T]` are ids of a single vocabulary (k-means clusters of a self-supervised model) and
are used as they are.

Special tokens come after all the codes, in the order EOS, PAD, BOS, so that no special id can be
mistaken for a code:

    ids [0, num_codes)        codes
    num_codes                 EOS, generation ends (acoustic: only right after a whole frame)
    num_codes + 1             PAD, filler after EOS in a batch of sequences of unequal lengths
    num_codes + 2             BOS, start of a sequence without prefix

Positions in this module count tokens of the stage's own sequence from 0 (a semantic or coarse prefix
placed before it in the model's input is not counted). An acoustic position `p` holds level
`p % num_levels`; `p` is a frame boundary (a new frame would start there) when `p % num_levels == 0`.

:class:`ConcatVocab` joins several vocabularies into one by giving each part an offset, e.g. the coarse
stage input is the semantic ids (offset 0) followed by the coarse ids (offset `semantic.vocab_size`).
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch
from einops import rearrange

NUM_SPECIALS = 3  # EOS, PAD, BOS


def _check_integer(ids: torch.Tensor, name: str, dim: int) -> None:
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer (long) tensor, got dtype {ids.dtype}.")
    if ids.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(ids.shape)}.")


def _append_eos(ids: torch.Tensor, lengths: tp.Optional[torch.Tensor], frame: int, eos_id: int,
                pad_id: int) -> torch.Tensor:
    """Shared by both layouts: `[B, N]` -> `[B, N + 1]`, EOS at each item's length, PAD after it."""
    _check_integer(ids, "ids", 2)
    batch, length = ids.shape
    if lengths is None:
        lengths = torch.full((batch,), length, dtype=torch.long, device=ids.device)
    lengths = torch.as_tensor(lengths, device=ids.device).long()
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape [B] = ({batch},), got {tuple(lengths.shape)}.")
    if ((lengths < 0) | (lengths > length)).any():
        raise ValueError(f"lengths must lie in [0, {length}] (the sequence length), got {lengths.tolist()}.")
    if (lengths % frame != 0).any():
        raise ValueError(f"EOS can only follow a whole frame: lengths must be multiples of {frame} "
                         f"(levels per frame), got {lengths.tolist()}. Cut or complete the partial frames.")
    out = torch.cat([ids, ids.new_full((batch, 1), pad_id)], dim=1)
    positions = torch.arange(length + 1, device=ids.device)
    out = out.masked_fill(positions[None, :] > lengths[:, None], pad_id)
    return out.masked_fill(positions[None, :] == lengths[:, None], eos_id)


def _strip_eos(ids: torch.Tensor, frame: int, eos_id: int, pad_id: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Shared by both layouts: cut each item at its first EOS, see :meth:`AcousticLayout.strip_eos`."""
    _check_integer(ids, "ids", 2)
    batch, length = ids.shape
    is_eos = ids == eos_id
    has_eos = is_eos.any(dim=1)
    first = is_eos.long().argmax(dim=1)
    lengths = torch.where(has_eos, first, torch.full_like(first, length))
    misplaced = has_eos & (first % frame != 0)
    if misplaced.any():
        item = int(misplaced.nonzero()[0, 0])
        raise ValueError(f"EOS at position {int(first[item])} of item {item} is inside a frame (positions are "
                         f"multiples of {frame} at frame boundaries): the sequence is malformed. Constrain "
                         f"sampling with `logits_mask` so that EOS is only produced at frame boundaries.")
    max_length = int(lengths.max()) if batch > 0 else 0
    positions = torch.arange(max_length, device=ids.device)
    out = ids[:, :max_length].masked_fill(positions[None, :] >= lengths[:, None], pad_id)
    return out, lengths


@dataclass
class AcousticLayout:
    """Flat token layout of `num_levels` RVQ levels, for the coarse or the fine acoustic stage.

    Args:
        num_levels: K, the number of RVQ levels this stage models.
        cardinality: number of codes of each codebook.
        first_level: index, in the codec, of this stage's first RVQ level (0 for the coarse stage, the
            number of coarse levels for the fine stage). Recorded only; codes and ids count the levels of
            the stage from 0.
    """
    num_levels: int
    cardinality: int
    first_level: int = 0

    def __post_init__(self) -> None:
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}.")
        if self.cardinality < 1:
            raise ValueError(f"cardinality must be >= 1, got {self.cardinality}.")
        if self.first_level < 0:
            raise ValueError(f"first_level must be >= 0, got {self.first_level}.")

    @property
    def num_codes(self) -> int:
        """Number of code ids, `num_levels * cardinality`; the special ids follow."""
        return self.num_levels * self.cardinality

    @property
    def eos_id(self) -> int:
        return self.num_codes

    @property
    def pad_id(self) -> int:
        return self.num_codes + 1

    @property
    def bos_id(self) -> int:
        return self.num_codes + 2

    @property
    def vocab_size(self) -> int:
        return self.num_codes + NUM_SPECIALS

    def _offsets(self, device: torch.device) -> torch.Tensor:
        return torch.arange(self.num_levels, device=device) * self.cardinality

    def flatten(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, K, T]` -> ids `[B, K * T]`, time-major, code `c` of level `k` -> `k * cardinality + c`."""
        _check_integer(codes, "codes", 3)
        if codes.shape[1] != self.num_levels:
            raise ValueError(f"codes must have num_levels={self.num_levels} levels ([B, K, T]), "
                             f"got shape {tuple(codes.shape)}.")
        bad = ((codes < 0) | (codes >= self.cardinality)).any(dim=2).any(dim=0)  # [K]
        if bad.any():
            level = int(bad.nonzero()[0, 0])
            values = codes[:, level]
            raise ValueError(f"codes of level {level} (codec level {self.first_level + level}) must lie in "
                             f"[0, cardinality={self.cardinality}), got values in "
                             f"[{int(values.min())}, {int(values.max())}].")
        ids = codes.long() + self._offsets(codes.device)[None, :, None]
        return rearrange(ids, "b k t -> b (t k)")

    def unflatten(self, ids: torch.Tensor, drop_partial: bool = False) -> torch.Tensor:
        """Ids `[B, N]` -> codes `[B, K, N // K]`, the inverse of :meth:`flatten`.

        A trailing partial frame (`N % K != 0`) raises a ValueError, unless `drop_partial` is True, in
        which case it is dropped. Every id must be a code of the level of its position, so special ids
        raise too: cut the sequences with :meth:`strip_eos` first.
        """
        _check_integer(ids, "ids", 2)
        partial = ids.shape[1] % self.num_levels
        if partial:
            if not drop_partial:
                raise ValueError(f"ids hold {ids.shape[1]} tokens, not a whole number of frames of "
                                 f"{self.num_levels} levels; pass drop_partial=True to drop the last "
                                 f"{partial} tokens.")
            ids = ids[:, :ids.shape[1] - partial]
        codes = rearrange(ids.long(), "b (t k) -> b k t", k=self.num_levels)
        codes = codes - self._offsets(ids.device)[None, :, None]
        bad = rearrange((codes < 0) | (codes >= self.cardinality), "b k t -> b (t k)")
        if bad.any():
            item, position = (int(i) for i in bad.nonzero()[0])
            level, value = position % self.num_levels, int(ids[item, position])
            raise ValueError(f"id {value} at position {position} of item {item} is not "
                             f"a code of level {level} (ids [{level * self.cardinality}, "
                             f"{(level + 1) * self.cardinality})); specials must be stripped first.")
        return codes

    def is_frame_boundary(self, position: int) -> bool:
        """True when a new frame starts at flat `position`, i.e. after a whole number of frames."""
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}.")
        return position % self.num_levels == 0

    def append_eos(self, ids: torch.Tensor, lengths: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Ids `[B, N]` -> `[B, N + 1]` with EOS at each item's length and PAD after it.

        Args:
            ids: flat ids `[B, N]`.
            lengths: number of valid tokens of each item `[B]` (all N when None); tokens past an item's
                length are replaced by PAD. Each length must be a multiple of `num_levels`, since EOS may
                only follow a whole frame.
        """
        return _append_eos(ids, lengths, self.num_levels, self.eos_id, self.pad_id)

    def strip_eos(self, ids: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Cut each item of ids `[B, N]` at its first EOS.

        Returns:
            ids `[B, L]` with `L = max(lengths)`, PAD past each item's length, and lengths `[B]`: the
            position of the first EOS, or N for an item without EOS (it may end on a partial frame, which
            :meth:`unflatten` can drop). Tokens after the first EOS are ignored.
        Raises:
            ValueError when the first EOS of an item is not at a frame boundary.
        """
        return _strip_eos(ids, self.num_levels, self.eos_id, self.pad_id)

    def allowed_ids(self, position_in_frame: int) -> tp.Tuple[int, int]:
        """Half-open range `[low, high)` of the code ids allowed at `position_in_frame` (the level).

        EOS (`eos_id`, outside this range) is allowed in addition at `position_in_frame == 0` only.
        """
        if not 0 <= position_in_frame < self.num_levels:
            raise ValueError(f"position_in_frame must lie in [0, num_levels={self.num_levels}), "
                             f"got {position_in_frame}.")
        low = position_in_frame * self.cardinality
        return low, low + self.cardinality

    def logits_mask(self, next_position: int, vocab_size: tp.Optional[int] = None, offset: int = 0,
                    allow_eos: bool = True, device: tp.Optional[torch.device] = None) -> torch.Tensor:
        """Bool mask `[V]` of the ids that may be sampled at flat `next_position` (True = allowed).

        Args:
            next_position: flat position, in this stage's sequence, of the token about to be sampled.
            vocab_size: V, the model's vocabulary size (`self.vocab_size` when None); may be larger
                than this layout's, e.g. a joint vocabulary, whose other ids are all masked.
            offset: where this layout's ids start in the model's vocabulary (see :class:`ConcatVocab`).
            allow_eos: allow EOS at frame boundaries (False to force a fixed number of frames).
        """
        vocab_size = self.vocab_size if vocab_size is None else vocab_size
        if offset < 0 or offset + self.vocab_size > vocab_size:
            raise ValueError(f"the layout's {self.vocab_size} ids at offset {offset} do not fit in "
                             f"vocab_size={vocab_size}; increase vocab_size or fix offset.")
        if next_position < 0:
            raise ValueError(f"next_position must be >= 0, got {next_position}.")
        position_in_frame = next_position % self.num_levels
        low, high = self.allowed_ids(position_in_frame)
        mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        mask[offset + low:offset + high] = True
        if allow_eos and position_in_frame == 0:
            mask[offset + self.eos_id] = True
        return mask

    def constrain_logits(self, logits: torch.Tensor, next_position: int, offset: int = 0,
                         allow_eos: bool = True) -> torch.Tensor:
        """Logits `[..., V]` with the ids not allowed at `next_position` set to -inf (a logits processor)."""
        mask = self.logits_mask(next_position, logits.shape[-1], offset, allow_eos, logits.device)
        return logits.masked_fill(~mask, float("-inf"))


@dataclass
class SemanticLayout:
    """Token layout of semantic ids `[B, T]` of `cardinality` clusters, used as they are, specials after.

    Args:
        cardinality: number of semantic clusters (k-means centroids).
    """
    cardinality: int

    def __post_init__(self) -> None:
        if self.cardinality < 1:
            raise ValueError(f"cardinality must be >= 1, got {self.cardinality}.")

    @property
    def eos_id(self) -> int:
        return self.cardinality

    @property
    def pad_id(self) -> int:
        return self.cardinality + 1

    @property
    def bos_id(self) -> int:
        return self.cardinality + 2

    @property
    def vocab_size(self) -> int:
        return self.cardinality + NUM_SPECIALS

    def flatten(self, ids: torch.Tensor) -> torch.Tensor:
        """Semantic ids `[B, T]` -> the same ids as long, after checking they lie in [0, cardinality)."""
        _check_integer(ids, "ids", 2)
        if ((ids < 0) | (ids >= self.cardinality)).any():
            raise ValueError(f"semantic ids must lie in [0, cardinality={self.cardinality}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}].")
        return ids.long()

    def append_eos(self, ids: torch.Tensor, lengths: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Ids `[B, N]` -> `[B, N + 1]` with EOS at each item's length (`[B]`, N when None), PAD after."""
        return _append_eos(ids, lengths, 1, self.eos_id, self.pad_id)

    def strip_eos(self, ids: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Cut each item of ids `[B, N]` at its first EOS: ids `[B, max(lengths)]` padded, and lengths `[B]`."""
        return _strip_eos(ids, 1, self.eos_id, self.pad_id)

    @staticmethod
    def dedup_consecutive(ids: torch.Tensor) -> torch.Tensor:
        """Ids `[T]` -> `[T']` with runs of a repeated id collapsed to one (AudioLM's optional de-duplication)."""
        _check_integer(ids, "ids", 1)
        return torch.unique_consecutive(ids)


class ConcatVocab:
    """One joint vocabulary made of consecutive parts, e.g. `ConcatVocab([semantic.vocab_size,
    coarse.vocab_size])` for the coarse stage: part `i` holds ids `[offset(i), offset(i) + parts[i])`.

    Args:
        parts: size of each part's vocabulary, in order.
    """

    def __init__(self, parts: tp.Sequence[int]):
        if len(parts) == 0 or any(size < 1 for size in parts):
            raise ValueError(f"parts must be a non-empty list of positive vocabulary sizes, got {list(parts)}.")
        self.parts: tp.Tuple[int, ...] = tuple(int(size) for size in parts)
        offsets, total = [], 0
        for size in self.parts:
            offsets.append(total)
            total += size
        self.offsets: tp.Tuple[int, ...] = tuple(offsets)
        self.vocab_size = total

    def _check_part(self, part_index: int) -> None:
        if not 0 <= part_index < len(self.parts):
            raise ValueError(f"part_index must lie in [0, {len(self.parts)}), got {part_index}.")

    def offset(self, part_index: int) -> int:
        self._check_part(part_index)
        return self.offsets[part_index]

    def encode(self, part_index: int, ids: torch.Tensor) -> torch.Tensor:
        """Ids of part `part_index` (any shape) -> joint ids, after checking they lie in the part."""
        self._check_part(part_index)
        size = self.parts[part_index]
        if ((ids < 0) | (ids >= size)).any():
            raise ValueError(f"ids of part {part_index} must lie in [0, {size}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}].")
        return ids.long() + self.offsets[part_index]

    def decode(self, part_index: int, ids: torch.Tensor) -> torch.Tensor:
        """Joint ids (any shape) -> ids of part `part_index`, after checking they belong to that part."""
        self._check_part(part_index)
        low = self.offsets[part_index]
        high = low + self.parts[part_index]
        if ((ids < low) | (ids >= high)).any():
            raise ValueError(f"joint ids of part {part_index} must lie in [{low}, {high}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}].")
        return ids.long() - low
