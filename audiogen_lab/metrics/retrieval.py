"""Retrieval metrics of a joint audio-text embedding: cross-modal recall@k, median rank, zero-shot accuracy.

Given paired embeddings `audio [N, D]` and `text [N, D]` (item `i` of each describe the same clip),
similarity is the dot product (the cosine similarity for L2-normalised embeddings).

- text -> audio (`t2a_*`): each caption queries the N clips; audio -> text (`a2t_*`): each clip
  queries the N captions.
- The rank of a query is the 1-based position of its best-ranked correct item. Without `groups` the
  only correct item of query `i` is item `i`. With `groups` (one label per pair, e.g. the caption
  string), every item of the same group is correct: two clips with identical captions cannot be told
  apart from the text, so retrieving the other one is not a mistake.
- Ties are broken pessimistically: an incorrect item scoring exactly as high as the best correct item
  ranks before it. Constant embeddings therefore get the worst rank, not a perfect one, and the
  result does not depend on the order of the items.
- `*_r{k}` is the fraction of queries whose rank is at most k (in [0, 1]); `*_median_rank` is the
  median of the ranks, the mean of the two middle ranks when N is even.

Queries are scored in chunks so that memory stays `O(chunk * N)`.
"""
from __future__ import annotations

import typing as tp

import torch

_CHUNK = 1024


def _check_pair(first: torch.Tensor, second: torch.Tensor, names: tp.Tuple[str, str]) -> None:
    assert first.dim() == 2 and second.dim() == 2 and first.shape[1] == second.shape[1], (
        f"Expected {names[0]} and {names[1]} as [N, D] and [M, D] with the same D, got "
        f"{tuple(first.shape)} and {tuple(second.shape)}.")


def _common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _group_ids(groups: tp.Optional[tp.Sequence[tp.Hashable]], num: int, device: torch.device) -> torch.Tensor:
    """One integer id per item `[N]`: equal ids for equal groups, all distinct without groups."""
    if groups is None:
        return torch.arange(num, device=device)
    if isinstance(groups, torch.Tensor):
        groups = groups.tolist()
    assert len(groups) == num, f"groups must hold one label per item: got {len(groups)} labels for {num} items."
    index: tp.Dict[tp.Hashable, int] = {}
    return torch.tensor([index.setdefault(group, len(index)) for group in groups], device=device)


def _ranks(queries: torch.Tensor, keys: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """1-based rank `[N]` of the best-ranked key of the query's group, ties counted against the query."""
    ranks = []
    for start in range(0, queries.shape[0], _CHUNK):
        scores = queries[start:start + _CHUNK] @ keys.t()  # [q, N]
        correct = group_ids[start:start + _CHUNK, None] == group_ids[None, :]
        best = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
        ranks.append(1 + ((scores >= best) & ~correct).sum(dim=1))
    return torch.cat(ranks)


def retrieval_metrics(audio: torch.Tensor, text: torch.Tensor, ks: tp.Sequence[int] = (1, 5, 10),
                      groups: tp.Optional[tp.Sequence[tp.Hashable]] = None) -> tp.Dict[str, float]:
    """Recall@k and median rank in both directions; see the module docstring for ranks, groups and ties.

    Args:
        audio: audio embeddings `[N, D]`, row `i` paired with `text[i]`.
        text: text embeddings `[N, D]`.
        ks: cut-offs of the recalls (positive integers).
        groups: optional label per pair `[N]` (e.g. the captions); items with equal labels are
            interchangeable answers.
    Returns:
        `{t2a_r{k}, t2a_median_rank, a2t_r{k}, a2t_median_rank}` as floats.
    """
    _check_pair(audio, text, ("audio", "text"))
    assert audio.shape[0] == text.shape[0] and audio.shape[0] > 0, (
        f"audio and text must hold the same non-zero number of pairs, got {audio.shape[0]} and {text.shape[0]}.")
    assert len(ks) > 0 and all(int(k) == k and k > 0 for k in ks), f"ks must be positive integers, got {ks}."
    dtype = _common_dtype(audio, text)
    audio, text = audio.detach().to(dtype), text.detach().to(dtype)
    group_ids = _group_ids(groups, audio.shape[0], audio.device)
    metrics: tp.Dict[str, float] = {}
    for direction, queries, keys in (("t2a", text, audio), ("a2t", audio, text)):
        ranks = _ranks(queries, keys, group_ids)
        for k in ks:
            metrics[f"{direction}_r{int(k)}"] = float((ranks <= k).double().mean())
        metrics[f"{direction}_median_rank"] = float(ranks.double().quantile(0.5))
    return metrics


def zero_shot_accuracy(audio: torch.Tensor, prompts: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of clips whose most similar prompt is their label.

    Args:
        audio: audio embeddings `[N, D]`.
        prompts: one text embedding per class `[C, D]` (e.g. "music in the style of {genre}").
        labels: class index of each clip `[N]` (long, in `[0, C)`).
    Ties between prompts go to the lowest class index.
    """
    _check_pair(audio, prompts, ("audio", "prompts"))
    assert labels.shape == (audio.shape[0],), (
        f"labels must hold one class index per clip, shape ({audio.shape[0]},), got {tuple(labels.shape)}.")
    assert not labels.is_floating_point(), f"labels must be integer class indices, got dtype {labels.dtype}."
    num_classes = prompts.shape[0]
    assert audio.shape[0] > 0 and bool(((labels >= 0) & (labels < num_classes)).all()), (
        f"labels must lie in [0, {num_classes}) (one prompt per class) and audio must not be empty.")
    dtype = _common_dtype(audio, prompts)
    scores = audio.detach().to(dtype) @ prompts.detach().to(dtype).t()  # [N, C]
    predictions = scores.argmax(dim=1)
    return float((predictions == labels.to(predictions.device)).double().mean())
