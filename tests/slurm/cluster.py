"""The test cluster of scripts/slurm_local.sh: its folder, ports and client commands.

The cluster has its own folder and ports, so that a cluster started by hand with the defaults is left alone.
It declares two fake GPUs, so that multi-rank Dora jobs (`--gres=gpu:2`, two tasks) can be scheduled.
"""
from __future__ import annotations

import os
import subprocess
import time
import typing as tp
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
CLUSTER_DIR = Path(os.environ.get("AUDIOGEN_LAB_TEST_SLURM_DIR", "/tmp/audiogen_lab_slurm_tests"))
PORT = 6837  # slurmctld; slurmd, slurmdbd and MariaDB take the next three
GPUS = 2
CANNOT_RUN_HERE = 2  # the script's exit status when SLURM cannot be installed or run on this machine
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def env(**extra: str) -> tp.Dict[str, str]:
    """The environment of a client of the test cluster (plus `extra`)."""
    return {**os.environ, "SLURM_LOCAL_DIR": str(CLUSTER_DIR), "SLURM_LOCAL_PORT": str(PORT),
            "SLURM_CONF": str(CLUSTER_DIR / "etc" / "slurm.conf"), **extra}


def script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run scripts/slurm_local.sh on the test cluster's folder and ports."""
    return subprocess.run(["bash", str(SCRIPT), *args], env=env(), capture_output=True, text=True, timeout=timeout)


def slurm(*args: str, timeout: float = 30) -> str:
    """Run a SLURM client command against the test cluster and return its stdout."""
    proc = subprocess.run(list(args), env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr.strip()}"
    return proc.stdout


def job_states(*job_ids: str, duplicates: bool = False) -> tp.List[tp.Tuple[str, str]]:
    """(job id, state) rows of `sacct` for the jobs; with `duplicates`, every run of a requeued job."""
    fields = ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"]
    rows = slurm(*(fields + (["-D"] if duplicates else []))).split()
    return [(row.split("|")[0], row.split("|")[1].split()[0]) for row in rows]


def wait_until_ended(*job_ids: str, timeout: float = 300) -> tp.Dict[str, str]:
    """Wait until `sacct` reports every job ended and return {job id: final state}."""
    deadline = time.monotonic() + timeout
    states: tp.Dict[str, str] = {}
    while time.monotonic() < deadline:
        states = dict(job_states(*job_ids))
        if set(states) == set(job_ids) and all(state in ENDED for state in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs still running after {timeout:.0f} s: {states}")
