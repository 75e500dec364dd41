"""`bench_compression.py --quality` trains the three codec families at equal budget and prints one row each."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quality_table_rows(tiny_dataset, dora_dir):
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir)}
    out = subprocess.run([sys.executable, "scripts/bench_compression.py", "--quality", "--updates", "4",
                          "--dataset", str(tiny_dataset)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.split() and line.split()[0] in ("EnCodec", "EnCodec-MMD", "SoundStream")}
    assert set(rows) == {"EnCodec", "EnCodec-MMD", "SoundStream"}, out.stdout
    for name, cells in rows.items():
        si_snr, mel, kbps, usage, perplexity, nmi, step_ms = map(float, cells[1:8])
        assert kbps == pytest.approx(4.8), (name, cells)  # 8 codebooks of 64 entries at 100 frames/s
        assert all(math.isfinite(v) for v in (si_snr, mel, nmi)) and 0 < usage <= 1 and step_ms > 0, cells
        assert 1 <= perplexity <= 64, cells
    assert len(list((dora_dir / "xps").glob("*/history.json"))) == 3  # one XP per codec
