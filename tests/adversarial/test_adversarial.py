import math

import pytest
import torch
from torch import nn

import flashy
import flashy.distrib
from audiogen_lab.adversarial import (AdversarialLoss, FeatureMatchingLoss, MultiDiscriminator,
                                      MultiScaleSTFTDiscriminator, get_adv_criterion, get_fake_criterion,
                                      get_real_criterion, hinge_fake_loss, hinge_gen_loss, hinge_real_loss,
                                      mse_fake_loss, mse_gen_loss, mse_real_loss)
from audiogen_lab.optim.group import OptimizerGroup

SMALL = dict(filters=4, n_ffts=(128, 64), hop_lengths=(32, 16), win_lengths=(128, 64))


def _real_and_fake(batch: int = 4, length: int = 1024, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 8000
    freqs = 200 + 600 * torch.rand(batch, 1, 1, generator=generator)
    real = 0.5 * torch.sin(2 * math.pi * freqs * t)
    fake = 0.5 * torch.randn(batch, 1, length, generator=generator)
    return real, fake


def _adversarial_loss(seed: int = 0, loss_feat=True) -> AdversarialLoss:
    torch.manual_seed(seed)
    adversary = MultiScaleSTFTDiscriminator(**SMALL)
    return AdversarialLoss(adversary, loss=get_adv_criterion("hinge"),
                           loss_real=get_real_criterion("hinge"), loss_fake=get_fake_criterion("hinge"),
                           loss_feat=FeatureMatchingLoss() if loss_feat else None)


def test_criteria_values():
    logits = torch.tensor([-2.0, 0.0, 0.5, 3.0])
    assert hinge_real_loss(logits).item() == pytest.approx((3.0 + 1.0 + 0.5 + 0.0) / 4)
    assert hinge_fake_loss(logits).item() == pytest.approx((0.0 + 1.0 + 1.5 + 4.0) / 4)
    assert hinge_gen_loss(logits).item() == pytest.approx(-1.5 / 4)
    assert mse_real_loss(logits).item() == pytest.approx((9 + 1 + 0.25 + 4) / 4)
    assert mse_fake_loss(logits).item() == pytest.approx((4 + 0 + 0.25 + 9) / 4)
    assert mse_gen_loss(logits).item() == pytest.approx(mse_real_loss(logits).item())
    assert get_adv_criterion("mse") is mse_gen_loss and get_fake_criterion("hinge") is hinge_fake_loss
    assert get_real_criterion("mse") is mse_real_loss
    with pytest.raises(ValueError, match="choose one of"):
        get_adv_criterion("wasserstein")


def test_feature_matching_values():
    real = [torch.full((2, 3), 2.0), torch.full((2, 5), -4.0)]
    fake = [r + 1.0 for r in real]
    assert FeatureMatchingLoss()(real, real).item() == 0.0
    assert FeatureMatchingLoss()(fake, real).item() == pytest.approx(1.0)
    assert FeatureMatchingLoss(normalize=False)(fake, real).item() == pytest.approx(2.0)
    assert FeatureMatchingLoss(relative=True)(fake, real).item() == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert FeatureMatchingLoss(loss=nn.MSELoss())([2 * r for r in real], real).item() == pytest.approx((4 + 16) / 2)


def test_msstft_discriminator_outputs_and_weight_norm():
    disc = MultiScaleSTFTDiscriminator(in_channels=2, **SMALL)
    assert isinstance(disc, MultiDiscriminator) and disc.num_discriminators == 2
    x = torch.randn(3, 2, 1024)
    logits, fmaps = disc(x)
    assert len(logits) == len(fmaps) == 2
    for logit, fmap, hop, n_fft in zip(logits, fmaps, SMALL["hop_lengths"], SMALL["n_ffts"]):
        frames = 1024 // hop + 1
        assert logit.shape[:3] == (3, 1, frames)  # [B, out_channels, frames, freqs]
        assert len(fmap) == 5 and fmap[0].shape[-1] == n_fft // 2 + 1
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs)
    # Each example is scored independently of the rest of the batch.
    single_logits, _ = disc(x[:1])
    torch.testing.assert_close(single_logits[0], logits[0][:1], rtol=1e-4, atol=1e-5)


def test_msstft_discriminator_under_bf16_autocast():
    disc = MultiScaleSTFTDiscriminator(**SMALL)
    x = torch.randn(2, 1, 1024)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, _ = disc(x.bfloat16())
    reference, _ = disc(x)
    for got, expected in zip(logits, reference):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), expected, rtol=0.1, atol=0.05)
    with pytest.raises(ValueError, match="too short"):
        disc(torch.randn(1, 1, 32))


def test_generator_losses_do_not_touch_the_adversary():
    adv = _adversarial_loss()
    real, fake = _real_and_fake()
    fake = fake.clone().requires_grad_(True)
    adv_loss, feat_loss = adv(fake, real)
    (adv_loss + feat_loss).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in adv.adversary.parameters())
    assert all(p.requires_grad for p in adv.adversary.parameters())
    assert feat_loss.item() > 0
    # Feature matching vanishes when the generated audio is the real audio.
    _, same = adv(real.clone(), real)
    assert same.item() == 0.0
    no_feat = _adversarial_loss(loss_feat=False)
    assert no_feat(fake, real)[1].item() == 0.0


def test_discriminator_learns_in_its_optimizer_group(monkeypatch):
    calls = []
    original = flashy.distrib.sync_model
    monkeypatch.setattr(flashy.distrib, "sync_model", lambda model: calls.append(1) or original(model))
    adv = _adversarial_loss()
    group = OptimizerGroup("adversary", [adv], torch.optim.Adam(adv.parameters(), lr=1e-3, betas=(0.5, 0.9)))
    real, fake = _real_and_fake()
    losses = []
    for _ in range(41):
        loss = adv.discriminator_loss(fake, real)
        group.backward(loss)
        group.step()
        losses.append(loss.item())
    assert len(calls) == 41  # gradients (and buffers) cross ranks once per step
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        logits_real, _ = adv.adversary(real)
        logits_fake, _ = adv.adversary(fake)
    for lr, lf in zip(logits_real, logits_fake):
        assert lr.mean() > lf.mean()
    # The generator-side hinge loss is now high for fake audio and low for real audio.
    assert adv(fake, real)[0].item() > adv(real, real)[0].item()


def test_discriminator_loss_reaches_only_the_adversary():
    real, fake = _real_and_fake()
    generator = nn.Conv1d(1, 1, 3, padding=1)
    adv = _adversarial_loss()
    adv.discriminator_loss(generator(fake), real).backward()
    assert generator.weight.grad is None  # the generated audio is detached
    assert all(p.grad is not None for p in adv.adversary.parameters())
    assert not any("optimizer" in key for key in adv.state_dict())  # its optimizer lives in a group
