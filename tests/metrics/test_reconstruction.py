"""Scoring compression models on whole files, grouped by caption kind."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import find_audio_files, save_audio_meta
from audiogen_lab.data.info_dataset import write_sidecar
from audiogen_lab.metrics.reconstruction import caption_kind, score_reconstructions
from audiogen_lab.models.builders import get_compression_model


def test_scores_every_file_per_kind_and_model(tmp_path):
    gen = torch.Generator().manual_seed(0)
    for name, genre, seconds in (("a", "speech", 0.5), ("b", "classical", 0.73), ("c", "classical", 0.4)):
        path = audio_write(tmp_path / f"{name}.wav", 0.1 * torch.randn(1, int(16000 * seconds), generator=gen), 16000)
        write_sidecar(path, description=name, genre=genre)
    save_audio_meta(tmp_path / "data.jsonl", find_audio_files(tmp_path))
    cfg = OmegaConf.merge(OmegaConf.load("config/model/encodec/debug.yaml"), {"sample_rate": 16000, "channels": 1})
    torch.manual_seed(0)
    models = {"one": get_compression_model(cfg).eval(), "two": get_compression_model(cfg).eval()}
    scores = score_reconstructions(models, tmp_path)
    assert set(scores) == {"speech", "music"}
    assert {len(values) for values in scores["music"].values()} == {2} and len(scores["speech"]["one_mel"]) == 1
    assert set(scores["music"]) == {"one_si_snr", "one_mel", "two_si_snr", "two_mel"}
    assert all(v == v and abs(v) < 1e3 for row in scores.values() for values in row.values() for v in values)
    assert caption_kind(None) == "music" and caption_kind(str(tmp_path / "a.json")) == "speech"
