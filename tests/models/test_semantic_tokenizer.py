import math

import pytest
import torch
import torchaudio

from audiogen_lab.models.semantic_tokenizer import (HuBERTFeatures, LogMelFeatures, SemanticTokenizer, dedup_ids,
                                                    fit_semantic_tokenizer)

# A tiny HuBERT-like model: conv strides 5 * 2 * 2 = 20 samples per frame (800 Hz at 16 kHz).
TINY = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 2, 2)],
    extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
    encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0,
    encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
    encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


def _tone(freq: float, seconds: float = 0.5, sample_rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return 0.5 * torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("length", [16000, 16321, 639, 320])
@pytest.mark.parametrize("frame_rate", [50, 25])
def test_log_mel_frame_rate_is_exact(length, frame_rate):
    extractor = LogMelFeatures(sample_rate=16000, frame_rate=frame_rate, n_mels=32)
    features = extractor(torch.randn(2, length))
    assert features.shape == (2, length * frame_rate // 16000, 32)
    assert extractor.dim == 32 and extractor.frame_rate == frame_rate
    assert torch.isfinite(features).all()


def test_log_mel_rejects_frame_rate_not_dividing_sample_rate():
    with pytest.raises(ValueError, match="frame_rate"):
        LogMelFeatures(sample_rate=16000, frame_rate=30)


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchaudio.models.wav2vec2_model(**TINY).eval()


def test_hubert_features_load_torchaudio_state_dict(tmp_path):
    model = _tiny_model()
    path = tmp_path / "hubert.pt"
    torch.save(model.state_dict(), path)
    wav = torch.randn(2, 1000, generator=torch.Generator().manual_seed(1))
    for layer in (1, 2):
        extractor = HuBERTFeatures(path, layer=layer, architecture=TINY)
        expected = model.extract_features(wav, num_layers=layer)[0][-1]
        features = extractor(wav)
        assert features.shape == (2, 49, 16)  # (1000 - 10) // 5 + 1 = 199 -> 99 -> 49
        torch.testing.assert_close(features, expected)
    assert extractor.frame_rate == 800 and extractor.dim == 16 and extractor.sample_rate == 16000
    # Half the native rate: average of each pair of frames (the odd last frame is dropped).
    half = HuBERTFeatures(path, layer=2, frame_rate=400, architecture=TINY)(wav)
    torch.testing.assert_close(half, (expected[:, 0:48:2] + expected[:, 1:48:2]) / 2)


def test_hubert_features_errors(tmp_path):
    path = tmp_path / "hubert.pt"
    torch.save(_tiny_model().state_dict(), path)
    with pytest.raises(ValueError, match="architecture"):
        HuBERTFeatures(path, layer=1)  # unknown shapes: no variant matches
    with pytest.raises(ValueError, match="layer"):
        HuBERTFeatures(path, layer=3, architecture=TINY)
    with pytest.raises(ValueError, match="frame_rate"):
        HuBERTFeatures(path, layer=1, frame_rate=300, architecture=TINY)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        HuBERTFeatures(tmp_path / "missing.pt", layer=1)


def test_hubert_features_load_huggingface_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8, 8),
        conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    hf_model = transformers.HubertModel(config).eval()
    hf_model.save_pretrained(tmp_path)
    wav = torch.randn(2, 1000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = hf_model(wav, output_hidden_states=True).hidden_states
    for layer in (1, 2):
        features = HuBERTFeatures(tmp_path, layer=layer)(wav)
        torch.testing.assert_close(features, hidden[layer], rtol=1e-4, atol=1e-5)


def _tokenizer_on_tones(freqs, num_clusters):
    extractor = LogMelFeatures(sample_rate=16000, frame_rate=50, n_mels=32)
    batches = [torch.stack([_tone(f) for f in freqs])]
    return fit_semantic_tokenizer(extractor, batches, num_clusters, batch_size=256, iters=30, restarts=2)


def test_fit_on_tones_gives_one_id_per_tone():
    freqs = [220.0, 880.0, 3000.0]
    # Two spare clusters: the first and last frames (half zero padding) are far from the tones' frames.
    tokenizer, stats = _tokenizer_on_tones(freqs, 5)
    assert tokenizer.cardinality == 5 and tokenizer.frame_rate == 50 and tokenizer.family == "semantic"
    assert stats["num_frames"] == 3 * 25 and stats["used_fraction"] == 1.0
    ids = tokenizer.encode(torch.stack([_tone(f) for f in freqs]), 16000)
    assert ids.shape == (3, 25) and ids.dtype == torch.long
    # Inner frames (away from the edges of the clip) of a tone share one id; distinct tones, distinct ids.
    inner = ids[:, 2:-2]
    assert (inner == inner[:, :1]).all()
    assert len(set(inner[:, 0].tolist())) == 3


def test_encode_is_deterministic_in_range_and_resamples():
    tokenizer, _ = _tokenizer_on_tones([220.0, 880.0, 3000.0, 5000.0], 6)
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    first, second = tokenizer.encode(wav, 16000), tokenizer.encode(wav, 16000)
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() < 6
    # A tone given at 24 kHz is resampled to 16 kHz first: same frames and same ids as at 16 kHz.
    at_24k = tokenizer.encode(_tone(880.0, sample_rate=24000)[None], 24000)
    at_16k = tokenizer.encode(_tone(880.0)[None], 16000)
    assert at_24k.shape == at_16k.shape
    assert torch.equal(at_24k[:, 2:-2], at_16k[:, 2:-2])


def test_dedup_collapses_runs_and_pads():
    ids = torch.tensor([[3, 3, 1, 1, 1, 3], [2, 2, 2, 2, 2, 2]])
    assert dedup_ids(ids).tolist() == [[3, 1, 3], [2, -1, -1]]
    tokenizer, _ = _tokenizer_on_tones([220.0, 880.0], 2)
    tokenizer.dedup = True
    wav = torch.cat([_tone(220.0), _tone(880.0)])[None]
    assert tokenizer.encode(wav, 16000).shape == (1, 2)


def test_centroids_must_match_extractor_dim():
    with pytest.raises(ValueError, match="centroids"):
        SemanticTokenizer(LogMelFeatures(n_mels=8), torch.zeros(4, 16))
