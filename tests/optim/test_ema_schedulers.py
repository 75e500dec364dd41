"""EMA weights and learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audiogen_lab.optim.ema import ModuleDictEMA
from audiogen_lab.optim.schedulers import get_lr_scheduler


def test_ema_tracks_the_bias_corrected_average():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = ModuleDictEMA(nn.ModuleDict({"m": module}), decay=0.5, unbias=True)
    values = [1.0, 2.0, 3.0]
    for value in values:
        with torch.no_grad():
            module.weight.fill_(value)
        ema.step()
    # bias-corrected EMA with decay 0.5: weights 1/7, 2/7, 4/7 on the three values
    expected = (1 * 1 + 2 * 2 + 4 * 3) / 7
    assert float(ema.state["m.weight"]) == pytest.approx(expected)
    with ema.swap():
        assert float(module.weight.detach()) == pytest.approx(expected)
    assert float(module.weight.detach()) == 3.0


def test_ema_copies_integer_buffers_and_round_trips():
    module = nn.BatchNorm1d(2)
    ema = ModuleDictEMA(nn.ModuleDict({"bn": module}), decay=0.9)
    module(torch.randn(4, 2))
    ema.step()
    assert int(ema.state["bn.num_batches_tracked"]) == 1
    other = ModuleDictEMA(nn.ModuleDict({"bn": nn.BatchNorm1d(2)}), decay=0.9)
    other.load_state_dict(ema.state_dict())
    for key, value in ema.state.items():
        torch.testing.assert_close(other.state[key], value)
    assert other.count == ema.count


def _lrs(name, steps, **kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_lr_scheduler(opt, name, total_updates=steps, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_warmup_then_decay():
    lrs = _lrs("cosine", 100, warmup=10, lr_min_ratio=0.1)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_other_schedules_and_unknown_name():
    assert _lrs("step", 5, step_size=2, gamma=0.5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    inv = _lrs("inverse_sqrt", 20, warmup=4)
    assert inv[3] == pytest.approx(1.0) and inv[15] == pytest.approx(math.sqrt(4 / 16))
    lin = _lrs("linear_warmup", 11, warmup=1, lr_min_ratio=0.0)
    assert lin[0] == 1.0 and lin[5] == pytest.approx(0.6) and lin[-1] == pytest.approx(0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert get_lr_scheduler(opt, None, 10) is None
    with pytest.raises(KeyError, match="schedule.lr_scheduler"):
        get_lr_scheduler(opt, "triangle", 10)
