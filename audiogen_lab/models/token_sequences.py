"""Training sequences of the AudioLM stages: an optional prefix (the conditioning tokens) and a target.

Every stage trains a decoder-only LM on rows ``[BOS] prefix target`` in one joint vocabulary
(:class:`~audiogen_lab.models.token_layout.ConcatVocab`: the prefix layout's ids, then the target's):

- semantic: no prefix, target = semantic ids;
- coarse: prefix = semantic ids, target = the first ``num_coarse`` RVQ levels flattened time-major;
- fine: prefix = the coarse levels, target = the remaining levels.

Each row is packed left (its real prefix tokens, then its real target tokens) and padded on the right, so
positions are never interrupted by padding. Position ``p`` predicts token ``p + 1``; the last target token
predicts the target's EOS when the item ended inside its crop. Predictions of prefix tokens get the
weight ``prefix_weight`` (AudioLM's auxiliary prefix loss; 0 turns it off), predictions of target tokens
and of EOS weight 1.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class Sequences:
    """A batch of packed rows.

    Attributes:
        inputs: ``[B, L]`` token ids (joint vocabulary), PAD on the right.
        targets: ``[B, L]`` next-token ids, IGNORE where nothing is predicted.
        weights: ``[B, L]`` float loss weight of each prediction (0 where IGNORE).
        target_index: ``[B, L]`` long, the index inside the target of the predicted target token (its RVQ
            level is ``target_index % num_levels``), -1 for predictions of prefix tokens, EOS or nothing.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    target_index: torch.Tensor


def pack_sequences(target: torch.Tensor, target_lengths: torch.Tensor, ended: torch.Tensor, *, bos_id: int,
                   pad_id: int, eos_id: int, prefix: tp.Optional[torch.Tensor] = None,
                   prefix_lengths: tp.Optional[torch.Tensor] = None, prefix_weight: float = 0.0) -> Sequences:
    """Pack ``[BOS] prefix target`` rows (see the module docstring).

    Args:
        target: ``[B, N]`` target ids already in the joint vocabulary; row ``b`` holds
            ``target_lengths[b]`` real ids.
        target_lengths: ``[B]`` long.
        ended: ``[B]`` bool, whether the item ended inside the crop (then EOS is the last target).
        bos_id, pad_id, eos_id: special ids in the joint vocabulary.
        prefix: ``[B, P]`` prefix ids in the joint vocabulary, ``prefix_lengths[b]`` real in row ``b``.
        prefix_weight: loss weight of the predictions of prefix tokens.
    """
    batch, device = target.shape[0], target.device
    if prefix is None:
        prefix = target.new_zeros(batch, 0)
        prefix_lengths = torch.zeros(batch, dtype=torch.long, device=device)
    assert prefix_lengths is not None, "prefix_lengths is required with a prefix."
    rows_in, rows_tg, rows_w, rows_ix = [], [], [], []
    for b in range(batch):
        p, n = int(prefix_lengths[b]), int(target_lengths[b])
        row = torch.cat([target.new_tensor([bos_id]), prefix[b, :p], target[b, :n]])
        nxt = torch.cat([row[1:], target.new_tensor([eos_id if bool(ended[b]) else IGNORE])])
        weight = torch.cat([torch.full((p,), float(prefix_weight), device=device), torch.ones(n, device=device),
                            torch.full((1,), 1.0 if bool(ended[b]) else 0.0, device=device)])
        index = torch.cat([torch.full((p,), -1, device=device, dtype=torch.long),
                           torch.arange(n, device=device), torch.full((1,), -1, device=device, dtype=torch.long)])
        if prefix_weight == 0:
            nxt[:p] = IGNORE
        rows_in.append(row)
        rows_tg.append(nxt)
        rows_w.append(weight)
        rows_ix.append(index)
    length = max(row.numel() for row in rows_in)

    def stack(rows: tp.List[torch.Tensor], value: float) -> torch.Tensor:
        return torch.stack([F.pad(row, (0, length - row.numel()), value=value) for row in rows])
    targets = stack(rows_tg, IGNORE)
    weights = stack(rows_w, 0.0).masked_fill(targets == IGNORE, 0.0)
    return Sequences(stack(rows_in, pad_id), targets, weights, stack(rows_ix, -1))


def weighted_ce(logits: torch.Tensor, sequences: Sequences) -> torch.Tensor:
    """Weighted mean cross-entropy (nats) of `logits` ``[B, L, V]`` on the weighted predictions."""
    valid = sequences.targets != IGNORE
    losses = F.cross_entropy(logits[valid].float(), sequences.targets[valid], reduction="none")
    weights = sequences.weights[valid]
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


def per_level_metrics(logits: torch.Tensor, sequences: Sequences, num_levels: int) -> tp.Dict[str, torch.Tensor]:
    """Cross-entropy ``ce_level_k`` and top-1 accuracy ``accuracy_level_k`` of the target tokens of each level
    (``k = target index % num_levels``), detached."""
    out: tp.Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        picked = sequences.target_index >= 0
        levels = sequences.target_index[picked] % num_levels
        chosen_logits = logits[picked].float()
        targets = sequences.targets[picked]
        losses = F.cross_entropy(chosen_logits, targets, reduction="none")
        correct = (chosen_logits.argmax(dim=-1) == targets).float()
        for level in range(num_levels):
            at = levels == level
            if bool(at.any()):
                out[f"ce_level_{level}"] = losses[at].mean()
                out[f"accuracy_level_{level}"] = correct[at].mean()
    return out
