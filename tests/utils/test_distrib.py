"""Distributed helpers on two real gloo processes (loopback only, file rendezvous)."""
from __future__ import annotations

import pytest
import torch

from audiogen_lab.utils import distrib

from ..distributed import run_ranks


def _body(rank: int) -> dict:
    results = {}
    # gather keeping gradients: every rank's loss reaches every rank's input
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = distrib.all_gather_with_grad(x)
    weights = torch.arange(12, dtype=torch.float32).view(4, 3)
    (gathered * weights).sum().backward()
    results["gathered"] = gathered.detach()
    results["grad"] = x.grad.detach()
    # metrics averaged by name, whatever keys each rank has
    metrics = {"loss": float(rank), "only_rank1": 5.0} if rank == 1 else {"loss": 2.0, "a_rank0": 1.0}
    results["metrics"] = distrib.average_metrics(metrics, count=1.0 + rank)
    results["any"] = (distrib.any_rank(rank == 1), distrib.any_rank(False))
    # per-rank random streams after identical seeding
    distrib.seed_rank_streams(123)
    results["noise"] = torch.rand(4)
    states = distrib.gather_rng_states()
    results["restored"] = None
    distrib.restore_rng_states(states)
    results["restored"] = torch.rand(4)
    return results


@pytest.mark.slow
def test_two_ranks_gather_average_and_streams(tmp_path):
    r0, r1 = run_ranks(_body, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.th", weights_only=False) for r in (0, 1))
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    torch.testing.assert_close(r0["gathered"], expected)
    torch.testing.assert_close(r1["gathered"], expected)
    weights = torch.arange(12, dtype=torch.float32).view(4, 3)
    torch.testing.assert_close(r0["grad"], 2 * weights[:2])  # both ranks' losses, summed
    torch.testing.assert_close(r1["grad"], 2 * weights[2:])
    assert r0["metrics"] == r1["metrics"]
    assert r0["metrics"]["loss"] == pytest.approx((2.0 * 1 + 1.0 * 2) / 3)
    assert r0["metrics"]["a_rank0"] == pytest.approx(1.0) and r0["metrics"]["only_rank1"] == pytest.approx(5.0)
    assert r0["any"] == (True, False) and r1["any"] == (True, False)
    assert not torch.equal(r0["noise"], r1["noise"])
    assert not torch.equal(r0["restored"], r1["restored"])


def test_single_process_helpers_are_identities():
    x = torch.randn(3, 2, requires_grad=True)
    assert distrib.all_gather_with_grad(x) is x
    assert distrib.average_metrics({"a": 1.0}, 3.0) == {"a": 1.0}
    assert distrib.any_rank(True) and not distrib.any_rank(False)
    distrib.seed_rank_streams(5)
    first = torch.rand(3)
    states = distrib.gather_rng_states()
    second = torch.rand(3)
    distrib.restore_rng_states(states)
    torch.testing.assert_close(torch.rand(3), second)
    assert not torch.equal(first, second)
