"""Codebook statistics of discrete codes `[B, K, T]`: usage, perplexity and inter-level dependence.

Dependence between levels is measured by the normalized mutual information (NMI) of every pair of
levels, estimated by plug-in from code histograms: with `p(a, b)` the empirical joint frequency,
`I(a; b) = H(a) + H(b) - H(a, b)` and `NMI = I / sqrt(H(a) H(b))` (0 if either level is constant).
The plug-in estimate is biased upwards when the number of frames is not much larger than the
number of joint bins (N^2), so the same estimate is also computed after permuting each level's
frames independently (which destroys any dependence but keeps the marginals), and the difference,
`nmi_corrected = nmi - nmi_shuffled`, is reported as well. Entropies are in nats.
"""
from __future__ import annotations

import itertools
import typing as tp

import flashy
import torch
from einops import rearrange


def _check_codes(codes: torch.Tensor, cardinality: int) -> None:
    assert codes.dim() == 3, f"Expected codes [B, K, T], got shape {tuple(codes.shape)}."
    assert not codes.is_floating_point() and not codes.is_complex(), (
        f"Codes must be an integer tensor, got dtype {codes.dtype}.")
    if codes.numel() > 0:
        low, high = int(codes.min()), int(codes.max())
        assert 0 <= low and high < cardinality, (
            f"Codes must lie in [0, {cardinality}) for cardinality {cardinality}, found values in [{low}, {high}].")


def _flat_levels(codes: torch.Tensor) -> torch.Tensor:
    """`[B, K, T]` -> `[K, B*T]` int64."""
    return rearrange(codes.long(), "b k t -> k (b t)")


def _entropy(counts: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the histograms along the last dim of `counts`, in float64. Empty -> 0."""
    counts = counts.double()
    total = counts.sum(dim=-1, keepdim=True).clamp(min=1)
    p = counts / total
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=-1)


def _joint_counts(a: torch.Tensor, b: torch.Tensor, cardinality: int) -> torch.Tensor:
    """Joint histogram `[N, N]` of two aligned code sequences `[F]`."""
    flat = torch.bincount(a * cardinality + b, minlength=cardinality * cardinality)
    return flat.view(cardinality, cardinality)


def _nmi_from_joint(joint: torch.Tensor) -> float:
    """Plug-in NMI of the joint histogram `[N, N]`."""
    h_a = float(_entropy(joint.sum(dim=1)))
    h_b = float(_entropy(joint.sum(dim=0)))
    if h_a <= 0 or h_b <= 0:
        return 0.0
    h_ab = float(_entropy(joint.flatten()))
    mutual = max(h_a + h_b - h_ab, 0.0)
    return min(mutual / (h_a * h_b) ** 0.5, 1.0)


def _permute_levels(levels: torch.Tensor, generator: tp.Optional[torch.Generator]) -> torch.Tensor:
    """Permute the frames of each row of `[K, F]` independently."""
    rng_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.rand(levels.shape, generator=generator, device=rng_device).argsort(dim=-1)
    return torch.gather(levels, 1, order.to(levels.device))


def codebook_usage(codes: torch.Tensor, cardinality: int) -> tp.Dict[str, torch.Tensor]:
    """Per-level usage of codes `[B, K, T]` with values in `[0, cardinality)`.

    Returns a dict of `[K]` tensors: `entropy` (nats) of each level's code histogram, `perplexity`
    (`exp(entropy)`: N for uniform use of N codes, 1 for a constant code) and `usage` (fraction of
    the N codes that occur at least once).
    """
    _check_codes(codes, cardinality)
    levels = _flat_levels(codes)
    num_levels = levels.shape[0]
    offsets = torch.arange(num_levels, device=levels.device)[:, None] * cardinality
    counts = torch.bincount((levels + offsets).flatten(), minlength=num_levels * cardinality)
    counts = counts.view(num_levels, cardinality)
    entropy = _entropy(counts)
    return {"entropy": entropy.float(), "perplexity": entropy.exp().float(),
            "usage": (counts > 0).double().mean(dim=-1).float()}


def pairwise_normalized_mutual_information(codes: torch.Tensor, cardinality: int) -> torch.Tensor:
    """Plug-in NMI between every pair of levels of codes `[B, K, T]`. Returns a symmetric `[K, K]`
    float tensor; the diagonal is 1 for levels that are not constant (0 otherwise)."""
    _check_codes(codes, cardinality)
    levels = _flat_levels(codes)
    num_levels = levels.shape[0]
    nmi = torch.zeros(num_levels, num_levels, dtype=torch.float64)
    for k in range(num_levels):
        nmi[k, k] = 1.0 if levels[k].unique().numel() > 1 else 0.0  # I(a; a) = H(a)
    for i, j in itertools.combinations(range(num_levels), 2):
        nmi[i, j] = nmi[j, i] = _nmi_from_joint(_joint_counts(levels[i], levels[j], cardinality))
    return nmi.float().to(codes.device)


def _mean_off_diagonal(matrix: torch.Tensor) -> float:
    k = matrix.shape[0]
    if k < 2:
        return 0.0
    return float((matrix.sum() - matrix.diagonal().sum()) / (k * (k - 1)))


def codebook_dependence(codes: torch.Tensor, cardinality: int,
                        generator: tp.Optional[torch.Generator] = None) -> tp.Dict[str, float]:
    """Average pairwise NMI between the levels of codes `[B, K, T]`, raw and shuffle-corrected.

    Returns `nmi` (mean over pairs of levels), `nmi_shuffled` (the same after permuting each level's
    frames independently with `generator`) and `nmi_corrected = nmi - nmi_shuffled`, which is about 0
    for independent levels whatever the number of frames. All 0 when K < 2.
    """
    nmi = _mean_off_diagonal(pairwise_normalized_mutual_information(codes, cardinality))
    shuffled_levels = _permute_levels(_flat_levels(codes), generator)
    shuffled_codes = rearrange(shuffled_levels, "k (b t) -> b k t", b=codes.shape[0])
    shuffled = _mean_off_diagonal(pairwise_normalized_mutual_information(shuffled_codes, cardinality))
    return {"nmi": nmi, "nmi_shuffled": shuffled, "nmi_corrected": nmi - shuffled}


class CodebookStats:
    """Streaming codebook statistics over many batches (and ranks) of codes `[B, K, T]`.

    Keeps per-level code counts `[K, N]` and, for every pair of levels (or the given `pairs`), the
    joint counts `[N, N]` of the codes and of the codes with each level's frames permuted within
    each `update` call. Memory: `2 * len(pairs) * N^2` int32 counts (all 6 pairs of K=4 levels with
    N=1024 take 48 MB); restrict `pairs` for many levels or large codebooks.

    `compute()` sums the counts over ranks (`flashy.distrib.all_reduce`) and returns floats:
    `perplexity_q{k}`, `usage_q{k}` per level, and `nmi`, `nmi_shuffled`, `nmi_corrected` averaged
    over the pairs (see :func:`codebook_dependence`).

    Args:
        num_codebooks: number of levels K.
        cardinality: codebook size N.
        pairs: level pairs `(i, j)` whose dependence is measured (default: all pairs i < j).
        seed: seed of the permutations used for the shuffled counts.
        device: where the counts live (default: the device of the first codes seen).
    """

    def __init__(self, num_codebooks: int, cardinality: int,
                 pairs: tp.Optional[tp.Sequence[tp.Tuple[int, int]]] = None, seed: int = 0,
                 device: tp.Optional[tp.Union[str, torch.device]] = None) -> None:
        assert num_codebooks >= 1 and cardinality >= 1, (
            f"num_codebooks and cardinality must be positive, got {num_codebooks} and {cardinality}.")
        self.num_codebooks = num_codebooks
        self.cardinality = cardinality
        if pairs is None:
            pairs = list(itertools.combinations(range(num_codebooks), 2))
        for i, j in pairs:
            assert 0 <= i < num_codebooks and 0 <= j < num_codebooks and i != j, (
                f"Invalid level pair ({i}, {j}) for {num_codebooks} codebooks.")
        self.pairs = [tuple(pair) for pair in pairs]
        self.seed = seed
        self.device = None if device is None else torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._generator = torch.Generator().manual_seed(self.seed)
        self._counts: tp.Optional[torch.Tensor] = None
        self._joint: tp.Optional[torch.Tensor] = None
        self._joint_shuffled: tp.Optional[torch.Tensor] = None

    def _allocate(self, device: torch.device) -> None:
        n, k, p = self.cardinality, self.num_codebooks, len(self.pairs)
        self._counts = torch.zeros(k, n, dtype=torch.long, device=device)
        self._joint = torch.zeros(p, n, n, dtype=torch.int32, device=device)
        self._joint_shuffled = torch.zeros(p, n, n, dtype=torch.int32, device=device)

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        """Accumulate codes `[B, K, T]`."""
        _check_codes(codes, self.cardinality)
        assert codes.shape[1] == self.num_codebooks, (
            f"Expected {self.num_codebooks} codebooks, got codes of shape {tuple(codes.shape)}.")
        if self._counts is None:
            self._allocate(self.device if self.device is not None else codes.device)
        assert self._counts is not None and self._joint is not None and self._joint_shuffled is not None
        levels = _flat_levels(codes).to(self._counts.device)
        n = self.cardinality
        for k in range(self.num_codebooks):
            self._counts[k] += torch.bincount(levels[k], minlength=n)
        shuffled = _permute_levels(levels, self._generator)
        for index, (i, j) in enumerate(self.pairs):
            self._joint[index] += _joint_counts(levels[i], levels[j], n).to(torch.int32)
            self._joint_shuffled[index] += _joint_counts(shuffled[i], shuffled[j], n).to(torch.int32)

    @torch.no_grad()
    def compute(self) -> tp.Dict[str, float]:
        """Statistics of everything accumulated on all ranks (a collective call when distributed)."""
        if self._counts is None:
            device = self.device if self.device is not None else torch.device("cpu")
            self._allocate(device)
        assert self._counts is not None and self._joint is not None and self._joint_shuffled is not None
        counts, joint, joint_shuffled = self._counts.clone(), self._joint.clone(), self._joint_shuffled.clone()
        for tensor in (counts, joint, joint_shuffled):
            flashy.distrib.all_reduce(tensor)
        metrics: tp.Dict[str, float] = {}
        entropy = _entropy(counts)
        for k in range(self.num_codebooks):
            metrics[f"perplexity_q{k}"] = float(entropy[k].exp())
            metrics[f"usage_q{k}"] = float((counts[k] > 0).double().mean())
        if self.pairs:
            nmi = sum(_nmi_from_joint(joint[p]) for p in range(len(self.pairs))) / len(self.pairs)
            shuffled = sum(_nmi_from_joint(joint_shuffled[p]) for p in range(len(self.pairs))) / len(self.pairs)
        else:
            nmi = shuffled = 0.0
        metrics.update({"nmi": nmi, "nmi_shuffled": shuffled, "nmi_corrected": nmi - shuffled})
        return metrics
