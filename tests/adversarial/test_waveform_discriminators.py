"""The waveform discriminators (multi-scale MSD and multi-period MPD): shapes, criteria, learning, solver."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audiogen_lab.adversarial import (AdversarialLoss, FeatureMatchingLoss, MultiDiscriminator,
                                      MultiPeriodDiscriminator, MultiScaleDiscriminator, get_adv_criterion,
                                      get_fake_criterion, get_real_criterion)
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.train import main

from ..conftest import dataset_overrides

MSD_SMALL = dict(scales=3, filters=8, max_filters=32, filters_scale=2, first_kernel_size=7, kernel_size=9,
                 last_kernel_size=3, strides=(2, 4, 1), groups=(2, 4, 4))
MPD_SMALL = dict(periods=(2, 3, 5), filters=4, max_filters=32, filters_scale=2, kernel_size=5, strides=(3, 3, 1))
KINDS = ["msd", "mpd"]


def _make(kind: str, in_channels: int = 1, seed: int = 0, **kwargs) -> MultiDiscriminator:
    torch.manual_seed(seed)
    if kind == "msd":
        return MultiScaleDiscriminator(in_channels=in_channels, **{**MSD_SMALL, **kwargs})
    return MultiPeriodDiscriminator(in_channels=in_channels, **{**MPD_SMALL, **kwargs})


def _expected_logit_shapes(kind: str, batch: int, length: int):
    if kind == "msd":  # each scale halves the length (kernel 4, stride 2, padding 1), then strides 2 * 4 * 1
        return [(batch, 1, math.ceil((length // 2 ** scale) / 8)) for scale in range(3)]
    return [(batch, 1, math.ceil(math.ceil(length / p) / 9), p) for p in MPD_SMALL["periods"]]


def _real_and_fake(batch: int = 4, length: int = 1024, channels: int = 1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 8000
    freqs = 200 + 600 * torch.rand(batch, channels, 1, generator=generator)
    real = 0.5 * torch.sin(2 * math.pi * freqs * t)
    fake = 0.5 * torch.randn(batch, channels, length, generator=generator)
    return real, fake


def _adversarial_loss(kind: str, criterion: str, in_channels: int = 1) -> AdversarialLoss:
    return AdversarialLoss(_make(kind, in_channels), loss=get_adv_criterion(criterion),
                           loss_real=get_real_criterion(criterion), loss_fake=get_fake_criterion(criterion),
                           loss_feat=FeatureMatchingLoss())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("length", [1001, 777])
def test_outputs_count_and_shapes(kind, channels, length):
    disc = _make(kind, channels).eval()  # eval: the spectral norm of MSD's first scale stays the same across calls
    assert isinstance(disc, MultiDiscriminator) and disc.num_discriminators == 3
    real, fake = _real_and_fake(batch=2, length=length, channels=channels)
    logits_real, fmaps_real = disc(real)
    logits_fake, fmaps_fake = disc(fake)
    assert len(logits_real) == len(fmaps_real) == len(logits_fake) == len(fmaps_fake) == disc.num_discriminators
    assert [tuple(logit.shape) for logit in logits_real] == _expected_logit_shapes(kind, 2, length)
    convs_per_disc = len(MSD_SMALL["strides"]) + 2 if kind == "msd" else len(MPD_SMALL["strides"])
    for fmap_real, fmap_fake, logit in zip(fmaps_real, fmaps_fake, logits_real):
        assert len(fmap_real) == len(fmap_fake) == convs_per_disc
        assert [f.shape for f in fmap_real] == [f.shape for f in fmap_fake]
        assert fmap_real[0].shape[:2] == (2, MSD_SMALL["filters"] if kind == "msd" else MPD_SMALL["filters"])
        assert fmap_real[-1].shape[2:] == logit.shape[2:]
        assert all(torch.isfinite(f).all() for f in fmap_real)
    # Each example is scored on its own, and every channel is looked at.
    single, _ = disc(real[1:])
    for got, logit in zip(single, logits_real):
        torch.testing.assert_close(got, logit[1:], rtol=1e-4, atol=1e-5)
    changed = real.clone()
    changed[:, -1] = -changed[:, -1]
    assert any(not torch.allclose(a, b) for a, b in zip(disc(changed)[0], logits_real))


def test_every_convolution_is_normalized_and_the_first_scale_can_use_spectral_norm():
    def norms(module):
        convs = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
        assert convs
        return {type(m.parametrizations.weight[0]).__name__ for m in convs}

    msd = _make("msd")
    assert norms(msd.discriminators[0]) == {"_SpectralNorm"}
    assert all(norms(disc) == {"_WeightNorm"} for disc in msd.discriminators[1:])
    assert norms(_make("msd", first_scale_norm="weight_norm")) == {"_WeightNorm"}
    assert norms(_make("mpd")) == {"_WeightNorm"}
    assert norms(_make("mpd", norm="spectral_norm")) == {"_SpectralNorm"}
    with pytest.raises(ValueError, match="choose one of"):
        _make("mpd", norm="batch_norm")
    with pytest.raises(AssertionError, match="groups"):
        _make("msd", groups=(3, 4, 4))


def test_msd_scales_see_the_average_pooled_waveform():
    msd = _make("msd")
    inputs = []
    for disc in msd.discriminators:
        disc.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    msd(torch.full((1, 1, 999), 0.3))
    assert [x.shape[-1] for x in inputs] == [999, 499, 249]
    for x in inputs:  # padding does not count in the averages: a constant stays constant up to the edges
        torch.testing.assert_close(x, torch.full_like(x, 0.3))
    with pytest.raises(ValueError, match="too short"):
        msd(torch.randn(1, 1, 3))


def test_mpd_folds_samples_one_period_apart_into_the_same_column():
    mpd = _make("mpd")
    x = torch.randn(1, 1, 600)  # a multiple of every period: no padding
    logits, _ = mpd(x)
    for period, logit in zip(MPD_SMALL["periods"], logits):
        changed = x.clone()
        changed[..., 1::period] += 1.0  # only column 1 of this period's fold
        difference = (mpd(changed)[0][MPD_SMALL["periods"].index(period)] - logit).abs().sum(dim=(0, 1, 2))
        assert difference[1] > 0 and difference[torch.arange(period) != 1].abs().max() == 0
    with pytest.raises(ValueError, match="too short"):
        mpd(torch.randn(1, 1, 4))  # shorter than the period 5


@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_inputs_and_bf16_autocast(kind):
    disc = _make(kind, first_scale_norm="spectral_norm") if kind == "msd" else _make(kind, norm="spectral_norm")
    disc.eval()  # no power iteration between the two passes: same spectral norms
    x = torch.randn(2, 1, 1001)
    reference, _ = disc(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, fmaps = disc(x.bfloat16())
    cast, _ = disc(x.bfloat16())  # without autocast, the audio is cast to the weights' float32
    for got, outside, expected in zip(logits, cast, reference):
        assert torch.isfinite(got).all() and outside.dtype == torch.float32
        torch.testing.assert_close(got.float(), expected, rtol=0.1, atol=0.05)
        torch.testing.assert_close(outside, expected, rtol=0.02, atol=0.02)
    sigma_buffers = [b for name, b in disc.named_buffers() if name.endswith(("_u", "_v"))]
    assert sigma_buffers and all(b.dtype == torch.float32 for b in sigma_buffers)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("criterion", ["hinge", "mse"])
def test_losses_are_finite_and_reach_the_right_parameters(kind, criterion):
    adv = _adversarial_loss(kind, criterion, in_channels=2)
    real, noise = _real_and_fake(batch=2, length=901, channels=2)
    generator = nn.Conv1d(2, 2, 3, padding=1)

    d_loss = adv.discriminator_loss(generator(noise), real)
    assert torch.isfinite(d_loss) and d_loss.item() > 0
    d_loss.backward()
    assert generator.weight.grad is None  # the generated audio is detached
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adv.adversary.parameters())
    assert sum(p.grad.abs().sum() for p in adv.adversary.parameters()) > 0

    adv.zero_grad(set_to_none=True)
    fake = generator(noise)
    fake.retain_grad()
    adv_loss, feat_loss = adv(fake, real)
    assert torch.isfinite(adv_loss) and torch.isfinite(feat_loss) and feat_loss.item() > 0
    (adv_loss + feat_loss).backward()
    assert all(p.grad is None for p in adv.adversary.parameters())
    assert all(p.requires_grad for p in adv.adversary.parameters())
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_discriminator_learns_sine_from_noise(kind):
    adv = _adversarial_loss(kind, "hinge")
    optimizer = torch.optim.Adam(adv.parameters(), lr=1e-2, betas=(0.5, 0.9))
    real, fake = _real_and_fake()
    losses = []
    for _ in range(20):
        loss = adv.discriminator_loss(fake, real)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        logits_real, _ = adv.adversary(real)
        logits_fake, _ = adv.adversary(fake)
    assert all(lr.mean() > lf.mean() for lr, lf in zip(logits_real, logits_fake))


def test_compression_solver_trains_with_msd_and_mpd(tiny_dataset, dora_dir):
    small = ["msd.filters=8", "msd.max_filters=32", "msd.kernel_size=9", "msd.strides=[2,4,1]",
             "msd.groups=[2,4,4]", "mpd.filters=4", "mpd.max_filters=32", "mpd.filters_scale=2",
             "mpd.strides=[3,3,1]", "mpd.periods=[2,3]"]
    xp = main.get_xp(["solver=compression/debug", "optim.epochs=1", "optim.updates_per_epoch=2",
                      "dataset.valid.num_samples=4", "evaluate.every=100", "generate.every=100",
                      "losses.adv=1.0", "losses.feat=1.0", "adversarial.adversaries=[msd,mpd]", *small]
                     + dataset_overrides(tiny_dataset))
    with xp.enter():
        solver = get_solver(xp.cfg)
        assert isinstance(solver.adv_losses["msd"].adversary, MultiScaleDiscriminator)
        assert isinstance(solver.adv_losses["mpd"].adversary, MultiPeriodDiscriminator)
        assert solver.adv_losses["mpd"].adversary.num_discriminators == 2
        before = [p.detach().clone() for p in solver.adv_losses.parameters()]
        solver.run()
    assert solver.optim_groups["adversary"].steps_taken == 2
    unchanged = [name for b, (name, p) in zip(before, solver.adv_losses.named_parameters()) if torch.equal(b, p)]
    # Every weight moved; the projection biases may not: with logits inside the hinge's margin, real and
    # generated audio pull them equally in opposite directions.
    assert all(name.endswith("conv_post.bias") for name in unchanged), unchanged
    train = solver.history[-1]["train"]
    for key in ("adv_msd", "adv_mpd", "feat_msd", "feat_mpd", "d_msd", "d_mpd"):
        assert key in train and math.isfinite(train[key]), key
