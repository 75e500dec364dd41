"""The MuLaN solver end to end on generated captioned clips: every stage and its metrics, the tokenizer in
the checkpoint, //sig/ loading and export, the fitted conditioning quantizer and the MuLaN FAD embedder."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import find_audio_files, save_audio_meta
from audiogen_lab.data.info_dataset import write_sidecar
from audiogen_lab.metrics.embedders import get_embedder
from audiogen_lab.models.mulan import MuLaN
from audiogen_lab.models.mulan_conditioner import fit_mulan_quantizer, load_mulan_conditioner, quantizer_path
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.mulan import MuLaNSolver
from audiogen_lab.train import main
from audiogen_lab.utils.export import export_checkpoint

from ..conftest import dataset_overrides, experiments_folder

SR = 16000
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["solver=mulan/debug", "optim.epochs=2", "optim.updates_per_epoch=3", "dataset.batch_size=4",
        "dataset.segment_duration=1.0", "dataset.valid.batch_size=4", "dataset.evaluate.batch_size=4",
        "ast.depth=1", "text_transformer.depth=1"]
KINDS = {"drone": ("a low organ drone", {"genre": "drone", "instrument": "organ"}),
         "noise": ("bright noise bursts", {"genre": "noise", "instrument": "synth"})}


def _clip(kind: str, index: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(index)
    t = torch.arange(2 * SR) / SR
    if kind == "drone":
        return (0.3 * torch.sin(2 * math.pi * (80 + 10 * index) * t))[None]
    return (0.2 * torch.randn(2 * SR, generator=gen) * (torch.sin(2 * math.pi * 4 * t) > 0))[None]


@pytest.fixture(scope="module")
def captioned_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioned")
    for split, count in (("train", 8), ("valid", 4), ("evaluate", 4), ("generate", 2)):
        folder = root / split
        for index in range(count):
            kind = "drone" if index % 2 == 0 else "noise"
            caption, attributes = KINDS[kind]
            path = folder / f"{kind}_{index}.wav"
            audio_write(path, _clip(kind, index), SR)
            write_sidecar(path, [caption, f"{caption}, take {index}"], **attributes)
        save_audio_meta(folder / "data.jsonl", find_audio_files(folder))
    return root


@pytest.fixture(scope="module")
def trained_xp(captioned_dataset, tmp_path_factory):
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(ARGS + dataset_overrides(captioned_dataset)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
        yield xp, solver


def test_every_stage_reports_its_metrics(trained_xp):
    _, solver = trained_xp
    assert isinstance(solver, MuLaNSolver) and isinstance(solver.model, MuLaN)
    last = solver.history[-1]
    assert len(solver.history) == 2
    assert {"loss", "temperature", "model_lr"} <= set(last["train"])
    for stage in ("valid", "evaluate"):
        metrics = last[stage]
        for key in ("loss", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1", "t2a_median_rank", "a2t_median_rank",
                    "mean_recall", "zero_shot_genre", "zero_shot_instrument"):
            assert key in metrics and math.isfinite(metrics[key]), (stage, key)
        assert metrics["t2a_r10"] == 1.0 and metrics["retrieval_items"] == 4  # 4 clips: all within 10
        assert 0.0 <= metrics["zero_shot_genre"] <= 1.0 and metrics["zero_shot_genre_chance"] == 0.5
    assert solver.best_metric_name == "mean_recall" and solver.best_state.direction == "higher"


def test_words_tokenizer_is_fitted_on_the_train_captions(trained_xp):
    _, solver = trained_xp
    vocabulary = solver.model.tokenizer.state()["vocab"]
    for word in ("organ", "drone", "noise", "bursts", "take"):
        assert word in vocabulary


def test_sig_loading_and_export_round_trip(trained_xp, tmp_path):
    xp, solver = trained_xp
    with experiments_folder(xp.folder.parent.parent):
        loaded = MuLaNSolver.model_from_checkpoint(f"//sig/{xp.sig}")
        exported = export_checkpoint(f"//sig/{xp.sig}", tmp_path / "mulan.th")
    from_export = MuLaNSolver.model_from_checkpoint(exported)
    assert not loaded.training and loaded.tokenizer.state() == solver.model.tokenizer.state()
    best = solver.best_state.states["model"]
    for key, value in from_export.state_dict().items():
        assert torch.equal(value, best[key]), key
    texts = [KINDS["drone"][0], KINDS["noise"][0]]
    assert torch.allclose(loaded.get_text_embeddings(texts), from_export.get_text_embeddings(texts))
    wav = _clip("drone", 3)
    assert torch.allclose(loaded.get_audio_embeddings(wav, SR), from_export.get_audio_embeddings(wav, SR))
    assert exported.stat().st_size < 0.5 * (xp.folder / "checkpoint.th").stat().st_size  # no optimizer state


def test_conditioning_quantizer_is_fitted_beside_the_checkpoint(trained_xp, captioned_dataset):
    xp, _ = trained_xp
    source = f"//sig/{xp.sig}"
    with experiments_folder(xp.folder.parent.parent):
        with pytest.raises(FileNotFoundError, match="fit the quantizer"):
            load_mulan_conditioner(source)
        path = fit_mulan_quantizer(source, split="train", num_levels=3, codebook_size=4, iters=5, batch_size=4)
        assert path == quantizer_path(source) and path.parent == xp.folder
        conditioner = load_mulan_conditioner(source)
    wav = torch.cat([_clip("drone", 0), _clip("noise", 1)])
    tokens = conditioner.tokens_from_audio(wav, SR)
    assert tokens.shape == (2, 3) and tokens.dtype == torch.long and int(tokens.max()) < 4
    assert torch.equal(tokens, conditioner.tokens_from_audio(wav, SR))  # deterministic
    text_tokens = conditioner.tokens_from_text([KINDS["drone"][0]])
    assert text_tokens.shape == (1, 3)
    assert not any(p.requires_grad for p in conditioner.parameters()) and not conditioner.training
    conditioner.train()
    assert not conditioner.mulan.training  # frozen: stays in eval


def test_mulan_audio_tower_is_an_fad_embedder(trained_xp):
    xp, solver = trained_xp
    with experiments_folder(xp.folder.parent.parent):
        embedder = get_embedder("mulan", f"//sig/{xp.sig}")
    wav = torch.cat([_clip("drone", 0), _clip("noise", 1)])[:, None]  # [2, 1, T] at 16 kHz
    embeddings = embedder.embed(wav, SR) if hasattr(embedder, "embed") else embedder(wav)
    assert embeddings.shape == (2, solver.model.dim)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.slow
def test_two_ranks_gather_negatives_and_the_split_for_retrieval(captioned_dataset, dora_dir):
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir),
           "AUDIOGEN_LAB_USE_RENDEZVOUS": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    args = ARGS + ["device=cpu", *map(str, dataset_overrides(captioned_dataset))]
    out = subprocess.run([sys.executable, "-m", "dora", "run", "-d", "--ddp_workers", "2", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    xp = main.get_xp(args)
    logs = {rank: (xp.folder / f"solver.log.{rank}").read_text() for rank in (0, 1)
            if (xp.folder / f"solver.log.{rank}").exists()}
    assert out.returncode == 0, out.stderr[-3000:] + "".join(logs.values())[-3000:]
    for rank in (0, 1):
        assert "Weights of model identical on all 2 ranks" in logs[rank]
    xp.link.load()
    valid = xp.link.history[-1]["valid"]
    assert valid["retrieval_items"] == 4 and "zero_shot_genre" in valid  # both ranks' clips, each once


def test_a_non_finite_loss_skips_its_update(trained_xp, monkeypatch):
    _, solver = trained_xp  # runs last: it trains the fixture's solver one more epoch
    model = solver.model
    real_loss = model.loss
    calls = []

    def loss_nan_once(audio, text):
        loss, info = real_loss(audio, text)
        calls.append(1)
        return (loss * float("nan"), info) if len(calls) == 1 else (loss, info)

    monkeypatch.setattr(model, "loss", loss_nan_once)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    metrics = solver.run_stage("train", solver.train)
    assert metrics["skipped_updates"] == 1.0 and math.isfinite(metrics["loss"])
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())
