"""Semantic features from this project's models: MuLaN audio tower frames and consistency autoencoder encoder
features at their stated frame rates, frozen, and tokenizer files that record their source and refuse changed
weights."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.mulan_builder import get_mulan_model
from audiogen_lab.models.semantic_features import ConsistencyAEFeatures, MuLaNFeatures
from audiogen_lab.models.semantic_tokenizer import (SemanticTokenizer, load_semantic_tokenizer,
                                                    read_semantic_tokenizer_file, save_semantic_tokenizer)
from audiogen_lab.modules.text_tokenizer import WordTokenizer
from audiogen_lab.solvers.roles import is_frozen
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread


def _save(cfg, model: torch.nn.Module, path: Path) -> str:
    """`model` written as the best state of a solver checkpoint at `path` (what //sig/SIG names)."""
    checkpoint.save_checkpoint({"xp.cfg": OmegaConf.to_yaml(cfg), "xp.sig": path.parent.name,
                                "best_state": {"states": {"model": model.state_dict()}}}, path)
    return str(path)


def save_mulan(path: Path, tower: str = "ast", seed: int = 0) -> str:
    """A mulan/debug MuLaN (16 kHz, 10 ms hops, random weights) with the audio tower `tower`, as a checkpoint."""
    cfg = main.get_xp(["solver=mulan/debug", f"mulan.audio_tower={tower}"]).cfg
    torch.manual_seed(seed)
    model = get_mulan_model(cfg, tokenizer=WordTokenizer.fit(["a drone", "a reel"], max_size=64))
    return _save(cfg, model, path)


def save_consistency_ae(path: Path, seed: int = 0) -> str:
    """A compression/consistency_ae_debug autoencoder (16 kHz, 256 samples per latent frame, random weights)."""
    cfg = main.get_xp(["solver=compression/consistency_ae_debug"]).cfg
    torch.manual_seed(seed)
    return _save(cfg, get_compression_model(cfg), path)


def _wav(batch: int = 2, length: int = 16000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000
    return 0.3 * torch.sin(2 * math.pi * 330 * t) + 0.1 * torch.randn(batch, length, generator=gen)


@pytest.mark.parametrize("tower", ["ast", "conv"])
def test_mulan_frames_at_the_stated_rate(tmp_path, tower):
    features = MuLaNFeatures(save_mulan(tmp_path / "mulan" / "checkpoint.th", tower))
    assert features.sample_rate == 16000 and features.frame_rate == 6.25 and features.dim == 128
    for length in (16000, 24000, 3000):
        out = features(_wav(length=length))
        assert out.shape == (2, ((length - 400) // 160 + 1) // 16, 128)  # whole 16-frame columns of 10 ms frames
        assert abs(out.shape[1] - length / 16000 * features.frame_rate) < 1
    assert torch.isfinite(features(_wav())).all()
    assert features(_wav(length=400)).shape == (2, 0, 128)  # less than one column: no frame
    assert torch.equal(features(_wav()), features(_wav()))
    halved = MuLaNFeatures(features.source, frame_rate=3.125)
    torch.testing.assert_close(halved(_wav(length=32000)), features(_wav(length=32000)).unflatten(1, (6, 2)).mean(2))
    with pytest.raises(ValueError, match="frame_rate=25"):
        MuLaNFeatures(features.source, frame_rate=25)


def test_mulan_features_stay_frozen(tmp_path):
    features = MuLaNFeatures(save_mulan(tmp_path / "mulan" / "checkpoint.th"))
    tokenizer = SemanticTokenizer(features, torch.randn(8, features.dim))
    tokenizer.train()
    assert is_frozen(features.model) and not features.model.training
    assert not any(p.requires_grad for p in features.parameters())


def test_consistency_ae_features_at_the_latent_rate(tmp_path):
    source = save_consistency_ae(tmp_path / "cae" / "checkpoint.th")
    features = ConsistencyAEFeatures(source)
    model = features.model
    assert features.frame_rate == 62.5 and features.dim == model.encoder.feature_dim
    wav = _wav(length=16100)
    out = features(wav)
    assert out.shape == (2, 16100 // 256, features.dim)  # the zero-padded last frame is dropped
    expected = model.extract_features(wav[:, None])[..., :62].transpose(1, 2)
    torch.testing.assert_close(out, expected)
    assert features(_wav(length=200)).shape == (2, 0, features.dim)
    assert ConsistencyAEFeatures(source, frame_rate=31.25)(wav).shape == (2, 31, features.dim)
    assert is_frozen(model) and not any(p.requires_grad for p in features.parameters())


def test_tokenizer_files_record_the_source_and_refuse_changed_weights(tmp_path):
    source = save_mulan(tmp_path / "mulan" / "checkpoint.th")
    features = MuLaNFeatures(source)
    frames = features(_wav(length=48000))[0]
    tokenizer = SemanticTokenizer(features, frames[::3][:4])
    identity = save_semantic_tokenizer(tokenizer, tmp_path / "tok.th")
    spec = read_semantic_tokenizer_file(tmp_path / "tok.th")["extractor"]
    assert spec["kind"] == "mulan" and spec["args"]["checkpoint"] == str(Path(source).resolve())
    assert spec["args"]["frame_rate"] == 6.25 and len(spec["args"]["weights_sha256"]) == 64
    loaded = load_semantic_tokenizer(tmp_path / "tok.th")
    assert loaded.id == identity and isinstance(loaded.extractor, MuLaNFeatures)
    wav = _wav(length=48000, seed=3)
    assert torch.equal(loaded.encode(wav, 16000), tokenizer.encode(wav, 16000))
    # The same weights elsewhere: the same id (the source is not part of it).
    moved = tmp_path / "moved" / "checkpoint.th"
    moved.parent.mkdir()
    shutil.copy(source, moved)
    assert save_semantic_tokenizer(SemanticTokenizer(MuLaNFeatures(str(moved)), tokenizer.centroids),
                                   tmp_path / "moved.th") == identity
    save_mulan(Path(source), seed=1)  # the XP "trained further"
    with pytest.raises(ValueError, match="other weights"):
        load_semantic_tokenizer(tmp_path / "tok.th")


def test_consistency_ae_tokenizer_round_trip(tmp_path):
    source = save_consistency_ae(tmp_path / "cae" / "checkpoint.th")
    features = ConsistencyAEFeatures(source, frame_rate=31.25)
    tokenizer = SemanticTokenizer(features, features(_wav(length=8000))[0][:6])
    identity = save_semantic_tokenizer(tokenizer, tmp_path / "tok.th")
    loaded = load_semantic_tokenizer(tmp_path / "tok.th")
    assert loaded.id == identity and loaded.frame_rate == 31.25
    wav = _wav(length=8000, seed=2)
    assert torch.equal(loaded.encode(wav, 16000), tokenizer.encode(wav, 16000))
