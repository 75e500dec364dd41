"""Checkpoint resolution, stale-checkpoint cleanup and exports."""
from __future__ import annotations

import pytest
import torch

from audiogen_lab.environment import AudioGenEnvironment
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.export import export_checkpoint, load_export


def test_resolve_sig_folder_and_file(dora_dir):
    folder = dora_dir / "xps" / "abcd1234"
    checkpoint.save_checkpoint({"x": 1}, folder / "checkpoint.th")
    assert checkpoint.resolve_checkpoint_path("//sig/abcd1234") == folder / "checkpoint.th"
    assert checkpoint.resolve_checkpoint_path(folder) == folder / "checkpoint.th"
    assert checkpoint.resolve_checkpoint_path(folder / "checkpoint.th") == folder / "checkpoint.th"
    with pytest.raises(FileNotFoundError, match="ffff0000"):
        checkpoint.resolve_checkpoint_path("//sig/ffff0000")


def test_flush_stale_checkpoints_keeps_the_most_recent(tmp_path):
    for epoch in (1, 2, 3, 10):
        checkpoint.save_checkpoint({"epoch": epoch}, tmp_path / checkpoint.checkpoint_name(epoch))
    removed = checkpoint.flush_stale_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["checkpoint_1.th", "checkpoint_2.th"]
    assert [epoch for epoch, _ in checkpoint.epoch_checkpoints(tmp_path)] == [3, 10]
    assert checkpoint.flush_stale_checkpoints(tmp_path, keep_last=None) == []


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.th"
    checkpoint.save_checkpoint({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointLoadError, match="checkpoint.th"):
        checkpoint.load_checkpoint(path)


def test_export_checks_content(tmp_path):
    solver_ckpt = tmp_path / "checkpoint.th"
    checkpoint.save_checkpoint({"xp.cfg": "solver: compression\n", "xp.sig": "s1",
                                "best_state": {"states": {"model": {"w": torch.ones(2)}}}}, solver_ckpt)
    out = export_checkpoint(solver_ckpt, tmp_path / "export.th")
    package = load_export(out, family="compression")
    assert package["xp.sig"] == "s1" and torch.equal(package["models"]["model"]["w"], torch.ones(2))
    with pytest.raises(ValueError, match="expected a 'lm' model"):
        load_export(out, family="lm")
    with pytest.raises(KeyError, match="generator"):
        export_checkpoint(solver_ckpt, tmp_path / "x.th", names=["generator"])
    with pytest.raises(ValueError, match="not an audiogen_lab export"):
        load_export(solver_ckpt)


def test_environment_variables_override_the_team(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOGEN_LAB_DORA_DIR", str(tmp_path / "xps_here"))
    monkeypatch.setenv("AUDIOGEN_LAB_USE_RENDEZVOUS", "true")
    AudioGenEnvironment.reset()
    try:
        assert AudioGenEnvironment.get_dora_dir() == (tmp_path / "xps_here").resolve()
        assert AudioGenEnvironment.use_rendezvous() is True
        monkeypatch.setenv("AUDIOGEN_LAB_TEAM", "no_such_team")
        AudioGenEnvironment.reset()
        with pytest.raises(FileNotFoundError, match="no_such_team"):
            AudioGenEnvironment.instance()
    finally:
        monkeypatch.delenv("AUDIOGEN_LAB_TEAM", raising=False)
        AudioGenEnvironment.reset()
