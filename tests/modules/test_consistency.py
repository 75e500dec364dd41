import math

import pytest
import torch
from torch import nn

from audiogen_lab.modules.consistency import (EDMPreconditioning, consistency_loss, discretization_step,
                                              huber_constant, karras_index, karras_sigma, pseudo_huber,
                                              sample, sample_noise_index, sampling_sigmas)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_boundary_condition_is_exact(dtype):
    precond = EDMPreconditioning(sigma_data=0.5, sigma_min=0.002)
    sigma = karras_sigma(torch.zeros(3, dtype=dtype))
    c_skip, c_out, c_in, c_noise = precond.scalings(sigma)
    assert c_skip.shape == (3, 1, 1, 1) and c_noise.shape == (3,)
    assert torch.all(c_skip == 1) and torch.all(c_out == 0)
    x = torch.randn(3, 2, 4, 5, dtype=dtype)
    out = precond.denoise(lambda y, noise_level: torch.full_like(y, 123.0), x, sigma)
    assert torch.equal(out, x)


def test_scalings_match_their_formulas():
    precond = EDMPreconditioning(sigma_data=0.5, sigma_min=0.002)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = precond.scalings(sigma, ndim=3)
    assert c_skip.shape == (3, 1, 1)
    s = 1.0
    assert c_skip[1].item() == pytest.approx(0.25 / ((s - 0.002) ** 2 + 0.25))
    assert c_out[1].item() == pytest.approx((s - 0.002) * 0.5 / math.sqrt(s ** 2 + 0.25))
    assert c_in[1].item() == pytest.approx(1 / math.sqrt(s ** 2 + 0.25))
    assert c_noise[2].item() == pytest.approx(math.log(10.0) / 4)


def test_karras_sigma_endpoints_and_inverse():
    u = torch.tensor([0.0, 0.3, 1.0])
    sigma = karras_sigma(u, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert sigma[0] == torch.tensor(0.002) and sigma[2] == torch.tensor(80.0)
    assert karras_sigma(torch.zeros(1, dtype=torch.float64)).item() == 0.002
    assert sigma[0] < sigma[1] < sigma[2]
    u64 = torch.linspace(0, 1, 7, dtype=torch.float64)
    assert torch.allclose(karras_index(karras_sigma(u64)), u64, atol=1e-12)


def test_discretization_step_is_geometric():
    assert discretization_step(0.0) == pytest.approx(0.1)
    assert discretization_step(1.0) == pytest.approx(0.001)
    assert discretization_step(0.5) == pytest.approx(0.01)
    assert discretization_step(-3.0) == pytest.approx(0.1) and discretization_step(7.0) == pytest.approx(0.001)
    assert discretization_step(0.25, start=1.0, end=1e-4) == pytest.approx(0.1)


def test_noise_indices_stay_in_range_and_follow_the_log_normal():
    delta = 0.05
    gen = torch.Generator().manual_seed(0)
    u = sample_noise_index(20000, gen, delta=delta, p_mean=-1.1, p_std=2.0)
    assert u.shape == (20000,)
    assert u.min() >= 0 and u.max() <= 1 - delta
    # Median of the log-normal, far from both clamps: half the levels lie below exp(p_mean).
    below = (karras_sigma(u) < math.exp(-1.1)).float().mean().item()
    assert below == pytest.approx(0.5, abs=0.02)
    # Away from the clamps, log sigma is the normal N(-1.1, 2^2) restricted to the unclamped interval.
    log_sigma = karras_sigma(u).log()
    inside = (u > 0) & (u < 1 - delta)
    lo, hi = math.log(0.002), math.log(karras_sigma(torch.tensor(1 - delta)).item())
    normal = torch.distributions.Normal(-1.1, 2.0)
    a, b = torch.tensor((lo + 1.1) / 2.0), torch.tensor((hi + 1.1) / 2.0)
    std_normal = torch.distributions.Normal(0.0, 1.0)
    pdf = lambda t: std_normal.log_prob(t).exp()  # noqa: E731
    expected_mean = -1.1 + 2.0 * (pdf(a) - pdf(b)) / (std_normal.cdf(b) - std_normal.cdf(a))
    assert log_sigma[inside].mean().item() == pytest.approx(expected_mean.item(), abs=0.05)
    expected_inside = (normal.cdf(torch.tensor(hi)) - normal.cdf(torch.tensor(lo))).item()
    assert inside.float().mean().item() == pytest.approx(expected_inside, abs=0.02)


def test_noise_indices_are_reproducible():
    first = sample_noise_index(8, torch.Generator().manual_seed(3), delta=0.1)
    second = sample_noise_index(8, torch.Generator().manual_seed(3), delta=0.1)
    assert torch.equal(first, second)


def test_pseudo_huber_closed_form():
    a = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    b = torch.zeros(2, 2)
    out = pseudo_huber(a, b, c=1.0)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(math.sqrt(25 + 1) - 1)
    assert out[1].item() == pytest.approx(math.sqrt(2 + 1) - 1)
    assert torch.equal(pseudo_huber(a, a, c=0.5), torch.zeros(2))
    assert huber_constant(4) == pytest.approx(0.00108)


class _RecordingDenoiser(nn.Module):
    """Preconditioned tiny linear network that records whether autograd was on at each call."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim + 1, dim)
        self.precond = EDMPreconditioning()
        self.grad_calls: list = []

    def net(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([x, c_noise[:, None]], dim=1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.grad_calls.append(torch.is_grad_enabled())
        return self.precond.denoise(self.net, x, sigma)


def test_teacher_branch_carries_no_gradient():
    torch.manual_seed(0)
    model = _RecordingDenoiser(6)
    x0, noise = torch.randn(4, 6), torch.randn(4, 6)
    u, delta = torch.tensor([0.0, 0.2, 0.5, 0.85]), 0.1
    loss, metrics = consistency_loss(model, x0, u, delta, noise, huber_c=0.01)
    assert model.grad_calls == [True, False]
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    sigma_t, sigma_s = karras_sigma(u), karras_sigma(u + delta)
    teacher = model(x0 + sigma_t[:, None] * noise, sigma_t).detach()
    student = model(x0 + sigma_s[:, None] * noise, sigma_s)
    expected = (pseudo_huber(student, teacher, 0.01) / (sigma_s - sigma_t)).mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(grads, [p.grad for p in model.parameters()]):
        assert torch.allclose(got, want, atol=1e-6)
    assert metrics['sigma'].item() == pytest.approx(sigma_s.mean().item())
    assert metrics['distance'].item() == pytest.approx(pseudo_huber(student, teacher, 0.01).mean().item())


def test_loss_is_zero_for_an_exact_denoiser():
    x0 = torch.zeros(3, 2, 4, 4)
    loss, metrics = consistency_loss(lambda x, sigma: torch.zeros_like(x), x0, torch.tensor([0.0, 0.3, 0.6]), 0.2,
                                     torch.randn_like(x0))
    assert loss.item() == 0 and metrics['distance'].item() == 0


def test_loss_weight_is_inverse_noise_gap():
    # The identity denoiser makes student - teacher = (sigma_s - sigma_t) * noise exactly.
    x0 = torch.randn(2, 3, dtype=torch.float64)
    noise = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]], dtype=torch.float64)
    u, delta, c = torch.tensor([0.1, 0.4], dtype=torch.float64), 0.05, 0.3
    loss, _ = consistency_loss(lambda x, sigma: x, x0, u, delta, noise, huber_c=c)
    gap = karras_sigma(u + delta) - karras_sigma(u)
    norms = torch.tensor([3.0, 5.0], dtype=torch.float64)
    expected = ((torch.sqrt((gap * norms) ** 2 + c * c) - c) / gap).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    loss_c0, _ = consistency_loss(lambda x, sigma: x, x0, u, delta, noise, huber_c=0.0)
    assert loss_c0.item() == pytest.approx(4.0, rel=1e-10)  # mean of ||noise|| = (3 + 5) / 2


def test_teacher_on_the_boundary_returns_its_input():
    x0, noise = torch.randn(2, 5), torch.randn(2, 5)
    seen = []

    def denoise(x, sigma):
        out = EDMPreconditioning().denoise(lambda y, c: torch.full_like(y, 9.0), x, sigma)
        seen.append((sigma.clone(), x.clone(), out))
        return out

    consistency_loss(denoise, x0, torch.zeros(2), 0.1, noise)
    sigma_t, x_t, teacher = seen[1]
    assert torch.all(sigma_t == 0.002)
    assert torch.equal(teacher, x_t)


def test_one_step_sampling_returns_the_denoiser_target():
    target = torch.arange(6.0).reshape(1, 2, 3)
    calls = []

    def denoise(x, sigma):
        calls.append(sigma)
        return target.expand_as(x)

    out = sample(denoise, (2, 2, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, target.expand(2, 2, 3))
    assert len(calls) == 1 and torch.all(calls[0] == 80.0)


def test_sampling_is_reproducible_per_seed():
    denoise = lambda x, sigma: 0.5 * torch.tanh(x)  # noqa: E731
    run = lambda seed, steps: sample(denoise, (2, 8), steps=steps,  # noqa: E731
                                     generator=torch.Generator().manual_seed(seed))
    for steps in (1, 3):
        assert torch.equal(run(0, steps), run(0, steps))
        assert not torch.equal(run(0, steps), run(1, steps))
    # With fixed initial noise, only the re-noising draws depend on the seed.
    eps = torch.randn(2, 8)
    a = sample(denoise, eps, sigmas=[80.0, 1.0], generator=torch.Generator().manual_seed(0))
    b = sample(denoise, eps, sigmas=[80.0, 1.0], generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)


def test_multistep_sampling_levels_and_renoising():
    levels = sampling_sigmas(3)
    assert len(levels) == 3 and levels[0] == 80.0 and levels[0] > levels[1] > levels[2] > 0.002
    seen = []

    def denoise(x, sigma):
        seen.append((sigma[0].item(), x.clone()))
        return torch.zeros_like(x)

    sample(denoise, torch.ones(50000), sigmas=[80.0, 2.0], generator=torch.Generator().manual_seed(0))
    assert [s for s, _ in seen] == [80.0, 2.0]
    assert torch.equal(seen[0][1], torch.full((50000,), 80.0))
    assert seen[1][1].std().item() == pytest.approx(math.sqrt(4.0 - 0.002 ** 2), rel=0.02)
    with pytest.raises(AssertionError, match='decreasing'):
        sample(denoise, (1, 2), sigmas=[1.0, 2.0])
