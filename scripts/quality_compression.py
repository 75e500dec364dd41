#!/usr/bin/env python
"""Quality table of the codec families at equal budget on the example dataset.

Trains EnCodec, EnCodec-MMD and SoundStream with the same number of updates, batch and segment length
(the CPU debug sizes, fixed seed), each as its own `dora run` (a finished XP is reused on the next call),
then prints one table from the evaluate stage (whole clips never seen in training): SI-SNR, mel distance,
bandwidth, mean codebook usage and perplexity, the inter-codebook dependence (`nmi_corrected`: mean
pairwise normalized mutual information between levels minus its value on shuffled codes) and the
training step time.

    python scripts/bench_compression.py --quality [--updates 600] [--dataset dataset/example]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import typing as tp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> the overrides of one row; every row also gets the shared budget of `budget_overrides`
CODECS: tp.Dict[str, tp.List[str]] = {
    "EnCodec": ["solver=compression/debug", "losses.mmd=0.0"],
    "EnCodec-MMD": ["solver=compression/debug", "losses.mmd=0.3", "mmd.warmup_updates=100"],
    "SoundStream": ["solver=compression/soundstream_debug", "losses.mmd=0.0"],
}


def budget_overrides(updates: int, dataset: Path) -> tp.List[str]:
    """The budget every codec gets: one epoch of `updates` updates, the debug batch and segments, seed 0."""
    overrides = ["optim.epochs=1", f"optim.updates_per_epoch={updates}", "seed=0"]
    if dataset.resolve() != (ROOT / "dataset/example").resolve():
        overrides += [f"datasource.{split}={dataset.resolve() / split}"
                      for split in ("train", "valid", "evaluate", "generate")]
    return overrides


def _levels(metrics: tp.Dict[str, float], prefix: str) -> float:
    values = [v for k, v in metrics.items() if k.startswith(prefix)]
    return statistics.mean(values) if values else float("nan")


def train_and_read(name: str, argv: tp.List[str]) -> tp.Dict[str, float]:
    """Run (or reuse) the XP of `argv` and return its table row."""
    from audiogen_lab.train import main
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab"}
    print(f"[{name}] dora run {' '.join(argv)}", flush=True)
    subprocess.run([sys.executable, "-m", "dora", "run", *argv], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    xp = main.get_xp(argv)
    history = json.loads((xp.folder / "history.json").read_text())
    last = history[-1]
    train, evaluate = last["train"], last["evaluate"]
    return {"sig": xp.sig, "si_snr": evaluate["si_snr"], "mel_dist": evaluate["mel_dist"],
            "kbps": evaluate["bandwidth"], "usage": _levels(evaluate, "usage_q"),
            "perplexity": _levels(evaluate, "perplexity_q"), "nmi_corrected": evaluate["nmi_corrected"],
            "step_ms": 1000 * train["duration"] / xp.cfg.optim.updates_per_epoch}


def print_table(rows: tp.Dict[str, tp.Dict[str, float]], updates: int) -> None:
    print(f"\nEvaluate split (unseen clips), {updates} updates each, batch 8 x 0.5 s at 16 kHz, seed 0")
    header = (f"{'codec':<13}{'SI-SNR dB':>10}{'mel dist':>10}{'kbps':>7}{'usage':>8}{'perplex.':>10}"
              f"{'NMI corr.':>11}{'step ms':>9}  XP")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:<13}{row['si_snr']:>10.2f}{row['mel_dist']:>10.3f}{row['kbps']:>7.2f}{row['usage']:>8.2f}"
              f"{row['perplexity']:>10.1f}{row['nmi_corrected']:>11.4f}{row['step_ms']:>9.0f}  {row['sig']}")


def run_quality(updates: int, dataset: Path) -> int:
    rows = {name: train_and_read(name, argv + budget_overrides(updates, dataset)) for name, argv in CODECS.items()}
    print_table(rows, updates)
    return 0
