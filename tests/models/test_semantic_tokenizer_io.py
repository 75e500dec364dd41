"""Saving and loading semantic tokenizers: same ids after the round trip, ids that name the producer."""
import math

import pytest
import torch
import torchaudio

from audiogen_lab.models.semantic_tokenizer import (HuBERTFeatures, LogMelFeatures, SemanticTokenizer,
                                                    load_semantic_tokenizer, read_semantic_tokenizer_file,
                                                    save_semantic_tokenizer)
from audiogen_lab.utils.checkpoint import load_checkpoint, save_checkpoint

# A tiny HuBERT-like architecture: 20 samples per frame at 16 kHz.
TINY = dict(
    extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 2, 2)],
    extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=4,
    encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2, encoder_attention_dropout=0.0,
    encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
    encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


def _wav(seed: int = 0, length: int = 4000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * 440 * t)[None] + 0.3 * torch.randn(2, length, generator=gen)
    return wav * torch.linspace(0, 1, length)  # a rising level: frames fall in several clusters


def _log_mel_tokenizer(seed: int = 0, dedup: bool = False) -> SemanticTokenizer:
    """Centroids: six feature frames of a noisy signal (so that encoding other audio gives several ids)."""
    extractor = LogMelFeatures(16000, 50, n_mels=8)
    gen = torch.Generator().manual_seed(seed)
    frames = extractor(torch.randn(1, 4000, generator=gen) * torch.linspace(0, 1, 4000))[0]
    return SemanticTokenizer(extractor, frames[::2][:6], dedup=dedup)


def test_log_mel_round_trip_gives_the_same_ids(tmp_path):
    tokenizer = _log_mel_tokenizer()
    identity = save_semantic_tokenizer(tokenizer, tmp_path / "tok.th")
    loaded = load_semantic_tokenizer(tmp_path / "tok.th")
    assert loaded.id == identity and len(identity) == 12
    assert isinstance(loaded.extractor, LogMelFeatures) and loaded.extractor.dim == 8
    assert (loaded.cardinality, loaded.frame_rate, loaded.sample_rate, loaded.dedup) == (6, 50, 16000, False)
    wav = _wav()
    ids = tokenizer.encode(wav, 16000)
    assert ids.shape == (2, 12) and len(ids.unique()) > 1  # the check below compares varied ids
    assert torch.equal(loaded.encode(wav, 16000), ids)
    # A plain dict: the file is readable without unpickling any class.
    state = load_checkpoint(tmp_path / "tok.th")
    assert state["extractor"] == {"kind": "logmel", "args": {"sample_rate": 16000, "frame_rate": 50, "n_mels": 8}}
    torch.testing.assert_close(state["centroids"], tokenizer.centroids, rtol=0, atol=0)


def test_id_names_the_producer(tmp_path):
    first = save_semantic_tokenizer(_log_mel_tokenizer(0), tmp_path / "a.th")
    assert save_semantic_tokenizer(_log_mel_tokenizer(0), tmp_path / "b.th") == first  # same contents, same id
    assert save_semantic_tokenizer(_log_mel_tokenizer(1), tmp_path / "c.th") != first  # other centroids
    assert save_semantic_tokenizer(_log_mel_tokenizer(0, dedup=True), tmp_path / "d.th") != first
    other_rate = SemanticTokenizer(LogMelFeatures(16000, 25, n_mels=8), _log_mel_tokenizer(0).centroids)
    assert save_semantic_tokenizer(other_rate, tmp_path / "e.th") != first  # other extractor arguments
    deduped = load_semantic_tokenizer(tmp_path / "d.th")
    assert deduped.dedup and deduped.encode(_wav(), 16000).shape[1] <= 12


def test_hubert_round_trip_records_the_weights_path_not_the_weights(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "hubert.pt"
    torch.save(torchaudio.models.wav2vec2_model(**TINY).state_dict(), weights)
    extractor = HuBERTFeatures(weights, layer=2, frame_rate=400, architecture=TINY)
    tokenizer = SemanticTokenizer(extractor, extractor(_wav(1, length=2000))[0, ::10])  # 5 feature frames
    with pytest.raises(ValueError, match="source"):
        save_semantic_tokenizer(tokenizer, tmp_path / "tok.th")
    identity = save_semantic_tokenizer(tokenizer, tmp_path / "tok.th", str(weights), architecture=TINY)
    state = load_checkpoint(tmp_path / "tok.th")
    assert not any(isinstance(v, torch.Tensor) for v in state["extractor"]["args"].values())
    assert state["extractor"]["args"]["checkpoint"] == str(weights.resolve())
    assert (state["extractor"]["args"]["layer"], state["extractor"]["args"]["frame_rate"]) == (2, 400.0)
    assert (tmp_path / "tok.th").stat().st_size < weights.stat().st_size
    loaded = load_semantic_tokenizer(tmp_path / "tok.th")
    assert loaded.id == identity and loaded.frame_rate == 400
    wav = _wav(length=2000)
    ids = tokenizer.encode(wav, 16000)
    assert ids.shape == (2, 49) and len(ids.unique()) > 1  # (2000 - 10) // 5 + 1 = 399 -> 199 -> 99 -> 49
    assert torch.equal(loaded.encode(wav, 16000), ids)


def test_load_errors_name_the_problem(tmp_path):
    save_checkpoint({"format": "something else"}, tmp_path / "other.th")
    with pytest.raises(ValueError, match="not a semantic tokenizer file"):
        load_semantic_tokenizer(tmp_path / "other.th")
    save_semantic_tokenizer(_log_mel_tokenizer(), tmp_path / "tok.th")
    state = load_checkpoint(tmp_path / "tok.th")
    state["centroids"] = state["centroids"] + 1
    save_checkpoint(state, tmp_path / "edited.th")
    with pytest.raises(ValueError, match="does not match its contents"):
        read_semantic_tokenizer_file(tmp_path / "edited.th")
    with pytest.raises(ValueError, match="LogMelFeatures"):
        save_semantic_tokenizer(SemanticTokenizer(_Identity(), torch.zeros(2, 3)), tmp_path / "x.th")


class _Identity(torch.nn.Module):
    dim, sample_rate, frame_rate = 3, 16000, 50
