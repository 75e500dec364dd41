"""The compression solver on bad data and as an upstream model: a NaN batch leaves the codebooks
exactly as they were, a NaN file among good ones is skipped and the run finishes with finite weights,
whole files of different lengths are evaluated, and a downstream solver gets a frozen codec by name."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audiogen_lab import solvers
from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import find_audio_files, save_audio_meta
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.compression import CompressionSolver
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.export import export_checkpoint

from ..conftest import _tonal_clip, dataset_overrides
from .toy_solver import ToySolver, make_toy

SHORT = ["solver=compression/debug", "optim.epochs=1", "optim.updates_per_epoch=6", "dataset.batch_size=4",
         "dataset.valid.num_samples=4", "evaluate.every=100", "generate.every=100"]


def _state(solver) -> dict:
    out = {f"model.{k}": v.detach().clone() for k, v in solver.model.state_dict().items()}
    for name, group in solver.optim_groups.items():
        for index, state in group.optimizer.state.items():
            for key, value in state.items():
                out[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).clone()
    out["balancer"] = repr(solver.balancer.state_dict())
    return out


def test_nan_batch_leaves_codebooks_and_every_state_unchanged(tiny_dataset, dora_dir, caplog):
    xp = main.get_xp(SHORT + dataset_overrides(tiny_dataset))
    with xp.enter():
        solver = get_solver(xp.cfg)
    seen = {}
    original = solver.run_step

    def poisoned(idx, batch, metrics):
        if idx == 3:
            batch["audio"][1, 0, 100:200] = float("nan")
            seen["before"] = _state(solver)
        out = original(idx, batch, metrics)
        if idx == 3:
            seen["after"] = _state(solver)
        return out
    solver.run_step = poisoned
    with xp.enter(), caplog.at_level(logging.ERROR):
        solver.run()
    assert "Non-finite loss at epoch 1" in caplog.text and "batch files:" in caplog.text
    assert str(tiny_dataset / "train") in caplog.text.split("batch files:")[1]
    before, after = seen["before"], seen["after"]
    assert before.keys() == after.keys()
    changed = [k for k in before if (not torch.equal(before[k], after[k]) if isinstance(before[k], torch.Tensor)
                                    else before[k] != after[k])]
    assert changed == []
    assert any("codebook" in k or "embed" in k for k in before)  # the RVQ buffers were compared
    assert solver.history[-1]["train"]["skipped_updates"] == 1
    state = checkpoint.load_checkpoint(solver.checkpoint_path)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.fixture
def dataset_with_nan_file(tiny_dataset, tmp_path):
    """The tiny dataset with a float wav holding NaN samples added to the train split."""
    import shutil
    root = tmp_path / "with_nan"
    shutil.copytree(tiny_dataset, root)
    bad = np.zeros(16000, dtype=np.float32)
    bad[4000:4100] = np.nan
    sf.write(root / "train" / "clip_bad.wav", bad, 16000, subtype="FLOAT")
    metas = find_audio_files(root / "train")
    assert all("clip_bad" not in m.path for m in metas)  # the manifest builder leaves it out...
    from audiogen_lab.data.audio_dataset import AudioMeta
    metas.append(AudioMeta(path=str(root / "train" / "clip_bad.wav"), duration=1.0, sample_rate=16000, channels=1))
    save_audio_meta(root / "train" / "data.jsonl", metas)  # ...but a hand-made manifest lists it
    return root


def test_nan_file_among_good_files_is_skipped_and_the_run_finishes(dataset_with_nan_file, dora_dir, caplog):
    xp = main.get_xp(SHORT + ["optim.epochs=2", "dataset.batch_size=8"] + dataset_overrides(dataset_with_nan_file))
    with xp.enter(), caplog.at_level(logging.WARNING):
        solver = get_solver(xp.cfg)
        solver.run()
    assert "clip_bad.wav" in caplog.text
    assert len(solver.history) == 2
    state = checkpoint.load_checkpoint(solver.checkpoint_path)
    for key, value in state["model"].items():
        assert not value.is_floating_point() or torch.isfinite(value).all(), key


def test_evaluate_whole_files_of_different_lengths(tmp_path, dora_dir, tiny_dataset):
    import shutil
    root = tmp_path / "unequal"
    shutil.copytree(tiny_dataset, root)
    folder = root / "evaluate"
    gen = torch.Generator().manual_seed(3)
    for index, seconds in enumerate((1.3, 2.0, 0.7)):
        audio_write(folder / f"extra_{index}.wav", _tonal_clip(gen, seconds, 16000), 16000)
    save_audio_meta(folder / "data.jsonl", find_audio_files(folder))
    xp = main.get_xp(SHORT + ["dataset.evaluate.batch_size=3", "dataset.evaluate.segment_duration=null",
                              "dataset.evaluate.num_samples=null", "evaluate.every=1"] + dataset_overrides(root))
    with xp.enter():
        solver = get_solver(xp.cfg)
        solver.run()
    evaluate = solver.history[-1]["evaluate"]
    assert np.isfinite(evaluate["si_snr"]) and np.isfinite(evaluate["mel_dist"]) and "perplexity_q0" in evaluate


class UpstreamToy(ToySolver):
    """A downstream solver that codes audio with a frozen upstream codec while training its own model."""

    def build_model(self) -> None:
        super().build_model()
        self.register_model("codec", self.load_upstream("compression_model_checkpoint", family="compression"),
                            role="frozen")

    def run_step(self, idx, batch, metrics):
        with torch.no_grad():
            codes, _ = self.codec.encode(torch.randn(2, 1, 1600, generator=torch.Generator().manual_seed(idx)))
        metrics["codes_mean"] = float(codes.float().mean())
        return super().run_step(idx, batch, metrics)


def _codec_export(tmp_path) -> str:
    """An export of a small compression model whose codebooks went through k-means (a trained codec)."""
    cfg = OmegaConf.merge(OmegaConf.load("config/model/encodec/debug.yaml"),
                          {"solver": "compression", "sample_rate": 16000, "channels": 1})
    model = CompressionSolver.build_model_from_config(cfg, "model")
    model.train()
    model(torch.randn(8, 1, 1600))
    ckpt = tmp_path / "codec_ckpt.th"
    checkpoint.save_checkpoint({"xp.cfg": OmegaConf.to_yaml(cfg), "xp.sig": "codec1",
                                "best_state": {"states": {"model": model.state_dict()}}}, ckpt)
    return str(export_checkpoint(ckpt, tmp_path / "codec.th"))


def test_downstream_solver_gets_a_frozen_codec_by_name(dora_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(solvers.SOLVERS, "toy", "tests.solvers.toy_solver:ToySolver")
    source = _codec_export(tmp_path)
    xp = main.get_xp(["solver=compression/debug", "seed=40", f"compression_model_checkpoint={source}"])
    solver = make_toy(xp, {"optim": {"epochs": 1}}, UpstreamToy)
    before = {k: v.clone() for k, v in solver.codec.state_dict().items()}
    with xp.enter():
        solver.run()
    assert solver.models["codec"].role == "frozen" and not solver.codec.training
    assert all(torch.equal(before[k], v) for k, v in solver.codec.state_dict().items())
    state = checkpoint.load_checkpoint(solver.checkpoint_path)
    assert "codec" not in state and state["upstream"] == {"compression_model_checkpoint": source}
    package = torch.load(export_checkpoint(solver.checkpoint_path, tmp_path / "toy.th"), weights_only=True)
    assert package["upstream"] == {"compression_model_checkpoint": source} and set(package["models"]) == {"model"}
    missing = main.get_xp(["solver=compression/debug", "seed=41"])
    with pytest.raises(ValueError, match="compression_model_checkpoint"):
        make_toy(missing, {"optim": {"epochs": 1}}, UpstreamToy)
