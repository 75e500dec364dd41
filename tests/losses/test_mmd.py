import pytest
import torch

from audiogen_lab.losses import MMDIndependenceLoss, mmd_independence


def _rvq_like(dependent: bool, seed: int, batch: int = 4, frames: int = 64, levels: int = 3, dim: int = 8,
              codes: int = 16) -> torch.Tensor:
    """Quantized vectors `[B, K, D, T]` drawn from per-level codebooks. Levels pick their codes
    independently, or level 1 reuses level 0's code index (a deterministic function of level 0)."""
    generator = torch.Generator().manual_seed(seed)
    codebooks = torch.randn(levels, codes, dim, generator=generator)
    codebooks[1:] *= 0.3  # deeper levels are smaller, as in a residual quantizer
    indices = torch.randint(codes, (levels, batch, frames), generator=generator)
    if dependent:
        indices[1] = indices[0]
    vectors = torch.stack([codebooks[k][indices[k]] for k in range(levels)], dim=1)  # [B, K, T, D]
    return vectors.transpose(2, 3).contiguous()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _values(dependent: bool, seeds=range(12)) -> torch.Tensor:
    return torch.tensor([
        mmd_independence(_rvq_like(dependent, seed), max_samples=256, generator=_gen(100 + seed)).item()
        for seed in seeds])


def test_independent_levels_near_zero_dependent_levels_clearly_positive():
    independent, dependent = _values(False), _values(True)
    # Unbiased estimator: independent values scatter around zero.
    assert abs(independent.mean()) < 3 * independent.std() / len(independent) ** 0.5 + 1e-6
    assert dependent.min() > 0
    assert dependent.mean() > 10 * independent.abs().mean()
    assert dependent.mean() > 10 * independent.std()


def test_unbiased_for_independent_gaussian_levels():
    values = []
    for seed in range(12):
        x = torch.randn(2, 4, 6, 128, generator=_gen(seed))
        values.append(mmd_independence(x, max_samples=256, generator=_gen(50 + seed)).item())
    values = torch.tensor(values)
    assert abs(values.mean()) < 3 * values.std() / len(values) ** 0.5
    assert (values < 0).any(), "an unbiased estimator must sometimes be negative under independence"


def test_invariant_to_common_rescaling_and_deterministic_given_generator():
    x = _rvq_like(True, seed=0)
    reference = mmd_independence(x, generator=_gen(3))
    assert mmd_independence(x, generator=_gen(3)).item() == reference.item()
    assert mmd_independence(37.0 * x, generator=_gen(3)).item() == pytest.approx(reference.item(), rel=1e-4)
    assert mmd_independence(x + 5.0, generator=_gen(3)).item() == pytest.approx(reference.item(), rel=1e-3)


def test_single_level_is_zero_with_gradient():
    x = torch.randn(2, 1, 4, 16, requires_grad=True)
    loss = mmd_independence(x)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_descent_reduces_dependence():
    base = torch.randn(2, 1, 4, 128, generator=_gen(0))
    # Level 1 is a deterministic (nonlinear) function of level 0.
    x = torch.cat([base, torch.tanh(2 * base.flip(2))], dim=1).requires_grad_(True)
    loss_fn = MMDIndependenceLoss(max_samples=256)
    before = loss_fn(x, generator=_gen(7)).item()
    optimizer = torch.optim.Adam([x], lr=0.08)
    for step in range(30):
        optimizer.zero_grad()
        loss = loss_fn(x, generator=_gen(step))
        loss.backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        optimizer.step()
    after = loss_fn(x, generator=_gen(7)).item()
    assert before > 0.05
    assert after < 0.2 * before


def test_fp32_under_autocast_and_input_checks():
    x = _rvq_like(True, seed=1).bfloat16()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = mmd_independence(x, generator=_gen(0))
    assert value.dtype == torch.float32 and value.item() > 0
    with pytest.raises(AssertionError, match=r"\[B, K, D, T\]"):
        mmd_independence(torch.randn(2, 3, 8))
    with pytest.raises(AssertionError, match="more frames than levels"):
        mmd_independence(torch.randn(1, 3, 8, 2))


def test_level_normalization_detects_dependence_between_small_levels():
    # Levels 1 and 2 are tiny and dependent; level 0 is large and independent of them.
    generator = _gen(0)
    level0 = 100 * torch.randn(4, 1, 8, 64, generator=generator)
    level1 = torch.randn(4, 1, 8, 64, generator=generator)
    x = torch.cat([level0, level1, level1.roll(1, dims=2)], dim=1)
    normalized = mmd_independence(x, max_samples=256, generator=_gen(1))
    raw = mmd_independence(x, max_samples=256, generator=_gen(1), normalize_levels=False)
    assert normalized.item() > 5 * abs(raw.item())


def test_collapsed_levels_give_finite_zero():
    # A collapsed codebook (every frame uses the same vector) is trivially independent of the others.
    x = torch.ones(2, 3, 4, 16)
    x[:, 1] = torch.randn(2, 4, 16, generator=_gen(0))
    x.requires_grad_(True)
    value = mmd_independence(x, generator=_gen(1))
    value.backward()
    assert torch.isfinite(x.grad).all()
    assert abs(value.item()) < 0.05
    constant = torch.ones(2, 3, 4, 16, requires_grad=True)
    assert mmd_independence(constant).item() == 0.0
