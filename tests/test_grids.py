"""Dora grids register from the repository root, and the local grid runner lists their XPs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(dora_dir):
    return {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir)}


def test_dora_grid_dry_run_init(dora_dir):
    total = 0
    for grid, count in (("compression.debug", 2), ("compression.encodec_mmd", 8), ("compression.soundstream", 6),
                        ("compression.consistency_ae", 4), ("mulan.mulan", 6), ("mulan.debug", 2),
                        ("audiolm.semantic", 4), ("audiolm.coarse", 4), ("audiolm.fine", 4), ("semantic.kmeans", 4),
                        ("musiclm.musiclm", 6), ("latent_gan.latent_gan", 4)):
        out = subprocess.run([sys.executable, "-m", "dora", "grid", grid, "--dry_run", "--init"],
                             cwd=ROOT, env=_env(dora_dir), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        total += count
        assert len(list((dora_dir / "xps").glob("*/.argv.json"))) == total


def test_local_grid_runner_lists_the_xps(dora_dir):
    out = subprocess.run([sys.executable, "scripts/run_grid_locally.py", "compression.debug", "--dry_run"],
                         cwd=ROOT, env=_env(dora_dir), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compression.debug: 2 XPs" in out.stdout
    assert "losses.mmd=0.0" in out.stdout


def test_grid_overrides_reach_every_xp(dora_dir):
    """$AUDIOGEN_LAB_GRID_OVERRIDES adds its overrides to every XP of a grid (so to their signatures); a
    key the grid sets for an XP keeps the grid's value there."""
    env = {**_env(dora_dir), "AUDIOGEN_LAB_GRID_OVERRIDES": "optim.epochs=2 'losses.mmd=0.5'"}
    out = subprocess.run([sys.executable, "-m", "dora", "grid", "compression.debug", "--dry_run", "--init"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    argvs = sorted(json.loads(path.read_text()) for path in (dora_dir / "xps").glob("*/.argv.json"))
    assert len(argvs) == 2 and all("optim.epochs=2" in argv for argv in argvs)
    assert sorted(arg for argv in argvs for arg in argv if arg.startswith("losses.mmd")) == [
        "losses.mmd=0.0", "losses.mmd=0.5"]


def test_bad_grid_overrides_name_the_variable(monkeypatch):
    from grids._explorers import GRID_OVERRIDES_ENV, grid_overrides

    monkeypatch.setenv(GRID_OVERRIDES_ENV, "optim.epochs=2 'unclosed")
    with pytest.raises(ValueError, match=GRID_OVERRIDES_ENV):
        grid_overrides()
