"""SoundStream: the paper's block structure, causality, quantizer dropout, every quantizer family, the
presets, and gradients through the straight-through quantizer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.soundstream import SoundStreamModel
from audiogen_lab.modules.conv import StreamableConv1d
from audiogen_lab.modules.seanet import SEANetResnetBlock
from audiogen_lab.train import main


def _cfg(*overrides: str, solver: str = "soundstream_debug"):
    return main.get_xp([f"solver=compression/{solver}", *overrides]).cfg


def _model(*overrides: str) -> SoundStreamModel:
    torch.manual_seed(0)
    model = get_compression_model(_cfg(*overrides))
    assert isinstance(model, SoundStreamModel)
    return model


def _audio(batch: int = 2, samples: int = 3200, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, 1, samples, generator=gen)


def test_residual_units_have_dilations_1_3_9_and_kernel_7():
    model = _model()
    blocks = [m for m in model.encoder.modules() if isinstance(m, SEANetResnetBlock)]
    assert len(blocks) == 3 * 3  # three units per resolution, three resolutions in the debug model
    dilations = [[c.dilation for c in b.modules() if isinstance(c, StreamableConv1d)][0] for b in blocks]
    kernels = {[c.kernel_size for c in b.modules() if isinstance(c, StreamableConv1d)][0] for b in blocks}
    assert dilations == [1, 3, 9] * 3 and kernels == {7}
    assert all(isinstance(b.shortcut, nn.Identity) for b in blocks)
    strided = [m for m in model.encoder.modules() if isinstance(m, StreamableConv1d) and m.stride > 1]
    assert [m.stride for m in strided] == [4, 5, 8] and all(m.kernel_size == 2 * m.stride for m in strided)


@pytest.mark.parametrize("solver,rate,hop,n_q", [("soundstream_16khz", 16000, 320, 12),
                                                  ("soundstream_24khz", 24000, 320, 24)])
def test_presets_frame_rates_and_bitrates(solver, rate, hop, n_q):
    model = get_compression_model(_cfg(solver=solver)).eval()
    assert (model.sample_rate, model.hop_length, model.total_codebooks, model.cardinality) == (rate, hop, n_q, 1024)
    assert model.causal and not model.renormalize
    with torch.no_grad():
        model.train()(torch.randn(2, 1, rate))  # k-means initialisation
        model.eval()
        codes, scale = model.encode(torch.randn(1, 1, rate // 2 + 7))
    assert codes.shape == (1, n_q, -(-(rate // 2 + 7) // hop)) and scale is None


def test_encoder_and_decoder_are_causal():
    model = _model().eval()
    x = _audio(samples=3200)
    changed = x.clone()
    changed[..., 1600:] = _audio(samples=1600, seed=1)
    hop = model.hop_length
    with torch.no_grad():
        z, z_changed = model.encoder(x), model.encoder(changed)
        torch.testing.assert_close(z_changed[..., :1600 // hop], z[..., :1600 // hop])
        assert not torch.allclose(z_changed[..., 1600 // hop:], z[..., 1600 // hop:])
        y, y_changed = model.decoder(z), model.decoder(z_changed)
        torch.testing.assert_close(y_changed[..., :1600], y[..., :1600])


def test_causal_transformer_bottleneck_keeps_the_model_causal():
    model = _model("soundstream_net.transformer.num_layers=1", "soundstream_net.transformer.window=4").eval()
    assert model.encoder.transformer is not None and model.decoder.transformer is not None
    x = _audio(samples=3200)
    changed = x.clone()
    changed[..., 2000:] = 0.0
    with torch.no_grad():
        y, y_changed = model.decoder(model.encoder(x)), model.decoder(model.encoder(changed))
    frames = 2000 // model.hop_length
    torch.testing.assert_close(y_changed[..., :frames * model.hop_length], y[..., :frames * model.hop_length])


def test_quantizer_dropout_varies_codebooks_in_training_only():
    model = _model("rvq.q_dropout=true")
    x = _audio(samples=1600)
    torch.manual_seed(0)
    used = {int(model.train()(x).codes.shape[1]) for _ in range(12)}
    assert len(used) > 1 and max(used) <= model.total_codebooks
    with torch.no_grad():
        assert model.eval()(x).codes.shape[1] == model.total_codebooks


@pytest.mark.parametrize("quantizer", ["rvq", "grvq", "rfsq", "rlfq"])
def test_every_quantizer_family_trains_and_round_trips(quantizer):
    model = _model(f"soundstream.quantizer={quantizer}")
    x = _audio(samples=1601)
    result = model.train()(x)
    assert result.x.shape == x.shape and torch.isfinite(result.x).all()
    (result.x - x).pow(2).mean().add(result.penalty).backward()
    first = next(p for p in model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0  # straight-through to the encoder
    model.eval()
    with torch.no_grad():
        codes, _ = model.encode(x)
        assert codes.min() >= 0 and codes.max() < model.cardinality
        assert codes.shape == (2, model.num_codebooks, -(-1601 // model.hop_length))
        decoded = model.decode(codes)
        assert decoded.shape[-1] == codes.shape[-1] * model.hop_length
        torch.testing.assert_close(decoded[..., :1601], model(x).x)


def test_unknown_quantizer_names_the_soundstream_key():
    with pytest.raises(KeyError, match="soundstream.quantizer"):
        _model("soundstream.quantizer=vq9")
