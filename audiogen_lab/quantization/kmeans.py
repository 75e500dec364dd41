"""Mini-batch k-means for large sets of feature vectors, e.g. the frames [N, D] behind semantic tokens.

AudioLM-style semantic tokens are the ids of the nearest k-means centroid of self-supervised audio
features. Those features number in the millions, so the centroids are fitted with mini-batch k-means
(Sculley, "Web-scale k-means clustering", WWW 2010) rather than full Lloyd iterations:

- initialisation: k-means++ (each new centroid drawn with probability proportional to the squared
  distance to the nearest centroid already chosen) on a seeded random sample of the data;
- updates: each step takes the next `batch_size` rows of a seeded shuffle of the data, assigns them to
  their nearest centroids and moves centroid c to ``(v_c * c + sum of its new rows) / (v_c + n_c)``,
  where ``v_c`` counts every row ever assigned to c and ``n_c`` those of this batch. This is Sculley's
  per-centroid learning rate ``1 / v_c`` applied to a whole batch at once: the centroid is the running
  mean of its rows and moves less and less as its count grows;
- dead centroids: a centroid that received no row during the last `reseed_window` steps is moved onto a
  row of the current batch drawn with probability proportional to the squared distance to its nearest
  centroid (seeded), and its count is reset to 0;
- restarts: restart r uses seed ``seed + r``; the centroids with the lowest inertia (sum over all rows
  of the squared distance to the nearest centroid) are returned.

Distances are computed by blocks of rows (see :func:`audiogen_lab.quantization.mulan_embed._nearest`),
so memory stays bounded whatever N and K. The data stays where it is (CPU usually) and is moved to
`device` one batch or block at a time.
"""
from __future__ import annotations

import logging
import typing as tp

import torch

from .mulan_embed import _cluster_sums, _nearest

logger = logging.getLogger(__name__)

_ASSIGN_BLOCK = 1 << 16  # rows moved to the centroids' device at a time by `assign` and the inertia


def _as_matrix(features: tp.Union[torch.Tensor, tp.Iterable[torch.Tensor]]) -> torch.Tensor:
    """Features as one float [N, D] tensor; an iterable of [n_i, D] chunks is concatenated (on CPU)."""
    if not isinstance(features, torch.Tensor):
        chunks = [torch.as_tensor(chunk).detach().float().cpu() for chunk in features]
        if not chunks:
            raise ValueError("features is an empty iterable: pass at least one [n, D] chunk.")
        dims = {chunk.shape[-1] for chunk in chunks if chunk.dim() == 2}
        if len(dims) != 1 or any(chunk.dim() != 2 for chunk in chunks):
            raise ValueError(f"features chunks must all be [n, D] with the same D, got shapes "
                             f"{[tuple(chunk.shape) for chunk in chunks[:5]]}...")
        features = torch.cat(chunks)
    if features.dim() != 2:
        raise ValueError(f"Expected features [N, D], got shape {tuple(features.shape)}.")
    features = features.detach()
    return features if features.is_floating_point() else features.float()


def assign(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Id [N] (long, on the centroids' device) of the nearest centroid [K, D] of each row of `features` [N, D].

    Ties go to the lowest id. Rows are moved to the centroids' device and compared by blocks.
    """
    ids, _ = _assign_with_distances(features, centroids)
    return ids


def _assign_with_distances(features: torch.Tensor, centroids: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 2 or centroids.dim() != 2 or features.shape[1] != centroids.shape[1]:
        raise ValueError(f"Expected features [N, D] and centroids [K, D] with the same D, got shapes "
                         f"{tuple(features.shape)} and {tuple(centroids.shape)}.")
    ids, dists = [], []
    for block in features.split(_ASSIGN_BLOCK):
        block_ids, block_dists = _nearest(block.to(centroids), centroids)
        ids.append(block_ids)
        dists.append(block_dists)
    if not ids:
        return centroids.new_zeros(0, dtype=torch.long), centroids.new_zeros(0)
    return torch.cat(ids), torch.cat(dists)


def inertia(features: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum over the rows of `features` [N, D] of the squared distance to their nearest centroid [K, D]."""
    _, dists = _assign_with_distances(features, centroids)
    return float(dists.double().sum())


def cluster_usage(ids: torch.Tensor, num_clusters: int) -> tp.Dict[str, float]:
    """How evenly ids (any shape, values in [0, K)) use the K clusters.

    Returns:
        ``perplexity``: exp of the entropy (natural log) of the ids' empirical distribution, between 1
        (one cluster) and K (uniform use); ``used_fraction``: fraction of the K clusters used at least once.
    """
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}.")
    flat = ids.detach().reshape(-1).long().cpu()
    if flat.numel() == 0:
        raise ValueError("cluster_usage needs at least one id, got an empty tensor.")
    if flat.min() < 0 or flat.max() >= num_clusters:
        raise ValueError(f"ids must be in [0, {num_clusters}) (num_clusters), got values in "
                         f"[{flat.min().item()}, {flat.max().item()}].")
    counts = torch.bincount(flat, minlength=num_clusters).double()
    probs = counts / counts.sum()
    nonzero = probs[probs > 0]
    entropy = -(nonzero * nonzero.log()).sum()
    return {"perplexity": float(entropy.exp()), "used_fraction": float((counts > 0).double().mean())}


def kmeans_plusplus(x: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """K-means++ seeding: `num_clusters` rows [K, D] of `x` [N, D], drawn with `generator` (a CPU generator).

    The first centroid is a uniformly drawn row; each next one a row drawn with probability proportional
    to its squared distance to the nearest centroid chosen so far (uniformly when every row is already
    matched exactly, i.e. when `x` has fewer than K distinct rows).
    """
    num = x.shape[0]
    if num < num_clusters:
        raise ValueError(f"k-means++ needs at least num_clusters={num_clusters} rows, got {num}.")
    chosen = [int(torch.randint(num, (1,), generator=generator))]
    closest = (x - x[chosen[0]]).pow(2).sum(dim=-1)  # [N]
    for _ in range(1, num_clusters):
        weights = closest.double().cpu()
        if weights.sum() > 0:
            index = int(torch.multinomial(weights, 1, generator=generator))
        else:
            index = int(torch.randint(num, (1,), generator=generator))
        chosen.append(index)
        closest = torch.minimum(closest, (x - x[index]).pow(2).sum(dim=-1))
    return x[torch.tensor(chosen, device=x.device)].clone()


def _reseed(centroids: torch.Tensor, dead: torch.Tensor, batch: torch.Tensor, dists: torch.Tensor,
            generator: torch.Generator) -> int:
    """Move the `dead` centroids (indices) onto rows of `batch` drawn ∝ `dists`; returns how many moved."""
    weights = dists.double().cpu()
    available = int((weights > 0).sum())
    count = min(len(dead), available)
    if count == 0:  # every row of the batch is matched exactly: nothing better to do
        return 0
    rows = torch.multinomial(weights, count, replacement=False, generator=generator)
    centroids[dead[:count]] = batch[rows.to(batch.device)]
    return count


def _fit_once(x: torch.Tensor, num_clusters: int, batch_size: int, iters: int, init_size: int,
              reseed_window: int, generator: torch.Generator, device: torch.device,
              init: tp.Optional[torch.Tensor]) -> tp.Tuple[torch.Tensor, int]:
    num = x.shape[0]
    if init is None:
        sample = torch.randperm(num, generator=generator)[:init_size]
        centroids = kmeans_plusplus(x[sample.to(x.device)].to(device, torch.float32), num_clusters, generator)
    else:
        centroids = init.detach().to(device, torch.float32).clone()
    counts = torch.zeros(num_clusters, device=device, dtype=torch.float64)
    last_hit = torch.zeros(num_clusters, device=device, dtype=torch.long)
    order = torch.randperm(num, generator=generator)
    cursor, reseeded = 0, 0
    for step in range(1, iters + 1):
        if cursor + batch_size > num:
            order, cursor = torch.randperm(num, generator=generator), 0
        index = order[cursor:cursor + batch_size]
        cursor += batch_size
        batch = x[index.to(x.device)].to(device, torch.float32)
        ids, dists = _nearest(batch, centroids)
        sums, batch_counts = _cluster_sums(batch, ids, num_clusters)
        hit = batch_counts > 0
        new_counts = counts + batch_counts.double()
        updated = (centroids.double() * counts[:, None] + sums.double()) / new_counts.clamp(min=1)[:, None]
        centroids = torch.where(hit[:, None], updated.float(), centroids)
        counts = new_counts
        last_hit = torch.where(hit, torch.full_like(last_hit, step), last_hit)
        dead = (step - last_hit >= reseed_window).nonzero().squeeze(-1)
        if len(dead) > 0:
            moved = _reseed(centroids, dead, batch, dists, generator)
            counts[dead[:moved]] = 0
            last_hit[dead[:moved]] = step
            reseeded += moved
    return centroids, reseeded


@torch.no_grad()
def minibatch_kmeans(features: tp.Union[torch.Tensor, tp.Iterable[torch.Tensor]], num_clusters: int, *,
                     batch_size: int = 10000, iters: int = 100, restarts: int = 3, seed: int = 0,
                     device: tp.Optional[tp.Union[str, torch.device]] = None,
                     init_size: tp.Optional[int] = None, reseed_window: int = 10,
                     init: tp.Optional[torch.Tensor] = None) -> tp.Tuple[torch.Tensor, float]:
    """Fit `num_clusters` centroids to `features` with seeded mini-batch k-means (see the module doc).

    Args:
        features: [N, D] tensor, or an iterable of [n_i, D] chunks (concatenated on CPU first).
        num_clusters: K, at most N.
        batch_size: rows per mini-batch step (capped at N).
        iters: mini-batch steps per restart.
        restarts: independent runs (restart r seeded with ``seed + r``); the lowest inertia wins.
        seed: base seed; the same data and arguments give the same centroids.
        device: where distances and updates are computed (default: the features' device).
        init_size: rows sampled for the k-means++ seeding (default ``min(N, 3 * max(batch_size, K))``).
        reseed_window: a centroid with no row assigned during this many consecutive steps is re-seeded.
        init: optional starting centroids [K, D] instead of k-means++ (then a single run is made).
    Returns:
        centroids [K, D] (float32, on `device`) and their inertia on all N rows (a float).
    """
    x = _as_matrix(features)
    num, dim = x.shape
    if num_clusters < 1 or num_clusters > num:
        raise ValueError(f"num_clusters must be in [1, N={num}] (number of feature rows), got {num_clusters}.")
    for name, value in (("batch_size", batch_size), ("restarts", restarts), ("reseed_window", reseed_window)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}.")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values.")
    if init is not None and tuple(init.shape) != (num_clusters, dim):
        raise ValueError(f"init must be [num_clusters, D] = [{num_clusters}, {dim}], got {tuple(init.shape)}.")
    device = torch.device(device) if device is not None else x.device
    batch_size = min(batch_size, num)
    init_size = min(num, init_size if init_size is not None else 3 * max(batch_size, num_clusters))
    if init_size < num_clusters:
        raise ValueError(f"init_size={init_size} must be >= num_clusters={num_clusters}.")
    best: tp.Optional[tp.Tuple[torch.Tensor, float]] = None
    for restart in range(1 if init is not None else restarts):
        generator = torch.Generator().manual_seed(seed + restart)
        centroids, reseeded = _fit_once(x, num_clusters, batch_size, iters, init_size, reseed_window,
                                        generator, device, init)
        score = inertia(x, centroids)
        logger.info("k-means restart %d/%d (K=%d, N=%d, D=%d): inertia %.4g, %d dead centroids re-seeded.",
                    restart + 1, restarts, num_clusters, num, dim, score, reseeded)
        if best is None or score < best[1]:
            best = (centroids, score)
    assert best is not None
    return best
