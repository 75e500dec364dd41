import math

import pytest
import torch

from audiogen_lab.losses import MelSpectrogramL1Loss, MRSTFTLoss, MultiScaleMelSpectrogramLoss

SR = 16000


def _noise(batch: int = 2, channels: int = 1, length: int = 4096, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, length, generator=generator)


def _small_losses():
    return [
        MelSpectrogramL1Loss(SR, n_fft=256, hop_length=64, win_length=256, n_mels=16),
        MultiScaleMelSpectrogramLoss(SR, range_start=7, range_end=10, n_mels=8, f_min=500.0),
        MRSTFTLoss(fft_sizes=(256, 128), hop_sizes=(64, 32), win_lengths=(200, 100)),
    ]


@pytest.mark.parametrize("loss", _small_losses(), ids=["mel", "msmel", "mrstft"])
def test_zero_on_identical_and_grows_with_noise(loss):
    x = _noise()
    noise = _noise(seed=1)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    small, large = loss(x + 0.01 * noise, x).item(), loss(x + 0.3 * noise, x).item()
    assert 0 < small < large


def test_mel_l1_of_doubled_signal_is_log10_2():
    # Every mel bin of loud noise is far above the floor, so log10(2x) - log10(x) = log10(2) everywhere.
    loss = MelSpectrogramL1Loss(SR, n_fft=1024, hop_length=256, win_length=1024, n_mels=40)
    x = _noise()
    assert loss(2 * x, x).item() == pytest.approx(math.log10(2), rel=1e-3)


def test_multiscale_mel_value_for_doubled_signal():
    delta = math.log10(2)
    scales = range(7, 10)
    alphas = [math.sqrt(2 ** i - 1) for i in scales]
    expected = sum(delta + alpha * delta ** 2 for alpha in alphas)
    loss = MultiScaleMelSpectrogramLoss(SR, range_start=7, range_end=10, n_mels=8, f_min=500.0)
    x = _noise()
    assert loss(2 * x, x).item() == pytest.approx(expected, rel=1e-3)
    flat = MultiScaleMelSpectrogramLoss(SR, range_start=7, range_end=10, n_mels=8, f_min=500.0, alphas=False,
                                        normalized=True)
    # normalized: weighted average over scales of (l1 + l2) / 2 with unit alphas.
    assert flat(2 * x, x).item() == pytest.approx((delta + delta ** 2) / 2, rel=1e-3)


def test_mrstft_value_for_halved_estimate():
    # Estimate = reference / 2: spectral convergence = 0.5, log-magnitude distance = ln 2.
    loss = MRSTFTLoss(fft_sizes=(256, 128), hop_sizes=(64, 32), win_lengths=(200, 100), factor_sc=0.1,
                      factor_mag=0.1)
    y = _noise()
    assert loss(0.5 * y, y).item() == pytest.approx(0.1 * 0.5 + 0.1 * math.log(2), rel=1e-3)


@pytest.mark.parametrize("loss", _small_losses(), ids=["mel", "msmel", "mrstft"])
def test_gradient_descent_recovers_gain(loss):
    target = _noise(batch=1, length=2048)
    source = target / 3
    log_gain = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([log_gain], lr=0.1)
    for _ in range(40):
        optimizer.zero_grad()
        loss(log_gain.exp() * source, target).backward()
        optimizer.step()
    assert log_gain.exp().item() == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize("loss", _small_losses(), ids=["mel", "msmel", "mrstft"])
def test_fp32_under_bf16_autocast_and_finite_on_silence(loss):
    x, y = _noise(), _noise(seed=1)
    reference = loss(x, y)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(x.bfloat16(), y.bfloat16())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=0.05)
    silent = torch.zeros(1, 1, 1024, requires_grad=True)
    value = loss(silent, torch.zeros(1, 1, 1024))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(silent.grad).all()


def test_multichannel_input_and_errors():
    loss = MelSpectrogramL1Loss(SR, n_fft=256, hop_length=64, win_length=256, n_mels=16)
    x = _noise(channels=2)
    y = x.clone()
    y[:, 1] *= 2
    # Only the second channel differs: half of the bins differ by log10(2).
    assert loss(y, x).item() == pytest.approx(math.log10(2) / 2, rel=1e-3)
    with pytest.raises(AssertionError, match="same shape"):
        loss(x, x[:, :1])
    with pytest.raises(ValueError, match="too short"):
        loss(x[..., :100], x[..., :100])


def test_sisnr_loss_ignores_silent_segments():
    from audiogen_lab.losses import SISNR
    torch.manual_seed(0)
    ref = torch.randn(2, 1, 8000)
    ref[1] = 0.0
    est = ref + 0.1 * torch.randn_like(ref)
    loss = SISNR(sample_rate=8000, segment=None)
    # only the audible item counts: about -20 dB, not the -100+ dB of an estimate against silence
    assert float(loss(est, ref)) == pytest.approx(float(loss(est[:1], ref[:1])))
    assert -21 < float(loss(est, ref)) < -19
    silent = torch.zeros(1, 1, 8000)
    est_silent = torch.randn(1, 1, 8000, requires_grad=True)
    value = loss(est_silent, silent)
    value.backward()
    assert float(value) == 0.0 and float(est_silent.grad.abs().sum()) == 0.0


def _reference_msmel(loss: MultiScaleMelSpectrogramLoss, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The multi-scale mel loss by its definition, on torchaudio's own transforms."""
    import torch.nn.functional as F
    total = torch.zeros(())
    for melspec, alpha in zip(loss.melspecs, loss.alphas):
        mel_x = torch.log10(melspec.transform(x).clamp(min=melspec.floor_level))
        mel_y = torch.log10(melspec.transform(y).clamp(min=melspec.floor_level))
        total = total + F.l1_loss(mel_x, mel_y) + alpha * F.mse_loss(mel_x, mel_y)
    return total / loss.total_weight if loss.normalized else total


@pytest.mark.parametrize("normalized", [False, True])
def test_mel_spectrogram_and_multiscale_loss_match_torchaudio(normalized):
    from audiogen_lab.losses.spectral import MelSpectrogram
    x = 0.1 * _noise(batch=3, channels=2, length=6000, seed=2)
    for log in (False, True):
        mel = MelSpectrogram(24000, n_fft=512, hop_length=128, win_length=400, n_mels=32, log=log,
                             normalized=normalized)
        expected = mel.transform(x)
        if log:
            expected = torch.log10(expected.clamp(min=mel.floor_level))
        torch.testing.assert_close(mel(x), expected, rtol=1e-5, atol=1e-6)
    loss = MultiScaleMelSpectrogramLoss(24000, normalized=normalized)
    estimate = (x + 0.05 * _noise(batch=3, channels=2, length=6000, seed=3)).requires_grad_()
    value = loss(estimate, x)
    (grad,) = torch.autograd.grad(value, estimate)
    reference_input = estimate.detach().clone().requires_grad_()
    reference = _reference_msmel(loss, reference_input, x)
    (reference_grad,) = torch.autograd.grad(reference, reference_input)
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-3 * reference_grad.abs().max().item())
