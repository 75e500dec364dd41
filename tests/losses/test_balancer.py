import io

import pytest
import torch
from torch.nn import functional as F

from audiogen_lab.losses import Balancer


def _directions(seed: int = 0, shape=(2, 1, 16)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def _linear_losses(x, a, b, scale_b=1000.0):
    """Losses whose gradients w.r.t. x are exactly a and scale_b * b."""
    return {"a": (x * a).sum(), "b": scale_b * (x * b).sum()}


def test_gradient_shares_follow_weights_whatever_the_loss_scale():
    a, b = _directions()
    x = torch.zeros_like(a, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 3.0}, per_batch_item=False, total_norm=2.0)
    effective = balancer.backward(_linear_losses(x, a, b), x)
    expected = 2.0 * (0.25 * a / a.norm() + 0.75 * b / b.norm())
    torch.testing.assert_close(x.grad, expected)
    # Effective loss = sum of scale_i * loss_i with the scales used for the gradients.
    scale_a, scale_b = 2.0 * 0.25 / a.norm(), 2.0 * 0.75 / (1000.0 * b.norm())
    assert effective.item() == pytest.approx((scale_a * (x * a).sum() + scale_b * 1000.0 * (x * b).sum()).item(),
                                             abs=1e-6)


def test_effective_loss_value():
    a, b = _directions()
    x = torch.ones_like(a, requires_grad=True)
    losses = _linear_losses(x, a, b)
    balancer = Balancer({"a": 1.0, "b": 1.0}, per_batch_item=False)
    effective = balancer.backward(losses, x)
    expected = 0.5 * a.sum() / a.norm() + 0.5 * b.sum() / b.norm()
    assert effective.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_batch_item_norm_is_mean_of_item_norms():
    a, _ = _directions()
    a[1] *= 5.0
    x = torch.zeros_like(a, requires_grad=True)
    Balancer({"a": 1.0}, per_batch_item=True).backward({"a": (x * a).sum()}, x)
    item_norms = a.flatten(1).norm(dim=1)
    torch.testing.assert_close(x.grad, a / item_norms.mean())


def test_plain_weighted_sum_without_balancing():
    a, b = _directions()
    x = torch.ones_like(a, requires_grad=True)
    losses = _linear_losses(x, a, b)
    effective = Balancer({"a": 2.0, "b": 0.5}, balance_grads=False).backward(losses, x)
    torch.testing.assert_close(x.grad, 2.0 * a + 0.5 * 1000.0 * b)
    assert effective.item() == pytest.approx((2.0 * losses["a"] + 0.5 * losses["b"]).item(), rel=1e-5)


def test_zero_weight_is_skipped_and_errors_are_explicit():
    a, b = _directions()
    x = torch.zeros_like(a, requires_grad=True)
    unrelated = torch.ones((), requires_grad=True) * 3.0  # does not depend on x
    Balancer({"a": 1.0, "other": 0.0}, per_batch_item=False).backward({"a": (x * a).sum(), "other": unrelated}, x)
    torch.testing.assert_close(x.grad, a / a.norm())
    with pytest.raises(AssertionError, match="no balancer weight"):
        Balancer({"a": 1.0}).backward({"a": (x * a).sum(), "b": (x * b).sum()}, x)
    with pytest.raises(ValueError, match="does not depend"):
        Balancer({"a": 1.0, "other": 1.0}).backward({"a": (x * a).sum(), "other": unrelated}, x)


def test_norms_are_averaged_with_bias_corrected_ema():
    a, _ = _directions()
    decay = 0.9
    balancer = Balancer({"a": 1.0}, per_batch_item=False, ema_decay=decay)
    norms = []
    for factor in (1.0, 4.0):
        x = torch.zeros_like(a, requires_grad=True)
        balancer.backward({"a": factor * (x * a).sum()}, x)
        norms.append(factor * a.norm())
    average = (decay * norms[0] + norms[1]) / (decay + 1.0)
    torch.testing.assert_close(x.grad, 4.0 * a / average)


def test_monitor_reports_gradient_shares():
    a, b = _directions()
    x = torch.zeros_like(a, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 1.0}, per_batch_item=False, monitor=True)
    balancer.backward(_linear_losses(x, a, b, scale_b=3.0), x)
    metrics = balancer.metrics
    total = a.norm() + 3.0 * b.norm()
    assert metrics["ratio_a"] == pytest.approx((a.norm() / total).item(), rel=1e-5)
    assert metrics["ratio_a"] + metrics["ratio_b"] == pytest.approx(1.0)
    assert Balancer({"a": 1.0}).metrics == {}


def _run_steps(balancer, steps, start):
    grads = []
    for step in range(start, start + steps):
        a, b = _directions(seed=step)
        x = torch.zeros_like(a, requires_grad=True)
        balancer.backward(_linear_losses(x, a, b, scale_b=10.0 * (step + 1)), x)
        grads.append(x.grad)
    return grads


def test_resume_from_state_dict_continues_identically():
    kwargs = dict(weights={"a": 1.0, "b": 2.0}, ema_decay=0.5)
    uninterrupted = Balancer(**kwargs)
    reference = _run_steps(uninterrupted, 5, start=0)

    first = Balancer(**kwargs)
    _run_steps(first, 3, start=0)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Balancer(**kwargs)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    continued = _run_steps(resumed, 2, start=3)
    for got, expected in zip(continued, reference[3:]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # Without the state, the moving averages restart and the gradients differ.
    fresh = _run_steps(Balancer(**kwargs), 2, start=3)
    assert not torch.allclose(fresh[0], reference[3])


def test_training_with_losses_of_very_different_scales():
    torch.manual_seed(0)
    target = torch.randn(4, 1, 64)
    estimate = torch.zeros_like(target, requires_grad=True)
    optimizer = torch.optim.SGD([estimate], lr=0.05)
    balancer = Balancer({"l1": 1.0, "l2": 1.0}, ema_decay=0.9)
    for _ in range(300):
        optimizer.zero_grad()
        losses = {"l1": 1e-4 * F.l1_loss(estimate, target), "l2": 1e4 * F.mse_loss(estimate, target)}
        balancer.backward(losses, estimate)
        optimizer.step()
    assert F.mse_loss(estimate, target).item() < 0.01 * F.mse_loss(torch.zeros_like(target), target).item()
