import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from audiogen_lab.metrics.fad import FrechetAudioDistance, GaussianStats, MomentSums, frechet_distance


def _random_cov(dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim + 3, generator=generator, dtype=torch.float64)
    return a @ a.T / (dim + 3)


def _embeddings(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator)
    return torch.randn(n, dim, generator=generator) @ mixing + shift


class _IdentityEmbedder:
    """Stand-in embedder for `[B, C, T]` inputs: one row per clip, its channel-0 samples as features."""
    sample_rate = 1

    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return wav[:, 0]


def test_identical_gaussians_give_zero():
    mu, sigma = torch.randn(6, dtype=torch.float64), _random_cov(6, 0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.3), (3.0, 0.0, 1.0, 4.0)])
def test_one_dimensional_closed_form(m1, s1, m2, s2):
    expected = (m1 - m2) ** 2 + s1 + s2 - 2 * math.sqrt(s1 * s2)
    assert frechet_distance([m1], [[s1]], [m2], [[s2]]) == pytest.approx(expected, abs=1e-12)


def test_diagonal_closed_form():
    m1, m2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 3.0])
    s1, s2 = np.array([1.0, 0.25, 4.0, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_full_covariance_2x2_by_hand():
    # For a 2x2 matrix A with non-negative eigenvalues, tr(sqrt(A)) = sqrt(tr(A) + 2 sqrt(det(A))).
    # S1 = [[2, 1], [1, 2]], S2 = [[1, 0], [0, 4]]: tr(S1 S2) = 2 + 8 = 10, det(S1 S2) = 3 * 4 = 12,
    # tr(S1) + tr(S2) = 4 + 5 = 9 and |mu1 - mu2|^2 = 1 + 4 = 5.
    expected = 5 + 9 - 2 * math.sqrt(10 + 2 * math.sqrt(12))
    assert expected == pytest.approx(5.7712204, abs=1e-7)
    value = frechet_distance([0.0, 0.0], [[2.0, 1.0], [1.0, 2.0]], [1.0, 2.0], [[1.0, 0.0], [0.0, 4.0]])
    assert value == pytest.approx(expected, rel=1e-12)


def test_full_covariance_matches_denman_beavers_sqrtm():
    s1, s2 = _random_cov(5, 1), _random_cov(5, 2)
    mu1, mu2 = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    # Square root of the non-symmetric product by the Denman-Beavers iteration.
    y, z = s1 @ s2, torch.eye(5, dtype=torch.float64)
    for _ in range(50):
        y, z = 0.5 * (y + torch.linalg.inv(z)), 0.5 * (z + torch.linalg.inv(y))
    expected = 5.0 + float(s1.trace() + s2.trace() - 2 * y.trace())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_symmetry():
    mu1, mu2 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    s1, s2 = _random_cov(4, 3), _random_cov(4, 4)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_singular_covariances_stay_finite():
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.arange(1.0, 5.0)).double()
    zeros = torch.zeros(4, 4, dtype=torch.float64)
    mu = torch.zeros(4, dtype=torch.float64)
    # Fewer samples than dimensions: a rank-deficient estimated covariance.
    few = GaussianStats.from_embeddings(_embeddings(3, 8, seed=5))
    for s1, s2 in ((rank_one, zeros), (rank_one, rank_one), (zeros, zeros)):
        value = frechet_distance(mu, s1, mu, s2)
        assert math.isfinite(value) and value >= 0
    assert frechet_distance(mu, rank_one, mu, zeros) == pytest.approx(float(rank_one.trace()))
    assert math.isfinite(few.distance(GaussianStats.from_embeddings(_embeddings(3, 8, seed=6))))


def test_invalid_input_is_refused():
    with pytest.raises(AssertionError, match="positive semi-definite"):
        frechet_distance([0.0, 0.0], [[1.0, 0.0], [0.0, -1.0]], [0.0, 0.0], np.eye(2))
    with pytest.raises(AssertionError, match="sigma2"):
        frechet_distance([0.0, 0.0], np.eye(2), [0.0, 0.0], np.eye(3))


def test_stats_match_numpy():
    emb = _embeddings(50, 4, seed=7)
    stats = GaussianStats.from_embeddings(emb)
    np.testing.assert_allclose(stats.mean.numpy(), emb.double().mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(emb.double().numpy(), rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.count == 50


def test_streaming_equals_one_shot():
    emb = _embeddings(40, 6, seed=8, shift=3.0)
    streaming = MomentSums()
    for chunk in emb.split(7):
        streaming.update(chunk)
    one_shot = GaussianStats.from_embeddings(emb)
    stats = streaming.stats()
    assert stats.count == one_shot.count == 40
    assert torch.allclose(stats.mean, one_shot.mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(stats.cov, one_shot.cov, rtol=1e-9, atol=1e-12)

    fad = FrechetAudioDistance(_IdentityEmbedder())
    other = _embeddings(30, 6, seed=9)
    for chunk in emb.split(9):
        fad.update(chunk[:, None], sample_rate=1, which="real")
    for chunk in other.split(4):
        fad.update_fake(chunk[:, None], sample_rate=1)
    expected = one_shot.distance(GaussianStats.from_embeddings(other))
    assert fad.compute() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_save_load_round_trip(tmp_path, suffix):
    stats = GaussianStats.from_embeddings(_embeddings(20, 5, seed=10))
    loaded = GaussianStats.load(stats.save(tmp_path / f"ref{suffix}"))
    assert loaded.count == 20
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.cov, stats.cov)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        GaussianStats.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3))
    with pytest.raises(KeyError, match="bad.npz"):
        GaussianStats.load(bad)


def test_fad_against_itself_is_zero_and_grows_with_perturbation():
    clips = _embeddings(64, 4, seed=11)
    noise = _embeddings(64, 4, seed=12)
    fad = FrechetAudioDistance(_IdentityEmbedder())
    fad.update_real(clips[:, None], 1)
    fad.update_fake(clips[:, None], 1)
    assert fad.compute() == pytest.approx(0.0, abs=1e-9)
    scores = []
    for scale in (0.1, 0.3, 1.0, 3.0):
        fad.reset()
        fad.update_real(clips[:, None], 1)
        fad.update_fake((clips + scale * noise + scale)[:, None], 1)
        scores.append(fad.compute())
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_precomputed_reference():
    real, fake = _embeddings(30, 4, seed=13), _embeddings(30, 4, seed=14, shift=1.0)
    reference = GaussianStats.from_embeddings(real)
    fad = FrechetAudioDistance(_IdentityEmbedder(), reference=reference)
    fad.update_embeddings(fake)
    assert fad.compute() == pytest.approx(reference.distance(GaussianStats.from_embeddings(fake)), rel=1e-12)
    with pytest.raises(ValueError, match="reference"):
        fad.update_real(real[:, None], 1)
    fad.reset()
    assert fad.reference is reference
    with pytest.raises(ValueError, match="at least 2"):
        fad.compute()


def test_all_reduce_single_process_group(tmp_path):
    fad = FrechetAudioDistance(_IdentityEmbedder())
    real, fake = _embeddings(10, 3, seed=15), _embeddings(10, 3, seed=16)
    fad.update_embeddings(real, "real")
    fad.update_embeddings(fake, "fake")
    local = fad.compute()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        first_real, _ = fad.all_reduce()
        again_real, _ = fad.all_reduce()
        assert first_real.count == again_real.count == 10
        assert torch.equal(again_real.outer, first_real.outer)
        assert fad.compute() == pytest.approx(local, rel=1e-12)
        empty = MomentSums().all_reduced()
        assert empty.count == 0 and empty.dim is None
    finally:
        dist.destroy_process_group()
