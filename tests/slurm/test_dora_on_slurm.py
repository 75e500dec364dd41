"""Dora on the local SLURM cluster: a grid runs to COMPLETED, a 2-rank job keeps its ranks identical, a
requeued job resumes to the history of an uninterrupted run, and a failing XP fails alone.

Every XP is the tiny debug codec for a few updates on generated clips (`tiny_dataset`); jobs use the
resources of the `local_slurm` team (config/teams/local_slurm.yaml).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest

from ..conftest import dataset_overrides
from .cluster import REPO, env, job_states, slurm, wait_until_ended

pytestmark = pytest.mark.slow
TINY = ["optim.epochs=2", "optim.updates_per_epoch=3"]


@pytest.fixture(scope="module")
def dora_env(cluster, tmp_path_factory) -> tp.Dict[str, str]:
    """Environment of a Dora command submitting to the test cluster, with its own experiments folder."""
    folder = tmp_path_factory.mktemp("slurm_dora")
    launch = env(AUDIOGEN_LAB_TEAM="local_slurm", AUDIOGEN_LAB_DORA_DIR=str(folder), DORA_PACKAGE="audiogen_lab")
    launch.pop("AUDIOGEN_LAB_USE_RENDEZVOUS", None)
    launch.pop("AUDIOGEN_LAB_GRID_OVERRIDES", None)
    return launch


def _dora(args: tp.Sequence[str], launch_env: tp.Dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "dora", *args], cwd=REPO, env=launch_env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"dora {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _sheep(sig: str, launch_env: tp.Dict[str, str]) -> tp.Tuple[str, tp.Optional[str]]:
    """(Dora's state, SLURM job id) of the XP `sig`, as `dora info` reports them."""
    out = _dora(["info", "-f", sig], launch_env)
    found = re.search(r"Sheep\(\w+, state=(\w+)(?:, sid=(\d+))?", out)
    assert found, f"no sheep in dora info output:\n{out}"
    return found.group(1), found.group(2)


def _scheduled(out: str) -> tp.Dict[str, str]:
    """{XP signature: SLURM job id} of the jobs a `dora grid` / `dora launch` output says it scheduled."""
    return {sig: job for job, sig in re.findall(r"Scheduled job (\d+) for sheep (\w+)/", out)}


def _history(folder: Path, sig: str) -> tp.List[dict]:
    return json.loads((folder / "xps" / sig / "history.json").read_text())


def _without_durations(history: tp.List[dict]) -> tp.List[dict]:
    return [{stage: {k: v for k, v in metrics.items() if k != "duration"} for stage, metrics in epoch.items()}
            for epoch in history]


def test_grid_runs_every_xp_to_completion(dora_env, tiny_dataset):
    """`dora grid compression.debug` submits both XPs; `dora info` and `sacct` agree they COMPLETED, their
    histories hold both epochs, and the grid table shows their metrics without submitting again."""
    grid_env = {**dora_env, "AUDIOGEN_LAB_GRID_OVERRIDES": " ".join(TINY + dataset_overrides(tiny_dataset))}
    scheduled = _scheduled(_dora(["grid", "compression.debug", "--no_monitoring"], grid_env))
    assert len(scheduled) == 2, scheduled
    states = wait_until_ended(*scheduled.values(), timeout=400)
    folder = Path(dora_env["AUDIOGEN_LAB_DORA_DIR"])
    for sig, job in scheduled.items():
        assert states[job] == "COMPLETED", f"job {job} of {sig} ended {states[job]}: see {folder / 'xps' / sig}"
        assert _sheep(sig, dora_env) == ("COMPLETED", job)
        history = _history(folder, sig)
        assert len(history) == 2 and all(set(epoch) >= {"train", "valid", "evaluate"} for epoch in history)
    table = _dora(["grid", "compression.debug", "--no_monitoring"], grid_env)
    assert "Scheduled job" not in table, table
    for sig in scheduled:
        row = next(line for line in table.splitlines() if sig in line)
        assert "COM" in row and len(re.findall(r"-?\d+\.\d{4}", row)) >= 8, f"no metrics in the row of {sig}:\n{row}"


def test_two_rank_job_keeps_identical_weights(dora_env, tiny_dataset):
    """`dora launch -g 2` runs two tasks on the fake GPUs (gloo, file rendezvous on loopback); the base
    checks after every epoch that both ranks hold the same weights, and the job COMPLETES."""
    argv = ["solver=compression/debug", "optim.epochs=2", "optim.updates_per_epoch=4"] + dataset_overrides(tiny_dataset)
    scheduled = _scheduled(_dora(["launch", "--no_tail", "-g", "2", *argv], dora_env))
    (sig, job), = scheduled.items()
    assert wait_until_ended(job, timeout=400)[job] == "COMPLETED", f"see {dora_env['AUDIOGEN_LAB_DORA_DIR']}"
    tres = slurm("sacct", "-n", "-P", "-X", "-j", job, "-o", "AllocTRES,NTasks").strip()
    assert "gres/gpu=2" in tres, tres
    folder = Path(dora_env["AUDIOGEN_LAB_DORA_DIR"]) / "xps" / sig
    for rank in (0, 1):
        log = (folder / f"solver.log.{rank}").read_text()
        assert f"Distributed init: {rank}/2" in log
        assert log.count("Weights of model identical on all 2 ranks") == 2, log[-3000:]
    assert len(_history(folder.parent.parent, sig)) == 2


def test_requeued_job_resumes_to_the_uninterrupted_history(dora_env, tiny_dataset, tmp_path):
    """`scontrol requeue` stops a job after its first epoch; the requeued run restores the last checkpoint,
    and its history equals that of the same XP run without interruption (`dora run`, one thread each)."""
    # Long enough that the job cannot finish the remaining epochs during the 10 s KillWait after the requeue
    # (submitit ignores the SIGTERM that precedes the SIGKILL), so that the second run has work to resume.
    epochs = 5
    argv = ["solver=compression/debug", f"optim.epochs={epochs}", "optim.updates_per_epoch=40", "num_threads=1"]
    argv += dataset_overrides(tiny_dataset)
    (sig, job), = _scheduled(_dora(["launch", "--no_tail", *argv], dora_env)).items()
    folder = Path(dora_env["AUDIOGEN_LAB_DORA_DIR"])
    history = folder / "xps" / sig / "history.json"
    deadline = time.monotonic() + 300
    while not (history.exists() and len(json.loads(history.read_text())) >= 1):
        assert time.monotonic() < deadline, "no epoch done within 300 s"
        time.sleep(0.3)
    assert len(json.loads(history.read_text())) < epochs, "the job ended before it could be requeued"
    slurm("scontrol", "requeue", job)
    # A requeued job waits (BeginTime) before it may start again; let it start as soon as it is pending.
    deadline = time.monotonic() + 120
    while dict(job_states(job)).get(job) != "PENDING":
        assert time.monotonic() < deadline, f"job {job} never went back to PENDING: {job_states(job)}"
        time.sleep(0.5)
    slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    assert wait_until_ended(job, timeout=400)[job] == "COMPLETED"
    runs = [state for _, state in job_states(job, duplicates=True)]
    assert runs == ["REQUEUED", "COMPLETED"], runs
    log = (folder / "xps" / sig / "solver.log.0").read_text()
    restored = re.findall(r"Restored checkpoint of epoch (\d+)", log)
    assert len(restored) == 1 and 1 <= int(restored[0]) < epochs, restored

    baseline = tmp_path / "uninterrupted"
    _dora(["run", *argv], {**dora_env, "AUDIOGEN_LAB_DORA_DIR": str(baseline)}, timeout=600)
    requeued, uninterrupted = _history(folder, sig), _history(baseline, sig)
    assert len(requeued) == len(uninterrupted) == epochs
    assert _without_durations(requeued) == _without_durations(uninterrupted)


def test_failing_xp_fails_alone(dora_env, tiny_dataset, tmp_path):
    """A grid XP with a bad override ends FAILED in `dora info` and `sacct` with the error in its log, while
    the other XP of the grid COMPLETES."""
    missing = tmp_path / "no_such_folder"
    code = (
        "import sys\n"
        "from dora.grid import RunGridArgs, run_grid\n"
        "from grids._explorers import CompressionExplorer\n"
        "from audiogen_lab.train import main\n"
        "@CompressionExplorer\n"
        "def explorer(launcher):\n"
        "    launcher.bind_(sys.argv[2:])\n"
        "    launcher({'optim.updates_per_epoch': 2})\n"
        "    launcher({'datasource.train': sys.argv[1], 'optim.updates_per_epoch': 2})\n"
        "run_grid(main, explorer, 'failing_xp', args=RunGridArgs(monitor=False))\n")
    argv = ["solver=compression/debug", "optim.epochs=1"] + dataset_overrides(tiny_dataset)
    proc = subprocess.run([sys.executable, "-c", code, str(missing), *argv], cwd=REPO, env=dora_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scheduled = _scheduled(proc.stdout + proc.stderr)
    assert len(scheduled) == 2, proc.stdout + proc.stderr
    states = wait_until_ended(*scheduled.values(), timeout=400)
    folder = Path(dora_env["AUDIOGEN_LAB_DORA_DIR"]) / "xps"
    bad = next(sig for sig in scheduled if str(missing) in (folder / sig / ".argv.json").read_text())
    good = next(sig for sig in scheduled if sig != bad)
    assert states[scheduled[good]] == "COMPLETED" and _sheep(good, dora_env)[0] == "COMPLETED"
    assert states[scheduled[bad]] == "FAILED" and _sheep(bad, dora_env)[0] == "FAILED"
    info = _dora(["info", "-f", bad, "--log"], dora_env)
    assert str(missing) in info, info[-3000:]
