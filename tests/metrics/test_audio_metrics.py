import math

import pytest
import torch

from audiogen_lab.losses import SISNR, MelSpectrogramL1Loss
from audiogen_lab.metrics import MelDistance, mel_distance, si_snr

SR = 8000


def _signal(batch: int = 2, channels: int = 1, length: int = 8000, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    freqs = 100 + 900 * torch.rand(batch, channels, 1, generator=generator)
    return torch.sin(2 * math.pi * freqs * t) + 0.1 * torch.randn(batch, channels, length, generator=generator)


def _orthogonal_noise(reference: torch.Tensor, snr_db: float, seed: int = 1) -> torch.Tensor:
    """Zero-mean noise orthogonal to the (zero-mean) reference, scaled to the given SNR."""
    generator = torch.Generator().manual_seed(seed)
    ref = reference - reference.mean(dim=-1, keepdim=True)
    noise = torch.randn(reference.shape, generator=generator)
    noise = noise - noise.mean(dim=-1, keepdim=True)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref
    gain = ref.pow(2).sum(-1, keepdim=True).sqrt() / noise.pow(2).sum(-1, keepdim=True).sqrt()
    return noise * gain * 10 ** (-snr_db / 20)


def test_si_snr_of_scaled_copy_is_very_high():
    reference = _signal()
    scores = si_snr(0.3 * reference, reference)
    assert scores.shape == (2,)
    assert (scores > 80).all()
    # Scale invariance: rescaling the estimate does not change the score.
    noisy = reference + _orthogonal_noise(reference, 5.0)
    torch.testing.assert_close(si_snr(4.0 * noisy, reference), si_snr(noisy, reference), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_si_snr_matches_known_snr(snr_db):
    reference = _signal(channels=2)
    estimate = reference + _orthogonal_noise(reference, snr_db)
    torch.testing.assert_close(si_snr(estimate, reference), torch.full((2,), snr_db), rtol=0, atol=1e-2)


def test_si_snr_per_item_and_fp32():
    reference = _signal()
    estimate = reference.clone()
    estimate[0] += _orthogonal_noise(reference[:1], 0.0)[0]
    estimate[1] += _orthogonal_noise(reference[1:], 20.0)[0]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores = si_snr(estimate.bfloat16().float(), reference)
    assert scores.dtype == torch.float32
    assert scores[0] < 1.0 < 19.0 < scores[1]


def test_sisnr_loss_is_negative_metric_and_segments():
    reference = _signal()
    estimate = reference + _orthogonal_noise(reference, 10.0)
    whole = SISNR(sample_rate=SR, segment=None)(estimate, reference)
    assert whole.item() == pytest.approx(-si_snr(estimate, reference).mean().item(), rel=1e-5)
    # A slow gain drift is penalised on the whole signal but not within short segments.
    ramp = torch.linspace(0.5, 1.5, reference.shape[-1])
    drifted = reference * ramp
    segmented = SISNR(sample_rate=SR, segment=0.05, overlap=0.5)(drifted, reference)
    assert segmented.item() < SISNR(sample_rate=SR, segment=None)(drifted, reference).item() - 10


def test_sisnr_loss_trains_denoiser():
    reference = _signal(length=2000)
    noise = _orthogonal_noise(reference, 0.0)
    mask_logit = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([mask_logit], lr=0.1)
    loss_fn = SISNR(sample_rate=SR, segment=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        loss = loss_fn(reference + torch.sigmoid(mask_logit) * noise, reference)
        loss.backward()
        optimizer.step()
    assert torch.sigmoid(mask_logit).item() < 0.1
    assert si_snr(reference + torch.sigmoid(mask_logit).detach() * noise, reference).min() > 20


def test_mel_distance_values():
    metric = MelDistance(SR, n_fft=512, hop_length=128, win_length=512, n_mels=24)
    reference = _signal()
    torch.testing.assert_close(metric(reference, reference), torch.zeros(2))
    doubled = reference.clone()
    doubled[1] *= 2
    distances = metric(doubled, reference)
    assert distances[0].item() == 0.0
    assert distances[1].item() == pytest.approx(math.log10(2), rel=1e-3)
    # The per-item distances average to the loss of the same configuration.
    loss = MelSpectrogramL1Loss(SR, n_fft=512, hop_length=128, win_length=512, n_mels=24)
    assert distances.mean().item() == pytest.approx(loss(doubled, reference).item(), rel=1e-5)
    functional = mel_distance(doubled, reference, SR, n_fft=512, hop_length=128, win_length=512, n_mels=24)
    torch.testing.assert_close(functional, distances)


def test_mel_distance_orders_distortions():
    metric = MelDistance(SR, n_fft=512, hop_length=128, win_length=512, n_mels=24)
    reference = _signal(batch=1)
    mild = reference + _orthogonal_noise(reference, 20.0)
    strong = reference + _orthogonal_noise(reference, 0.0)
    assert 0 < metric(mild, reference).item() < metric(strong, reference).item()
