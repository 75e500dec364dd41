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


def _compact_dtype(cardinality: int) -> torch.dtype:
    """Smallest integer dtype holding codes in `[0, cardinality)` (int16 up to 2**15 entries)."""
    return torch.int16 if cardinality <= 2 ** 15 else torch.int32


def _gather_frames(levels: torch.Tensor) -> torch.Tensor:
    """Concatenate along frames, in rank order, the `[R, F_rank]` tensors of every rank (a collective
    call when distributed; identity otherwise). Sent as int32, which every backend reduces and gathers."""
    if not flashy.distrib.is_distributed():
        return levels
    world = flashy.distrib.world_size()
    local = levels.to(torch.int32)
    size = torch.tensor([local.shape[1]], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.nn.functional.pad(local, (0, longest - local.shape[1]))
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat([g[:, :int(s)] for g, s in zip(gathered, sizes)], dim=1).to(levels.dtype)


def _pair_joint_entropies(levels: torch.Tensor, rows: tp.Sequence[tp.Tuple[int, int]], cardinality: int,
                          max_keys: int = 1 << 21) -> torch.Tensor:
    """Joint entropies `[P]` (nats, float64) of the row pairs `rows` of codes `[R, F]`.

    Only the observed code pairs are visited: each pair's joint keys ``a * N + b`` are sorted and their
    runs counted, for many pairs at once (at most `max_keys` keys in memory at a time).
    """
    frames = levels.shape[1]
    result = torch.zeros(len(rows), dtype=torch.float64, device=levels.device)
    if frames == 0 or not rows:
        return result
    bins = cardinality * cardinality
    per_block = max(1, max_keys // frames)
    for start in range(0, len(rows), per_block):
        block = rows[start:start + per_block]
        first = levels[[i for i, _ in block]].long()
        second = levels[[j for _, j in block]].long()
        keys = (first * cardinality + second).sort(dim=1).values
        keys += torch.arange(len(block), device=keys.device)[:, None] * bins  # one key range per pair
        values, counts = torch.unique_consecutive(keys.flatten(), return_counts=True)
        p = counts.double() / frames
        terms = -(p * p.log())
        result[start:start + len(block)] = torch.zeros(len(block), dtype=torch.float64, device=levels.device) \
            .index_add_(0, torch.div(values, bins, rounding_mode="floor"), terms)
    return result


class CodebookStats:
    """Streaming codebook statistics over many batches (and ranks) of codes `[B, K, T]`.

    Keeps the per-level code counts `[K, N]` and the codes themselves (as small integers) of the levels
    that appear in `pairs`; the joint statistics of each pair of levels are only computed in
    :meth:`compute`, never as `[N, N]` tables. Memory therefore grows with the frames seen, ``2 * K' * F`` bytes
    for K' levels in pairs and F frames (int16 codes for N <= 32768), not with ``pairs * N^2``: for
    32 levels of 1024 entries, one hour of 75 Hz codes takes 17 MB where dense pair tables took 3.9 GB.
    The joint entropies visit the observed code pairs only (sorted keys, many pairs at a time): for 32
    levels and 36,000 frames `compute` takes about 6 s of CPU time.

    `compute()` gathers the counts and codes of all ranks and returns floats: `perplexity_q{k}`,
    `usage_q{k}` per level, and `nmi`, `nmi_shuffled`, `nmi_corrected` averaged over the pairs (see
    :func:`codebook_dependence`). The shuffled estimate permutes each level's frames within each
    `update` call, with permutations drawn from a generator seeded with `shuffle_seed`; `compute`
    replays them, so it is deterministic and can be called any number of times.

    Args:
        num_codebooks: number of levels K.
        cardinality: codebook size N.
        pairs: level pairs `(i, j)` whose dependence is measured (default: all pairs i < j).
        shuffle_seed: seed of the permutations of the shuffled estimate
            (config key ``metrics.codebook.shuffle_seed``).
        device: where the counts and codes live (default: the device of the first codes seen).
    """

    def __init__(self, num_codebooks: int, cardinality: int,
                 pairs: tp.Optional[tp.Sequence[tp.Tuple[int, int]]] = None, shuffle_seed: int = 0,
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
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        # levels whose codes are kept, and the row of each in the stored codes
        self._kept = sorted({level for pair in self.pairs for level in pair})
        self._row = {level: row for row, level in enumerate(self._kept)}
        self.shuffle_seed = int(shuffle_seed)
        self.device = None if device is None else torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._counts: tp.Optional[torch.Tensor] = None
        self._chunks: tp.List[torch.Tensor] = []  # one [K', F] per update, in order

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the accumulated statistics (counts and stored codes)."""
        tensors = self._chunks + ([] if self._counts is None else [self._counts])
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        """Accumulate codes `[B, K, T]`."""
        _check_codes(codes, self.cardinality)
        assert codes.shape[1] == self.num_codebooks, (
            f"Expected {self.num_codebooks} codebooks, got codes of shape {tuple(codes.shape)}.")
        device = self.device if self.device is not None else codes.device
        if self._counts is None:
            self._counts = torch.zeros(self.num_codebooks, self.cardinality, dtype=torch.long, device=device)
        levels = _flat_levels(codes).to(device)
        for k in range(self.num_codebooks):
            self._counts[k] += torch.bincount(levels[k], minlength=self.cardinality)
        if self._kept:
            self._chunks.append(levels[self._kept].to(_compact_dtype(self.cardinality)))

    def _local_codes(self, device: torch.device) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Stored codes `[K', F]` and the same with each level's frames permuted within each update:
        the permutations of :func:`_permute_levels` on all K levels, drawn in update order."""
        generator = torch.Generator().manual_seed(self.shuffle_seed)
        plain, shuffled = [], []
        for chunk in self._chunks:
            rows = torch.zeros(self.num_codebooks, chunk.shape[1], dtype=chunk.dtype, device=chunk.device)
            rows[self._kept] = chunk
            plain.append(chunk)
            shuffled.append(_permute_levels(rows, generator)[self._kept])
        if not plain:
            empty = torch.zeros(len(self._kept), 0, dtype=_compact_dtype(self.cardinality), device=device)
            return empty, empty
        return torch.cat(plain, dim=1), torch.cat(shuffled, dim=1)

    def _mean_pair_nmi(self, levels: torch.Tensor, entropy: torch.Tensor) -> float:
        """Mean over `pairs` of the plug-in NMI of the stored levels `[K', F]`, given each level's
        entropy `[K]` (that of its code counts: the same for the shuffled levels)."""
        rows = [(self._row[i], self._row[j]) for i, j in self.pairs]
        joint = _pair_joint_entropies(levels, rows, self.cardinality)
        total = 0.0
        for (i, j), h_ab in zip(self.pairs, joint.tolist()):
            h_a, h_b = float(entropy[i]), float(entropy[j])
            if h_a > 0 and h_b > 0:  # a constant level carries no information: NMI 0
                total += min(max(h_a + h_b - h_ab, 0.0) / (h_a * h_b) ** 0.5, 1.0)
        return total / len(self.pairs)

    @torch.no_grad()
    def compute(self) -> tp.Dict[str, float]:
        """Statistics of everything accumulated on all ranks (a collective call when distributed)."""
        device = self.device if self.device is not None else torch.device("cpu")
        counts = self._counts.clone() if self._counts is not None else \
            torch.zeros(self.num_codebooks, self.cardinality, dtype=torch.long, device=device)
        flashy.distrib.all_reduce(counts)
        metrics: tp.Dict[str, float] = {}
        entropy = _entropy(counts)
        for k in range(self.num_codebooks):
            metrics[f"perplexity_q{k}"] = float(entropy[k].exp())
            metrics[f"usage_q{k}"] = float((counts[k] > 0).double().mean())
        if self.pairs:
            plain, shuffled = self._local_codes(counts.device)
            nmi = self._mean_pair_nmi(_gather_frames(plain), entropy)
            nmi_shuffled = self._mean_pair_nmi(_gather_frames(shuffled), entropy)
        else:
            nmi = nmi_shuffled = 0.0
        metrics.update({"nmi": nmi, "nmi_shuffled": nmi_shuffled, "nmi_corrected": nmi - nmi_shuffled})
        return metrics
