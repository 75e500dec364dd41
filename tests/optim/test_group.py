"""Optimizer groups: accumulation equals one big batch, clipping, schedules only after real steps,
and the fp16 scaler call order."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from audiogen_lab.optim.group import Accumulation, OptimizerGroup


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))


def _data(n: int = 32):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=gen)
    return x, x.sum(dim=1, keepdim=True).sin()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_accumulation_equals_one_big_batch(optimizer):
    x, y = _data()
    results = []
    for steps in (1, 4):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1) if optimizer == "sgd" else \
            torch.optim.Adam(model.parameters(), lr=1e-2)
        accumulation = Accumulation(steps)
        group = OptimizerGroup("g", [model], opt, max_norm=1.0, accumulation=accumulation)
        for _ in range(3):  # three updates
            for micro, (xb, yb) in enumerate(zip(x.chunk(steps), y.chunk(steps))):
                accumulation.micro = micro
                group.backward(nn.functional.mse_loss(model(xb), yb))
                out = group.step()
                assert (out is None) == (micro < steps - 1)
        assert group.steps_taken == 3
        results.append([p.detach().clone() for p in model.parameters()])
    for big, small in zip(*results):
        torch.testing.assert_close(big, small, rtol=1e-5, atol=1e-6)


def test_clipping_and_schedule_step_only_with_the_optimizer():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    accumulation = Accumulation(2)
    group = OptimizerGroup("adversary", [model], opt, scheduler=sched, max_norm=1e-3, accumulation=accumulation)
    x, y = _data(8)
    before = [p.detach().clone() for p in model.parameters()]
    accumulation.micro = 0
    group.backward((model(x) - y).pow(2).mean() * 1e3)
    assert group.step() is None and group.lr == 1.0  # not the last micro-batch: nothing moves
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    accumulation.micro = 1
    group.backward((model(x) - y).pow(2).mean() * 1e3)
    out = group.step()
    assert out["adversary_grad_norm"] > 1e-3  # reported before clipping
    moved = torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(before, model.parameters())))
    assert float(moved) == pytest.approx(1e-3, rel=1e-3)  # lr 1 x clipped norm
    assert group.lr == 0.5 and all(p.grad is None for p in model.parameters())
    state = group.state_dict()
    fresh = OptimizerGroup("adversary", [model], torch.optim.SGD(model.parameters(), lr=1.0),
                           scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step))
    fresh.load_state_dict(state)
    assert fresh.steps_taken == 1 and fresh.scheduler.last_epoch == 1


class _RecordingScaler(torch.amp.GradScaler):
    """A real CPU grad scaler that records the calls made to it."""

    def __init__(self, calls: list, **kwargs) -> None:
        super().__init__("cpu", **kwargs)
        self.calls = calls

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        return super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.calls.append("update")
        return super().update(new_scale)


def test_fp16_scaler_call_order_and_skipped_schedule():
    calls: list = []
    scaler = _RecordingScaler(calls, init_scale=2.0 ** 8)
    gen, disc = _model(0), _model(1)

    def _group(name: str, model: nn.Module) -> OptimizerGroup:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return OptimizerGroup(name, [model], optimizer, scaler=scaler,
                              scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.9 ** s))
    groups = [_group("g", gen), _group("d", disc)]
    x, y = _data(8)
    for group, model in zip(groups, (gen, disc)):
        group.backward(nn.functional.mse_loss(model(x), y))
    for group in groups:
        group.step()
    scaler.update()  # the solver's end_update: once per update, whatever the number of groups
    assert calls == ["scale", "scale", "unscale_", "step", "unscale_", "step", "update"]
    assert all(group.steps_taken == 1 and group.lr == pytest.approx(0.09) for group in groups)
    # an inf gradient: the scaler skips the optimizer step, and the schedule does not move
    groups[0].backward(nn.functional.mse_loss(gen(x), y) * float("inf"))
    params = [p.detach().clone() for p in gen.parameters()]
    groups[0].step()
    scaler.update()
    assert groups[0].steps_taken == 1 and groups[0].lr == pytest.approx(0.09)
    assert all(torch.equal(a, b) for a, b in zip(params, gen.parameters()))
    assert scaler.get_scale() < 2.0 ** 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_autocast_update_on_cuda():
    model = _model().cuda()
    scaler = torch.amp.GradScaler("cuda")
    group = OptimizerGroup("g", [model], torch.optim.Adam(model.parameters(), lr=1e-3), scaler=scaler)
    x, y = (t.cuda() for t in _data(16))
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        group.backward(loss)
        group.step()
        scaler.update()
    assert group.steps_taken >= 1 and all(torch.isfinite(p).all() for p in model.parameters())
