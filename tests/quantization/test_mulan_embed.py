import pytest
import torch
import torch.nn.functional as F

from audiogen_lab.quantization.mulan_embed import (ConditioningEmbedding, MuLaNEmbedQuantizer,
                                                   NamespacedConditioning, load_quantizer, save_quantizer)
from audiogen_lab.utils.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _embeddings(num: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(num, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def fitted():
    quantizer = MuLaNEmbedQuantizer(dim=16, num_levels=4, codebook_size=32)
    errors = quantizer.fit(_embeddings(2000), iters=10, seed=0)
    return quantizer, errors


def _hierarchical_quantizer(levels: int = 3) -> MuLaNEmbedQuantizer:
    """Codebooks {+e_i, -e_i} scaled by 4^-l: the later levels sum to less than half the smallest
    distance between two codewords of a level, so greedy residual search recovers any codeword sum."""
    quantizer = MuLaNEmbedQuantizer(dim=16, num_levels=levels, codebook_size=32)
    signed_axes = torch.cat([torch.eye(16), -torch.eye(16)])
    codebooks = torch.stack([signed_axes * 4.0 ** -level for level in range(levels)])
    quantizer.load_state_dict({"codebooks": codebooks, "fitted": torch.tensor(True)})
    return quantizer


def test_same_seed_same_codebooks_and_same_input_same_codes(fitted):
    quantizer, _ = fitted
    again = MuLaNEmbedQuantizer(dim=16, num_levels=4, codebook_size=32)
    again.fit(_embeddings(2000), iters=10, seed=0)
    assert torch.equal(again.codebooks, quantizer.codebooks)
    other_seed = MuLaNEmbedQuantizer(dim=16, num_levels=4, codebook_size=32)
    other_seed.fit(_embeddings(2000), iters=10, seed=1)
    assert not torch.equal(other_seed.codebooks, quantizer.codebooks)

    x = _embeddings(64, seed=5)
    codes = quantizer(x)
    assert codes.dtype == torch.long and codes.shape == (64, 4)
    assert torch.equal(quantizer.quantize(x), codes)
    assert torch.equal(again(x), codes)
    assert ((codes >= 0) & (codes < 32)).all()


def test_error_strictly_decreases_with_levels_and_matches_fit_report(fitted):
    quantizer, errors = fitted
    x = _embeddings(2000)
    mse = [(quantizer.decode(quantizer.quantize(x, num_levels=n)) - x).pow(2).sum(-1).mean().item()
           for n in range(1, 5)]
    assert all(a > b for a, b in zip(mse, mse[1:])), mse
    assert mse[0] < 1.0  # better than the zero vector for unit vectors
    # Unit-norm inputs: the relative error is the mean squared distance.
    assert list(errors) == ["level_1", "level_2", "level_3", "level_4"]
    assert [errors[f"level_{n}"] for n in range(1, 5)] == pytest.approx(mse, rel=1e-4)


def test_fewer_levels_are_a_prefix(fitted):
    quantizer, _ = fitted
    x = _embeddings(32, seed=3)
    codes = quantizer(x)
    assert torch.equal(quantizer(x, num_levels=2), codes[:, :2])
    assert torch.equal(quantizer.decode(codes, num_levels=2), quantizer.decode(codes[:, :2]))
    with pytest.raises(ValueError, match="num_levels"):
        quantizer(x, num_levels=5)


def test_kmeans_on_hand_computed_clusters():
    # Any two starting points lead Lloyd's iterations to the pairs {0, 1} and {10, 11}.
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    quantizer = MuLaNEmbedQuantizer(dim=2, num_levels=1, codebook_size=2)
    errors = quantizer.fit(points, iters=5, seed=0)
    centroids = sorted(quantizer.codebooks[0].tolist())
    assert centroids == [[0.5, 0.0], [10.5, 0.0]]
    assert errors["level_1"] == pytest.approx(4 * 0.5 ** 2 / 222)  # 222 = 0 + 1 + 100 + 121
    codes = quantizer(points)
    assert codes[0, 0] == codes[1, 0] and codes[2, 0] == codes[3, 0] and codes[0, 0] != codes[2, 0]


def test_decode_quantize_round_trip_exact_on_codeword_sums():
    quantizer = _hierarchical_quantizer()
    codes = torch.randint(32, (50, 3), generator=torch.Generator().manual_seed(0))
    points = quantizer.decode(codes)
    expected = sum(quantizer.codebooks[level][codes[:, level]] for level in range(3))
    assert torch.equal(points, expected)
    assert torch.equal(quantizer.quantize(points), codes)
    assert torch.equal(quantizer.decode(quantizer.quantize(points)), points)


def test_unfitted_quantizer_raises():
    quantizer = MuLaNEmbedQuantizer(dim=16, num_levels=2, codebook_size=8)
    with pytest.raises(RuntimeError, match="not fitted"):
        quantizer(_embeddings(2))
    with pytest.raises(RuntimeError, match="not fitted"):
        quantizer.decode(torch.zeros(2, 2, dtype=torch.long))


def test_input_validation_names_the_dimension(fitted):
    quantizer, _ = fitted
    with pytest.raises(ValueError, match="dim=16"):
        quantizer(torch.randn(3, 8))
    with pytest.raises(ValueError, match="dim=16"):
        MuLaNEmbedQuantizer(dim=16, num_levels=1, codebook_size=4).fit(torch.randn(10, 8))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        quantizer.decode(torch.full((1, 4), 32))


def test_state_dict_round_trip_through_weights_only_load(fitted, tmp_path):
    quantizer, _ = fitted
    torch.save(quantizer.state_dict(), tmp_path / "state.th")
    restored = MuLaNEmbedQuantizer(dim=16, num_levels=4, codebook_size=32)
    restored.load_state_dict(torch.load(tmp_path / "state.th", weights_only=True))
    assert bool(restored.fitted)
    x = _embeddings(64, seed=7)
    assert torch.equal(restored(x), quantizer(x))


def test_save_load_round_trip(fitted, tmp_path):
    quantizer, _ = fitted
    path = save_quantizer(quantizer, tmp_path / "mulan_rvq.th", source="toy embeddings, seed 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mulan_rvq.th"]  # no temporary file left
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "mulan_embed_quantizer"
    assert (payload["dim"], payload["num_levels"], payload["codebook_size"]) == (16, 4, 32)
    loaded = load_quantizer(path)
    assert loaded.source == "toy embeddings, seed 0"
    assert torch.equal(loaded.codebooks, quantizer.codebooks)
    x = _embeddings(64, seed=8)
    assert torch.equal(loaded(x), quantizer(x))


def test_load_rejects_other_kinds_and_save_rejects_unfitted(tmp_path):
    other = save_checkpoint({"kind": "something_else", "state": {}}, tmp_path / "other.th")
    with pytest.raises(ValueError, match="other.th"):
        load_quantizer(other)
    with pytest.raises(RuntimeError, match="unfitted"):
        save_quantizer(MuLaNEmbedQuantizer(dim=4, num_levels=1, codebook_size=2), tmp_path / "q.th", source="x")
    assert not (tmp_path / "q.th").exists()


def test_fewer_embeddings_than_codewords():
    x = _embeddings(5, dim=8, seed=2)
    quantizer = MuLaNEmbedQuantizer(dim=8, num_levels=2, codebook_size=32)
    errors = quantizer.fit(x, iters=5, seed=0)
    assert torch.isfinite(quantizer.codebooks).all()
    assert errors["level_1"] == pytest.approx(0.0, abs=1e-12)  # every point got its own codeword
    assert torch.allclose(quantizer.decode(quantizer(x)), x, atol=1e-6)
    again = MuLaNEmbedQuantizer(dim=8, num_levels=2, codebook_size=32)
    again.fit(x, iters=5, seed=0)
    assert torch.equal(again.codebooks, quantizer.codebooks)
    # The surplus codewords are distinct (seeded noise), not exact copies.
    assert len(torch.unique(quantizer.codebooks[0], dim=0)) == 32


def test_conditioning_embedding_levels_are_distinct_and_gradients_sparse():
    table = ConditioningEmbedding(num_levels=3, codebook_size=10, dim=6)
    codes = torch.tensor([[4, 4, 4]])
    out = table(codes)
    assert out.shape == (1, 3, 6)
    weight = table.embedding.weight
    assert torch.equal(out[0], weight[[4, 14, 24]])
    assert not torch.equal(out[0, 0], out[0, 1]) and not torch.equal(out[0, 1], out[0, 2])
    out.sum().backward()
    used = weight.grad.abs().sum(-1) > 0
    assert used.nonzero().squeeze(-1).tolist() == [4, 14, 24]
    assert torch.equal(table(codes[:, :2]), out[:, :2].detach())
    with pytest.raises(ValueError, match="codebook_size"):
        table(torch.tensor([[10, 0, 0]]))


def test_namespaced_conditioning_keeps_namespaces_independent():
    torch.manual_seed(0)
    cond = NamespacedConditioning(("semantic", "coarse", "fine"), num_levels=2, codebook_size=8, dim=4)
    codes = torch.tensor([[1, 2], [3, 0]])
    semantic, coarse = cond(codes, "semantic"), cond(codes, "coarse")
    assert semantic.shape == (2, 2, 4) and not torch.equal(semantic, coarse)
    semantic.sum().backward()
    assert cond.tables["semantic"].embedding.weight.grad is not None
    assert cond.tables["coarse"].embedding.weight.grad is None
    assert cond.tables["fine"].embedding.weight.grad is None
    with torch.no_grad():
        cond.tables["semantic"].embedding.weight.add_(1.0)
    assert torch.equal(cond(codes, "coarse"), coarse)
    with pytest.raises(KeyError, match="semantic.*coarse.*fine"):
        cond(codes, "acoustic")
    assert sorted(cond.state_dict()) == [f"tables.{name}.embedding.weight" for name in ("coarse", "fine", "semantic")]
