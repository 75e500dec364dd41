"""Dora grids register from the repository root, and the local grid runner lists their XPs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(dora_dir):
    return {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir)}


def test_dora_grid_dry_run_init(dora_dir):
    total = 0
    for grid, count in (("compression.debug", 2), ("compression.encodec_mmd", 8), ("compression.soundstream", 6)):
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
