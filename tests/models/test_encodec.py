import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model, get_quantizer
from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.encodec import EncodecModel
from audiogen_lab.modules.seanet import SEANetDecoder, SEANetEncoder
from audiogen_lab.quantization.rvq import ResidualVectorQuantizer

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'config' / 'model' / 'encodec'
SAMPLE_RATE = 800  # hop 8 -> 100 frames per second


def _tiny_model(causal: bool = False, renormalize: bool = False, channels: int = 1, n_q: int = 3,
                lstm: int = 1) -> EncodecModel:
    kwargs = dict(channels=channels, dimension=8, n_filters=4, ratios=[4, 2], lstm=lstm, causal=causal,
                  norm='weight_norm', pad_mode='constant')
    encoder, decoder = SEANetEncoder(**kwargs), SEANetDecoder(**kwargs)
    quantizer = ResidualVectorQuantizer(dimension=8, n_q=n_q, bins=16, kmeans_iters=5)
    return EncodecModel(encoder, decoder, quantizer, frame_rate=SAMPLE_RATE / 8, sample_rate=SAMPLE_RATE,
                        channels=channels, causal=causal, renormalize=renormalize)


def _audio(batch: int = 2, seconds: float = 1., channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Sums of sines with random frequencies and phases: [B, C, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freqs = torch.rand(batch, channels, 3, 1, generator=gen) * 80 + 10
    phases = torch.rand(batch, channels, 3, 1, generator=gen) * 2 * math.pi
    return (0.3 * torch.sin(2 * math.pi * freqs * t + phases)).sum(dim=2)


def _initialised(model: EncodecModel) -> EncodecModel:
    """k-means initialise the codebooks with one training forward, then switch to eval."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(_audio(batch=4, seconds=1., channels=model.channels, seed=123))
    return model.eval()


def test_forward_contract_and_padding():
    torch.manual_seed(0)
    model = _tiny_model()
    x = _audio(seconds=0.505)  # 404 samples: not a multiple of the hop
    result = model(x)
    assert result.x.shape == x.shape
    assert result.codes.shape == (2, 3, math.ceil(404 / 8))
    assert result.penalty.item() > 0 and result.layer_outputs.shape == (2, 3, 8, 51)
    assert result.bandwidth.item() == pytest.approx(3 * 4 * 100 / 1000)
    assert model.frame_rate == 100 and model.hop_length == 8 and model.sample_rate == SAMPLE_RATE
    assert model.cardinality == 16 and model.num_codebooks == model.total_codebooks == 3
    assert not model.is_continuous
    model.eval()
    codes, scale = model.encode(x)
    assert scale is None and torch.equal(codes, model(x).codes)
    decoded = model.decode(codes)
    assert decoded.shape == (2, 1, 51 * 8)
    torch.testing.assert_close(decoded[..., :404], model(x).x)
    with pytest.raises(AssertionError, match=r'\[B, 1, T\]'):
        model.encode(torch.zeros(2, 2, 80))


def test_set_num_codebooks_lowers_bandwidth():
    model = _initialised(_tiny_model())
    x = _audio(seed=1)
    model.set_num_codebooks(1)
    result = model(x)
    assert result.codes.shape[1] == 1 and model.encode(x)[0].shape[1] == 1
    assert result.bandwidth.item() == pytest.approx(1 * 4 * 100 / 1000)


def test_training_reduces_reconstruction_loss():
    torch.manual_seed(0)
    model = _tiny_model(lstm=0).train()
    x = _audio(batch=4, seconds=0.5, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        result = model(x)
        l1 = (result.x - x).abs().mean()
        opt.zero_grad()
        (l1 + 0.1 * result.penalty).backward()
        opt.step()
        losses.append(l1.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_renormalize_scale():
    model = _initialised(_tiny_model(renormalize=True))
    x = _audio(seed=3)
    codes, scale = model.encode(x)
    rms = x.mean(dim=1).pow(2).mean(dim=-1, keepdim=True).sqrt()
    torch.testing.assert_close(scale, rms + 1e-8)
    codes3, scale3 = model.encode(3 * x)
    assert torch.equal(codes3, codes)
    torch.testing.assert_close(scale3, 3 * scale)
    torch.testing.assert_close(model.decode(codes, scale3), 3 * model.decode(codes, scale))
    torch.testing.assert_close(model(3 * x).x, 3 * model(x).x, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='causal'):
        _tiny_model(causal=True, renormalize=True)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('renormalize', [False, True])
def test_chunked_encode_decode_matches_full(renormalize):
    model = _initialised(_tiny_model(renormalize=renormalize))
    x = _audio(seconds=3.03, seed=4)  # 303 frames, chunks of 50 frames with 25 frames of context
    with torch.no_grad():
        codes, scale = model.encode(x)
        chunked_codes, chunked_scale = model.encode_chunked(x, chunk_seconds=0.5, overlap_seconds=0.25)
        assert chunked_codes.shape == codes.shape == (2, 3, 303)
        if renormalize:
            torch.testing.assert_close(chunked_scale, scale)
        else:
            assert chunked_scale is None
        assert (chunked_codes == codes).float().mean() > 0.95
        audio = model.decode(codes, scale)
        chunked_audio = model.decode_chunked(codes, scale, chunk_seconds=0.5, overlap_seconds=0.25)
    assert chunked_audio.shape == audio.shape
    assert _relative_error(chunked_audio, audio) < 0.02
    # without context, window edges differ: the context is what makes chunks seamless
    no_context = model.decode_chunked(codes, scale, chunk_seconds=0.5, overlap_seconds=0.)
    assert _relative_error(no_context, audio) > _relative_error(chunked_audio, audio)


def test_chunked_causal_model_is_exact_with_enough_context():
    torch.manual_seed(0)
    model = _initialised(_tiny_model(causal=True, lstm=0))
    x = _audio(seconds=2., seed=5)
    with torch.no_grad():
        codes, _ = model.encode(x)
        chunked, _ = model.encode_chunked(x, chunk_seconds=0.5, overlap_seconds=0.3)
        assert torch.equal(chunked, codes)
        torch.testing.assert_close(model.decode_chunked(codes, chunk_seconds=0.5, overlap_seconds=0.3),
                                   model.decode(codes), rtol=1e-5, atol=1e-6)


def _cfg(name: str, **overrides) -> OmegaConf:
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / f'{name}.yaml'), {'sample_rate': 16000, 'channels': 1})
    return OmegaConf.merge(cfg, overrides)


@pytest.mark.parametrize('name', ['debug', 'default'])
def test_build_from_config_files(name):
    cfg = _cfg(name)
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    assert isinstance(model, EncodecModel) and isinstance(model, CompressionModel)
    assert model.frame_rate == 16000 / np.prod(cfg.seanet.ratios)
    assert model.total_codebooks == cfg.rvq.n_q and model.cardinality == cfg.rvq.bins
    assert model.encoder.dimension == cfg.seanet.dimension
    assert model.encoder.hop_length == model.decoder.hop_length == model.hop_length
    x = _audio(batch=1, seconds=0.5).repeat_interleave(20, dim=-1)  # 0.5 s at 16 kHz
    with torch.no_grad():
        result = model(x)
    assert result.x.shape == x.shape
    assert result.codes.shape == (1, cfg.rvq.n_q, int(model.frame_rate / 2))


def test_builder_options_and_errors():
    model = get_compression_model(_cfg('debug', encodec={'quantizer': 'no_quant', 'renormalize': True}))
    assert model.is_continuous and model.renormalize
    latents, scale = model.encode(torch.randn(1, 1, 1600))
    assert latents.shape == (1, 32, 10) and scale.shape == (1, 1)
    assert model.decode(latents, scale).shape == (1, 1, 1600)
    causal = get_compression_model(_cfg('debug', encodec={'causal': True}))
    assert causal.causal and causal.encoder.model[0].causal
    tanh = get_compression_model(_cfg('debug', seanet={'decoder': {'final_activation': 'Tanh'}}))
    assert isinstance(tanh.decoder.model[-1], torch.nn.Tanh)
    with pytest.raises(KeyError, match=r"compression_model.*'encodec'"):
        get_compression_model(_cfg('debug', compression_model='soundstorm'))
    with pytest.raises(KeyError, match=r"encodec.quantizer.*'no_quant'.*'rvq'"):
        get_compression_model(_cfg('debug', encodec={'quantizer': 'fsq'}))
    with pytest.raises(KeyError, match='encodec.autoencoder'):
        get_compression_model(_cfg('debug', encodec={'autoencoder': 'unet'}))
    with pytest.raises(TypeError, match=r"config 'rvq'.*n_codebooks"):
        get_compression_model(_cfg('debug', rvq={'n_codebooks': 3}))
    with pytest.raises(KeyError, match='sample_rate'):
        get_compression_model(OmegaConf.load(CONFIG_DIR / 'debug.yaml'))
    quantizer = get_quantizer('rvq', _cfg('debug'), dimension=12)
    assert quantizer.dimension == 12 and quantizer.n_q == 4


def test_continuous_model_has_latents_and_no_codebooks():
    """The CompressionModel contract for a model without codes: latents from encode, no codebook API."""
    from omegaconf import OmegaConf

    from audiogen_lab.models.builders import get_compression_model
    cfg = OmegaConf.merge(OmegaConf.load("config/model/encodec/debug.yaml"),
                          {"sample_rate": 16000, "channels": 1, "encodec": {"quantizer": "no_quant"}})
    model = get_compression_model(cfg).eval()
    assert model.is_continuous and model.latent_dim == cfg.seanet.dimension and model.family == "compression"
    with torch.no_grad():
        latents, _ = model.encode(torch.randn(2, 1, 1600))
        assert latents.is_floating_point() and latents.shape == (2, cfg.seanet.dimension, 10)
        assert model.decode(latents).shape == (2, 1, 1600)
    for attribute in ("cardinality", "num_codebooks", "total_codebooks"):
        with pytest.raises(NotImplementedError, match="continuous"):
            getattr(model, attribute)
    with pytest.raises(NotImplementedError, match="continuous"):
        model.set_num_codebooks(2)
