import math
import time

import pytest
import torch

from audiogen_lab.metrics import (CodebookStats, codebook_dependence, codebook_usage,
                                  pairwise_normalized_mutual_information)

from ..distributed import run_ranks


def _codes(*levels) -> torch.Tensor:
    """Codes [1, K, T] from K python lists."""
    return torch.tensor(levels).unsqueeze(0)


def _uniform_independent(cardinality=16, batch=8, levels=3, frames=512, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(cardinality, (batch, levels, frames), generator=generator)


def test_usage_and_perplexity_by_hand():
    codes = _codes([0, 0, 1, 1], [3, 3, 3, 3], [0, 1, 2, 3])
    usage = codebook_usage(codes, cardinality=4)
    torch.testing.assert_close(usage["perplexity"], torch.tensor([2.0, 1.0, 4.0]))
    torch.testing.assert_close(usage["usage"], torch.tensor([0.5, 0.25, 1.0]))
    torch.testing.assert_close(usage["entropy"], torch.tensor([math.log(2), 0.0, math.log(4)]))
    skewed = codebook_usage(_codes([0, 0, 0, 1]), cardinality=8)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert skewed["perplexity"].item() == pytest.approx(math.exp(entropy), rel=1e-6)


def test_nmi_by_hand():
    # a = [0,0,0,1], b = [0,0,1,1]: joint frequencies (0,0)=1/2, (0,1)=1/4, (1,1)=1/4.
    h_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_b = math.log(2)
    h_ab = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    expected = (h_a + h_b - h_ab) / math.sqrt(h_a * h_b)
    nmi = pairwise_normalized_mutual_information(_codes([0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1]), cardinality=2)
    assert nmi[0, 1].item() == pytest.approx(expected, rel=1e-5)
    assert nmi[1, 0].item() == nmi[0, 1].item()
    assert nmi[1, 2].item() == pytest.approx(0.0, abs=1e-7)  # [0,0,1,1] vs [0,1,0,1]: exactly independent
    torch.testing.assert_close(nmi.diagonal(), torch.ones(3))
    constant = pairwise_normalized_mutual_information(_codes([1, 1, 1, 1], [0, 1, 0, 1]), cardinality=2)
    torch.testing.assert_close(constant, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_identical_levels_have_nmi_one():
    codes = _uniform_independent()
    codes[:, 1] = codes[:, 0]
    codes[:, 2] = (codes[:, 0] * 5 + 3) % 16  # a bijection of level 0
    dependence = codebook_dependence(codes, cardinality=16, generator=torch.Generator().manual_seed(0))
    assert dependence["nmi"] == pytest.approx(1.0, abs=1e-6)
    assert 0.97 < dependence["nmi_corrected"] < 1.0


def test_independent_levels_have_corrected_nmi_near_zero():
    codes = _uniform_independent()
    dependence = codebook_dependence(codes, cardinality=16, generator=torch.Generator().manual_seed(0))
    # The plug-in estimate is biased upwards (about (N-1)^2 / (2 F ln N) for F frames); the
    # shuffle correction removes the bias.
    bias = 15 ** 2 / (2 * codes.shape[0] * codes.shape[2] * math.log(16))
    assert dependence["nmi"] == pytest.approx(bias, rel=0.3)
    assert abs(dependence["nmi_corrected"]) < 0.2 * dependence["nmi"]


def test_partial_dependence_is_between():
    codes = _uniform_independent(levels=2, seed=1)
    half = codes.shape[-1] // 2
    codes[:, 1, :half] = codes[:, 0, :half]
    value = codebook_dependence(codes, cardinality=16, generator=torch.Generator().manual_seed(0))["nmi_corrected"]
    assert 0.1 < value < 0.9


def test_streaming_stats_match_one_shot():
    codes = _uniform_independent(seed=2)
    codes[:, 2] = (codes[:, 0] + codes[:, 1]) % 16  # pairwise independent but jointly dependent
    codes[:4, 1] = codes[:4, 0]
    stats = CodebookStats(num_codebooks=3, cardinality=16)
    stats.update(codes[:4])
    stats.update(codes[4:])
    metrics = stats.compute()
    usage = codebook_usage(codes, 16)
    for k in range(3):
        assert metrics[f"perplexity_q{k}"] == pytest.approx(usage["perplexity"][k].item(), rel=1e-5)
        assert metrics[f"usage_q{k}"] == pytest.approx(usage["usage"][k].item())
    one_shot = codebook_dependence(codes, 16)
    assert metrics["nmi"] == pytest.approx(one_shot["nmi"], rel=1e-6)
    assert metrics["nmi_corrected"] == pytest.approx(one_shot["nmi_corrected"], abs=0.01)
    assert stats.compute() == metrics  # compute does not consume the counts
    stats.reset()
    assert stats.compute()["nmi"] == 0.0 and stats.compute()["perplexity_q0"] == 1.0


def test_restricted_pairs_and_input_checks():
    codes = _uniform_independent()
    codes[:, 1] = codes[:, 0]
    adjacent = CodebookStats(3, 16, pairs=[(1, 2)])
    adjacent.update(codes)
    assert adjacent.compute()["nmi"] < 0.1
    with pytest.raises(AssertionError, match=r"\[0, 16\)"):
        codebook_usage(codes + 16, 16)
    with pytest.raises(AssertionError, match="integer"):
        codebook_usage(codes.float(), 16)
    with pytest.raises(AssertionError, match="Expected 4 codebooks"):
        CodebookStats(4, 16).update(codes)


def test_large_codebooks_are_fast():
    codes = _uniform_independent(cardinality=1024, batch=4, levels=4, frames=1024)
    start = time.process_time()
    dependence = codebook_dependence(codes, cardinality=1024)
    stats = CodebookStats(4, 1024)
    stats.update(codes)
    stats.compute()
    assert time.process_time() - start < 10.0
    # 4096 frames over 1M joint bins: raw NMI is dominated by bias, the corrected value is not.
    assert dependence["nmi"] > 0.3 and abs(dependence["nmi_corrected"]) < 0.05


def _dense_reference(chunks, cardinality, pairs, shuffle_seed):
    """Statistics of a list of code batches [B, K, T] with full N x N joint tables per pair, the
    shuffled tables built from each batch's levels permuted as `torch.rand(...).argsort()` with a
    generator seeded with `shuffle_seed`, in batch order."""
    generator = torch.Generator().manual_seed(shuffle_seed)
    num_levels = chunks[0].shape[1]
    counts = torch.zeros(num_levels, cardinality, dtype=torch.long)
    joint = torch.zeros(len(pairs), cardinality, cardinality, dtype=torch.long)
    joint_shuffled = torch.zeros_like(joint)
    for codes in chunks:
        levels = codes.transpose(0, 1).reshape(num_levels, -1).long()
        order = torch.rand(levels.shape, generator=generator).argsort(dim=-1)
        shuffled = torch.gather(levels, 1, order)
        for k in range(num_levels):
            counts[k] += torch.bincount(levels[k], minlength=cardinality)
        for p, (i, j) in enumerate(pairs):
            joint[p].index_put_((levels[i], levels[j]), torch.ones_like(levels[i]), accumulate=True)
            joint_shuffled[p].index_put_((shuffled[i], shuffled[j]), torch.ones_like(levels[i]), accumulate=True)

    def entropy(c):
        p = c[c > 0].double() / c.sum()
        return float(-(p * p.log()).sum())

    def nmi(table):
        h_a, h_b = entropy(table.sum(1)), entropy(table.sum(0))
        if h_a <= 0 or h_b <= 0:
            return 0.0
        return min(max(h_a + h_b - entropy(table.flatten()), 0.0) / math.sqrt(h_a * h_b), 1.0)

    metrics = {}
    for k in range(num_levels):
        metrics[f"perplexity_q{k}"] = math.exp(entropy(counts[k]))
        metrics[f"usage_q{k}"] = float((counts[k] > 0).double().mean())
    metrics["nmi"] = sum(nmi(t) for t in joint) / len(pairs)
    metrics["nmi_shuffled"] = sum(nmi(t) for t in joint_shuffled) / len(pairs)
    metrics["nmi_corrected"] = metrics["nmi"] - metrics["nmi_shuffled"]
    return metrics


@pytest.mark.parametrize("cardinality, pairs", [(32, None), (64, [(1, 0), (3, 2), (4, 1)])])
def test_streaming_stats_equal_dense_reference(cardinality, pairs):
    generator = torch.Generator().manual_seed(4)
    chunks = []
    for _ in range(3):
        codes = torch.randint(cardinality, (3, 5, 300), generator=generator)
        codes[:, 1] = codes[:, 0] // 2  # dependent levels
        codes[:, 4] = 7  # a constant level
        chunks.append(codes)
    stats = CodebookStats(5, cardinality, pairs=pairs, shuffle_seed=11)
    for codes in chunks:
        stats.update(codes)
    metrics = stats.compute()
    pairs = pairs or [(i, j) for i in range(5) for j in range(i + 1, 5)]
    expected = _dense_reference(chunks, cardinality, pairs, shuffle_seed=11)
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert metrics["nmi"] > 0.1 and metrics["usage_q4"] == 1 / cardinality


def test_shuffle_seed_sets_the_permutations():
    codes = _uniform_independent(levels=3, seed=5)
    values = {}
    for seed in (0, 0, 1):
        stats = CodebookStats(3, 16, shuffle_seed=seed)
        stats.update(codes[:4])
        stats.update(codes[4:])
        values.setdefault(seed, []).append(stats.compute())
    assert values[0][0] == values[0][1]  # reproducible
    assert values[0][0]["nmi"] == values[1][0]["nmi"]
    assert values[0][0]["nmi_shuffled"] != values[1][0]["nmi_shuffled"]


def test_memory_grows_with_frames_not_squared_codebook_size():
    cardinality, levels = 1024, 8
    stats = CodebookStats(levels, cardinality)
    generator = torch.Generator().manual_seed(6)
    for _ in range(4):
        stats.update(torch.randint(cardinality, (4, levels, 1000), generator=generator))
    held = sum(value.numel() * value.element_size() for value in vars(stats).values() if torch.is_tensor(value))
    held += sum(chunk.numel() * chunk.element_size() for chunk in stats._chunks)
    assert held == stats.memory_bytes
    dense = cardinality ** 2 * len(stats.pairs) * 8  # two int32 tables per pair
    assert stats.memory_bytes < dense / 500
    # codes kept as int16: 2 bytes per level and frame, plus the [K, N] counts
    assert stats.memory_bytes == levels * 16000 * 2 + levels * cardinality * 8
    stats.reset()
    assert stats.memory_bytes == 0



def test_many_levels_of_large_codebooks_compute_quickly():
    stats = CodebookStats(32, 1024)
    stats.update(torch.randint(1024, (4, 32, 1024), generator=torch.Generator().manual_seed(7)))
    start = time.process_time()
    metrics = stats.compute()
    assert time.process_time() - start < 10.0  # 992 joint entropies over 4096 frames
    assert abs(metrics["nmi_corrected"]) < 0.05 and metrics["usage_q31"] > 0.9

def _two_rank_body(rank: int) -> dict:
    codes = _uniform_independent(cardinality=32, batch=4, levels=3, frames=100 + 50 * rank, seed=rank)
    codes[:, 1] = codes[:, 0]
    stats = CodebookStats(3, 32, shuffle_seed=2)
    stats.update(codes[:2])
    stats.update(codes[2:])
    return {"codes": codes, "metrics": stats.compute()}


@pytest.mark.slow
def test_two_ranks_pool_their_codes(tmp_path):
    results = run_ranks(_two_rank_body, tmp_path)
    assert results[0]["metrics"] == results[1]["metrics"]
    metrics = results[0]["metrics"]
    # raw NMI and usage are those of all the codes of both ranks; each rank shuffled its own updates
    levels = [torch.cat([r["codes"][:2].transpose(0, 1).flatten(1), r["codes"][2:].transpose(0, 1).flatten(1)], 1)
              for r in results]
    pooled = torch.cat(levels, dim=1).unsqueeze(0)
    one_shot = codebook_usage(pooled, 32)
    assert metrics["perplexity_q2"] == pytest.approx(one_shot["perplexity"][2].item(), rel=1e-6)
    nmi = pairwise_normalized_mutual_information(pooled, 32).double()
    assert metrics["nmi"] == pytest.approx(float((nmi.sum() - nmi.trace()) / 6), rel=1e-6)
    shuffled = []  # each rank permuted each of its updates with its own generator seeded with 2
    for result in results:
        generator = torch.Generator().manual_seed(2)
        for chunk in (result["codes"][:2], result["codes"][2:]):
            rows = chunk.transpose(0, 1).flatten(1)
            shuffled.append(torch.gather(rows, 1, torch.rand(rows.shape, generator=generator).argsort(dim=-1)))
    nmi_shuffled = pairwise_normalized_mutual_information(torch.cat(shuffled, dim=1).unsqueeze(0), 32).double()
    assert metrics["nmi_shuffled"] == pytest.approx(float((nmi_shuffled.sum() - nmi_shuffled.trace()) / 6), rel=1e-6)
    assert metrics["nmi_corrected"] > 0.2
