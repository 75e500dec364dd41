import math
import time

import pytest
import torch

from audiogen_lab.metrics import (CodebookStats, codebook_dependence, codebook_usage,
                                  pairwise_normalized_mutual_information)


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
