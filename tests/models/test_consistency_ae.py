"""ConsistencyAE: latent shape and rate, reference size, channel folding, reproducible decoding, the loss."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.consistency_ae import ConsistencyAE

CONFIG = Path(__file__).resolve().parents[2] / "config" / "model" / "consistency_ae"


def _model(name: str = "debug", sample_rate: int = 16000, channels: int = 1, **extra) -> ConsistencyAE:
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG / f"{name}.yaml"),
                          {"sample_rate": sample_rate, "channels": channels, **extra})
    return get_compression_model(cfg)


def test_reference_config_size_and_latent_rate():
    """The reference config: about 58 M parameters, 64-channel latents at 44100 / 4096 = 10.77 Hz."""
    with torch.device("meta"):
        model = _model("default", sample_rate=44100)
        latents = model.encoder(torch.empty(1, 2, 1024, 128))
    assert isinstance(model, ConsistencyAE) and model.is_continuous
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(58e6, rel=0.03)
    assert model.frame_rate == pytest.approx(10.7666, abs=1e-3) and model.hop_length == 4096
    assert model.latent_dim == 64 and tuple(latents.shape) == (1, 64, 16)


@pytest.mark.parametrize("channels", [1, 2])
def test_encode_decode_shapes(channels):
    model = _model(channels=channels).eval()
    x = torch.randn(2, channels, 5000) * 0.1
    with torch.no_grad():
        latents, scale = model.encode(x)
        assert scale is None
        assert latents.shape == (2, channels * 8, 20)  # ceil(5000 / 256) frames of 8 channels per audio channel
        assert latents.abs().max() <= 1
        audio = model.decode(latents, seed=0)
        assert audio.shape == (2, channels, 20 * 256)
        assert model(x).x.shape == x.shape
    assert model.frame_rate == 62.5 and model.latent_dim == channels * 8


def test_channels_are_coded_independently():
    """Stereo is folded into the batch: each channel's latents equal those of the channel coded alone."""
    stereo, mono = _model(channels=2).eval(), _model(channels=1).eval()
    mono.load_state_dict(stereo.state_dict())
    x = torch.randn(1, 2, 4096) * 0.1
    with torch.no_grad():
        both = stereo.encode(x)[0]
        torch.testing.assert_close(both[:, :8], mono.encode(x[:, :1])[0])
        torch.testing.assert_close(both[:, 8:], mono.encode(x[:, 1:])[0])


def _trained_head(model: ConsistencyAE) -> ConsistencyAE:
    """The output head is zero at initialization; give it weights so that the network matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.decoder.conv_out.parameters():
            p.normal_(0, 0.05)
    return model


def test_decode_with_a_seed_is_reproducible():
    model = _trained_head(_model()).eval()
    latents = torch.rand(1, 8, 12) * 2 - 1
    with torch.no_grad():
        a, b = model.decode(latents, seed=3), model.decode(latents, seed=3)
        c = model.decode(latents, seed=4)
        multi = model.decode(latents, seed=3, steps=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4
    assert multi.shape == a.shape and (multi - a).abs().max() > 1e-4


def test_decode_computes_the_latent_pyramid_once(monkeypatch):
    model = _model().eval()
    calls = []
    prepare = model.decoder.prepare
    monkeypatch.setattr(model.decoder, "prepare", lambda latents: calls.append(1) or prepare(latents))
    with torch.no_grad():
        model.decode(torch.zeros(1, 8, 4), seed=0, steps=4)
    assert calls == [1]


def test_consistency_loss_trains_encoder_and_decoder():
    """One loss trains both ends: the encoder and the decoder's output head get gradients from it."""
    model = _trained_head(_model())
    x = torch.randn(4, 1, 2048) * 0.1
    loss, metrics = model.consistency_loss(x, delta=0.05, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) >= {"sigma", "distance", "weight"}
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert encoder_grads and sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0


def test_spectrogram_round_trip_through_the_model():
    model = _model(channels=2)
    x = torch.randn(2, 2, 3000) * 0.2
    spec = model.to_spectrogram(x)
    assert spec.shape == (4, 2, 64, 96)  # 3000 samples padded to 3072 = 96 hops of 32
    torch.testing.assert_close(model.from_spectrogram(spec, 3000), x, atol=1e-4, rtol=0)


def test_mismatched_frequency_bins_are_refused():
    with pytest.raises(ValueError, match="consistency_net.frequency_bins"):
        _model(consistency_ae={"n_fft": 256})


def test_channels_last_layout_keeps_values_and_checkpoints():
    """`consistency_ae.channels_last` changes the layout of the 2-D convolution weights, not what the model
    computes: encode, decode and the loss's gradients match the contiguous model's, and weights load across
    layouts."""
    fast = _trained_head(_model(consistency_ae={"channels_last": True}))
    plain = _model(consistency_ae={"channels_last": False})
    plain.load_state_dict(fast.state_dict())
    four_d = [p for p in fast.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    assert any(not p.is_contiguous() for p in four_d)  # 1x1 kernels are both
    assert all(p.is_contiguous() for p in plain.parameters())
    x = torch.randn(2, 1, 4096) * 0.1
    with torch.no_grad():
        latents = fast.eval().encode(x)[0]
        torch.testing.assert_close(latents, plain.eval().encode(x)[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast.decode(latents, seed=0), plain.decode(latents, seed=0), atol=1e-5, rtol=1e-4)
    for model in (fast, plain):
        model.train().zero_grad()
        model.consistency_loss(x, 0.01, generator=torch.Generator().manual_seed(0))[0].backward()
    # biases in front of a GroupNorm have a true gradient of 0 (float noise only): compare the whole gradient
    grads = [torch.cat([p.grad.flatten() for p in model.parameters()]) for model in (fast, plain)]
    assert (grads[0] - grads[1]).norm() < 1e-4 * grads[1].norm()
