import io
import math

import pytest
import torch
from torch import nn

from audiogen_lab.adversarial import hinge_gen_loss
from audiogen_lab.losses import AdaptiveR1, gradient_penalty, hinge_discriminator_loss, jump_excess_penalty, r1_penalty
from audiogen_lab.utils import distrib

from ..distributed import run_ranks


class ToyCritic(nn.Module):
    """A small non-linear critic [B, D, T] -> [B]."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, 5, 3, padding=1)
        self.proj = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.tanh(self.conv(x)).mean(-1)).squeeze(-1)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-3.0, 0.0, 0.25])
    expected = (0 + 0.5 + 2.0) / 3 + (0 + 1.0 + 1.25) / 3
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(expected)
    assert hinge_gen_loss(fake).item() == pytest.approx(2.75 / 3)


def test_r1_matches_per_sample_autograd_and_trains_the_critic():
    torch.manual_seed(0)
    critic = ToyCritic()
    real = torch.randn(4, 3, 8).requires_grad_(True)
    penalty = r1_penalty(critic(real), real, gamma=3.0)
    norms = []
    for row in real.detach():
        row = row[None].requires_grad_(True)
        grad, = torch.autograd.grad(critic(row).sum(), row)
        norms.append(grad.pow(2).sum())
    assert penalty.item() == pytest.approx(0.5 * 3.0 * torch.stack(norms).mean().item(), rel=1e-5)
    penalty.backward()  # create_graph=True: the penalty reaches the critic's weights
    assert critic.conv.weight.grad is not None and critic.conv.weight.grad.abs().sum() > 0


def test_r1_on_a_linear_critic_is_analytic():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(6, 1), nn.Flatten(0))
    real = torch.randn(5, 2, 3).requires_grad_(True)
    penalty = r1_penalty(critic(real), real, gamma=2.0)
    weight = critic[1].weight
    assert penalty.item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-6)  # 0.5 * 2 * ||w||^2
    penalty.backward()
    assert torch.allclose(weight.grad, 2.0 * weight.detach())
    with pytest.raises(AssertionError, match="requires_grad_"):
        r1_penalty(critic(real.detach()), real.detach())


def test_one_centred_gradient_penalty():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(6, 1), nn.Flatten(0))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.5, -0.5]]))
    norm = math.sqrt(0.25 + 1 + 4 + 2.25 + 0.25)
    real, fake = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx((norm - 1) ** 2, rel=1e-6)
    assert gradient_penalty(critic, real, fake, center=0.0).item() == pytest.approx(norm ** 2, rel=1e-6)
    penalty.backward()
    weight = critic[1].weight
    assert torch.allclose(weight.grad, 2 * (norm - 1) * weight.detach() / norm, atol=1e-6)

    # a non-linear critic: the norm is taken at real + u (fake - real), u drawn from the generator
    torch.manual_seed(0)
    toy = ToyCritic(2)
    penalty = gradient_penalty(toy, real, fake, generator=torch.Generator().manual_seed(3))
    u = torch.rand(4, 1, 1, generator=torch.Generator().manual_seed(3))
    mixed = (real + u * (fake - real)).requires_grad_(True)
    grad, = torch.autograd.grad(toy(mixed).sum(), mixed)
    expected = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_adaptive_r1_direction_bounds_and_state():
    settings = dict(target=0.6, factor=1.1, min_gamma=0.01, max_gamma=10.0)
    adaptive = AdaptiveR1(gamma=1.0, **settings)
    assert AdaptiveR1.certainty(torch.tensor([3.0, 1.0, 2.0, -1.0])).item() == pytest.approx(0.5)
    assert adaptive.update(AdaptiveR1.certainty(torch.ones(8))) == pytest.approx(1.1)  # too sure: more R1
    assert adaptive.update(0.2) == pytest.approx(1.0)  # unsure: less R1
    assert adaptive.update(0.6) < 1.0  # at the target it relaxes
    for _ in range(100):
        adaptive.update(1.0)
    assert adaptive.gamma == 10.0
    for _ in range(200):
        adaptive.update(-1.0)
        assert 0.01 <= adaptive.gamma <= 10.0
    assert adaptive.gamma == 0.01
    adaptive.update(0.9)
    buffer = io.BytesIO()
    torch.save(adaptive.state_dict(), buffer)
    restored = AdaptiveR1(**settings)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert restored.gamma == adaptive.gamma and restored.last_certainty == pytest.approx(0.9)
    assert restored.update(1.0) == adaptive.update(1.0)
    with pytest.raises(AssertionError, match="min_gamma"):
        AdaptiveR1(gamma=1000.0)


def _two_rank_r1(rank: int) -> dict:
    """Rank 0's critic is sure of every real window, rank 1's of none: averaged over ranks, the certainty is
    0, below the target, so both ranks lower the weight alike; on its own, rank 0 would raise it."""
    logits = torch.full((4,), 1.0 if rank == 0 else -1.0)
    shared, alone = AdaptiveR1(gamma=1.0, factor=2.0), AdaptiveR1(gamma=1.0, factor=2.0)
    for _ in range(3):
        shared.update(distrib.average_tensor(AdaptiveR1.certainty(logits)))
        alone.update(AdaptiveR1.certainty(logits))
    return {"shared": shared.state_dict(), "alone": alone.state_dict()}


@pytest.mark.slow
def test_adaptive_r1_weight_is_the_same_on_every_rank(tmp_path):
    first, second = run_ranks(_two_rank_r1, tmp_path)
    assert first["shared"] == second["shared"] == {"gamma": 0.125, "last_certainty": 0.0}
    assert first["alone"]["gamma"] == 8.0 and second["alone"]["gamma"] == 0.125


def _random_walk(batch: int, frames: int, seed: int) -> torch.Tensor:
    """[batch, 4, frames] windows whose frame-to-frame steps are N(0, 0.01)."""
    return 0.1 * torch.randn(batch, 4, frames, generator=torch.Generator().manual_seed(seed)).cumsum(-1)


def test_jump_excess_penalty_finds_a_discontinuity_wherever_it_is():
    real = _random_walk(256, 32, seed=0)
    assert float(jump_excess_penalty(_random_walk(256, 32, seed=1), real)) < 0.01  # as rough as the data: ~free
    smooth = torch.linspace(0, 1, 32).expand(8, 4, 32)
    assert float(jump_excess_penalty(smooth, real)) == 0.0  # smoother than the data: free
    fake = _random_walk(256, 32, seed=1)
    fake[..., 16:] += 1.0  # a step of 10 steps' std at the join: squared jump 1.01 vs the data's 0.01
    at_join = float(jump_excess_penalty(fake, real))
    assert at_join == pytest.approx((1.01 / 0.01 - 1) ** 2 / 31, rel=0.05)
    moved = _random_walk(256, 32, seed=1)
    moved[..., 13:] += 1.0  # the same step moved inside a half costs the same
    assert float(jump_excess_penalty(moved, real)) == pytest.approx(at_join, rel=0.05)


def test_jump_excess_penalty_trains_the_generator_only():
    real = _random_walk(16, 32, seed=0).requires_grad_(True)
    fake = _random_walk(16, 32, seed=1)
    fake[..., 16:] += 1.0
    fake.requires_grad_(True)
    jump_excess_penalty(fake, real).backward()
    assert real.grad is None
    # a descent step pulls the two sides of the step together: down on the right, up on the left
    assert float(fake.grad[..., 16].mean()) > 0 > float(fake.grad[..., 15].mean())
