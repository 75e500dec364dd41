import math

import pytest
import torch

from audiogen_lab.quantization.kmeans import assign, cluster_usage, inertia, kmeans_plusplus, minibatch_kmeans

NOISE = 0.1


def _blobs(num_clusters: int = 6, per_cluster: int = 40, dim: int = 4, seed: int = 0):
    """Points [N, D] around well-separated means, and the true cluster of each point [N]."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.eye(num_clusters, dim) * 20 if num_clusters <= dim else torch.randn(
        num_clusters, dim, generator=generator) * 20
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    points = means[labels] + NOISE * torch.randn(len(labels), dim, generator=generator)
    return points, labels


def _same_partition(ids: torch.Tensor, labels: torch.Tensor) -> bool:
    """True when ids and labels define the same clusters (up to renaming)."""
    pairs = set(zip(labels.tolist(), ids.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(ids.tolist()))


def test_recovers_well_separated_clusters():
    points, labels = _blobs(num_clusters=8, dim=5)
    centroids, score = minibatch_kmeans(points, 8, batch_size=64, iters=60, restarts=2)
    ids = assign(points, centroids)
    assert _same_partition(ids, labels)
    # Inertia of the true means is about N * D * noise^2; the fit must be close to that.
    noise_level = points.shape[0] * points.shape[1] * NOISE ** 2
    assert 0.7 * noise_level < score < 1.3 * noise_level
    assert score == pytest.approx(inertia(points, centroids))


def test_iterable_of_chunks_equals_tensor():
    points, _ = _blobs()
    whole = minibatch_kmeans(points, 6, batch_size=50, iters=10, restarts=1)
    chunked = minibatch_kmeans(list(points.split(37)), 6, batch_size=50, iters=10, restarts=1)
    assert torch.equal(whole[0], chunked[0]) and whole[1] == chunked[1]


def test_kmeans_plusplus_is_seeded_and_spreads_over_clusters():
    points, labels = _blobs(num_clusters=6)
    first = kmeans_plusplus(points, 6, torch.Generator().manual_seed(3))
    again = kmeans_plusplus(points, 6, torch.Generator().manual_seed(3))
    other = kmeans_plusplus(points, 6, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Every initial centroid is a data point, one in each of the well-separated clusters.
    rows = [int((points == c).all(dim=-1).nonzero()[0]) for c in first]
    assert sorted(labels[rows].tolist()) == list(range(6))


def test_fit_is_deterministic_given_seed():
    points, _ = _blobs(num_clusters=6, dim=3)
    a = minibatch_kmeans(points, 10, batch_size=32, iters=20, restarts=2, seed=5)
    b = minibatch_kmeans(points, 10, batch_size=32, iters=20, restarts=2, seed=5)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_restarts_keep_the_lowest_inertia():
    # Overlapping data and many clusters: different seeds reach different local minima.
    points = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    singles = [minibatch_kmeans(points, 12, batch_size=40, iters=15, restarts=1, seed=s) for s in range(3)]
    best = minibatch_kmeans(points, 12, batch_size=40, iters=15, restarts=3, seed=0)
    scores = [score for _, score in singles]
    assert len(set(scores)) > 1
    assert best[1] == min(scores)
    assert torch.equal(best[0], singles[scores.index(min(scores))][0])


def test_dead_centroid_is_reseeded():
    points, labels = _blobs(num_clusters=3, per_cluster=30, dim=3)
    # Two centroids start on cluster 0 and 1, and two far from every point: no row ever picks those.
    init = torch.tensor([[20.0, 0, 0], [0, 20.0, 0], [500.0, 500, 500], [-500.0, -500, -500]])
    centroids, score = minibatch_kmeans(points, 4, batch_size=90, iters=40, init=init, reseed_window=3)
    ids = assign(points, centroids)
    assert cluster_usage(ids, 4)["used_fraction"] == 1.0
    assert centroids.abs().max() < 25  # the far centroids were moved into the data
    # The third cluster, not covered at the start, now has its own centroid(s).
    assert not set(ids[labels == 2].tolist()) & set(ids[labels != 2].tolist())
    assert score < points.shape[0] * 3 * NOISE ** 2 * 1.5


def test_cluster_usage_hand_examples():
    usage = cluster_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert usage["perplexity"] == pytest.approx(2.0)
    assert usage["used_fraction"] == 0.5
    assert cluster_usage(torch.tensor([3, 3, 3]), 4) == {"perplexity": pytest.approx(1.0), "used_fraction": 0.25}
    # p = (1/2, 1/4, 1/4): entropy 1.5 ln 2, perplexity 2 ** 1.5.
    assert cluster_usage(torch.tensor([0, 0, 1, 2]), 3)["perplexity"] == pytest.approx(2 ** 1.5)
    assert cluster_usage(torch.arange(5), 5)["perplexity"] == pytest.approx(5.0)
    assert math.isclose(cluster_usage(torch.arange(5), 5)["used_fraction"], 1.0)
    with pytest.raises(ValueError, match="num_clusters"):
        cluster_usage(torch.tensor([0, 4]), 4)


def test_assign_hand_example_and_ties():
    centroids = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    points = torch.tensor([[0.1, 0.2], [1.9, -0.5], [0.0, 2.0], [1.0, 0.0]])  # last one: tie between 0 and 1
    assert assign(points, centroids).tolist() == [0, 1, 2, 0]


def test_argument_errors_name_the_argument():
    points = torch.randn(5, 2)
    with pytest.raises(ValueError, match="num_clusters"):
        minibatch_kmeans(points, 6)
    with pytest.raises(ValueError, match="init"):
        minibatch_kmeans(points, 2, init=torch.zeros(3, 2))
