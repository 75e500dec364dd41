"""The `cluster` fixture: the test cluster up for a module, stopped at its end even when a test fails.

Skipped, with the script's reason, where SLURM cannot run (not root, packages missing and not installable);
once the cluster reports up, any failure is a real one.
"""
from __future__ import annotations

import pytest

from .cluster import CANNOT_RUN_HERE, CLUSTER_DIR, GPUS, script


@pytest.fixture(scope="module")
def cluster():
    try:
        proc = script("start", "--gpus", str(GPUS))
        if proc.returncode == CANNOT_RUN_HERE:
            lines = proc.stderr.strip().splitlines()
            pytest.skip(lines[-1] if lines else "scripts/slurm_local.sh cannot start SLURM here")
        assert proc.returncode == 0, f"slurm_local.sh start failed:\n{proc.stdout}{proc.stderr}"
        yield CLUSTER_DIR
    finally:
        script("stop", timeout=120)
