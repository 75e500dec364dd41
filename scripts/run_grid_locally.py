#!/usr/bin/env python
"""Run every XP of a Dora grid on this machine, one after the other, without SLURM.

    python scripts/run_grid_locally.py compression.debug [--dry_run] [-- extra overrides]

Registers the grid like `dora grid NAME --dry_run --init` (so `dora grid NAME` then shows the
table of results), then runs `dora run -f SIG` for each XP. XPs that already finished are resumed
(and so return at once); interrupted ones continue from their last checkpoint.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="grid name, e.g. compression.debug")
    parser.add_argument("--dry_run", action="store_true", help="only list the XPs")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every XP (e.g. dataset.num_workers=0)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from dora.grid import RunGridArgs, _get_explore, run_grid

    from audiogen_lab.train import main as train_main

    grid_args = argparse.Namespace(grid=args.grid)
    explorer = _get_explore(grid_args, train_main)
    sheeps = run_grid(train_main, explorer, args.grid, args=RunGridArgs(dry_run=True, init=True))
    print(f"Grid {args.grid}: {len(sheeps)} XPs")
    for sheep in sheeps:
        print(f"  {sheep.xp.sig}  {' '.join(sheep.xp.argv)}")
    if args.dry_run:
        return 0
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab"}
    failed = []
    for sheep in sheeps:
        cmd = [sys.executable, "-m", "dora", "run", "-f", sheep.xp.sig, *args.overrides]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            failed.append(sheep.xp.sig)
    if failed:
        print(f"{len(failed)} XP(s) failed: {' '.join(failed)} (see their solver.log.0)")
        return 1
    print(f"Done. Show the table with: dora grid {args.grid} --dry_run --init")
    return 0


if __name__ == "__main__":
    sys.exit(main())
