"""scripts/slurm_local.sh: a single-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) on loopback."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from .cluster import CLUSTER_DIR, GPUS, PORT, REPO, env, script, slurm, wait_until_ended

DAEMONS = ["munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]


def _pid_files() -> tp.Dict[str, Path]:
    run = CLUSTER_DIR / "run"
    return {"munged": run / "munge" / "munged.pid", "mariadbd": run / "mysql" / "mariadbd.pid",
            "slurmdbd": run / "slurmdbd.pid", "slurmctld": run / "slurmctld.pid", "slurmd": run / "slurmd.pid"}


def _alive(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def test_local_slurm_team_fits_the_base_config():
    """Every `slurm` key of the local_slurm team exists in config/config.yaml, and its resources fit a CPU node."""
    base = OmegaConf.load(REPO / "config" / "config.yaml").slurm
    team = OmegaConf.load(REPO / "config" / "teams" / "local_slurm.yaml").local_slurm
    assert set(team.slurm) <= set(base), f"unknown slurm keys {set(team.slurm) - set(base)}"
    assert team.slurm.gpus == 0 and team.slurm.mem_per_gpu < base.mem_per_gpu
    assert team.partitions["global"] == "local"


def test_local_slurm_team_sets_the_launch_defaults():
    """With AUDIOGEN_LAB_TEAM=local_slurm, the team's resources and partition replace Dora's SLURM defaults."""
    code = "from audiogen_lab import train; print(dict(train.main._base_cfg.slurm), train.main.dora.use_rendezvous)"
    env = {**os.environ, "AUDIOGEN_LAB_TEAM": "local_slurm"}
    env.pop("AUDIOGEN_LAB_USE_RENDEZVOUS", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    slurm, rendezvous = proc.stdout.strip().rsplit(" ", 1)
    slurm = ast.literal_eval(slurm)
    assert (slurm["gpus"], slurm["mem_per_gpu"], slurm["cpus_per_gpu"], slurm["partition"]) == (0, 2, 1, "local")
    assert rendezvous == "True"


@pytest.mark.slow
def test_node_is_idle(cluster):
    states = slurm("sinfo", "-h", "-N", "-o", "%N %T %P %G").split()
    assert states[1:] == ["idle", "local*", f"gpu:{GPUS}"], f"sinfo: {states}"
    status = script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name in DAEMONS:
        assert f"{name}: running" in status.stdout


@pytest.mark.slow
def test_job_completes_and_is_accounted(cluster, tmp_path):
    out = tmp_path / "job.out"
    job = slurm("sbatch", "--parsable", f"--output={out}", f"--chdir={tmp_path}",
                 "--wrap", "echo hello from $SLURM_JOB_ID").strip().split(";")[0]
    state = wait_until_ended(job, timeout=60)[job]
    assert state == "COMPLETED", f"job {job} ended as {state!r}"
    assert out.read_text().strip() == f"hello from {job}"
    exit_code = slurm("sacct", "-n", "-P", "-X", "-j", job, "-o", "ExitCode").strip()
    assert exit_code == "0:0"


@pytest.mark.slow
def test_communication_is_loopback_only(cluster):
    config = slurm("scontrol", "show", "config")
    params = [line.split("=", 1)[1].strip() for line in config.splitlines()
              if line.startswith("CommunicationParameters")]
    assert params and set(params[0].split(",")) >= {"NoInAddrAny", "NoCtldInAddrAny"}, params
    addresses = [line.split("=", 1)[1] for line in (cluster / "etc" / "slurmdbd.conf").read_text().splitlines()
                 if line.startswith(("DbdAddr", "StorageHost", "CommunicationParameters"))]
    assert addresses == ["127.0.0.1", "NoInAddrAny", "127.0.0.1"]
    listening = _listening(range(PORT, PORT + 4))
    assert sorted(port for _, port in listening) == list(range(PORT, PORT + 4)), listening
    assert all(address == "127.0.0.1" for address, _ in listening), listening


def _listening(ports: tp.Iterable[int]) -> tp.List[tp.Tuple[str, int]]:
    """(address, port) of the TCP sockets listening on `ports`, from /proc/net/tcp and tcp6."""
    wanted, found = set(ports), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state != "0A" or int(port, 16) not in wanted:  # 0A: LISTEN
                continue
            if len(address) == 8:  # IPv4, little-endian hex
                address = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            found.append((address, int(port, 16)))
    return found


@pytest.mark.slow
def test_stop_ends_every_daemon_and_job(cluster, tmp_path):
    """`stop` ends the running jobs, then every daemon named by its pid files."""
    pids = {name: int(path.read_text().strip()) for name, path in _pid_files().items() if path.exists()}
    assert set(pids) == set(DAEMONS), f"pid files missing for {set(DAEMONS) - set(pids)}"
    assert all(_alive(pid, name) for name, pid in pids.items())
    slurm("sbatch", f"--output={tmp_path / 'sleep.out'}", f"--chdir={tmp_path}", "--wrap", "sleep 300")
    job_pids: tp.List[int] = []
    deadline = time.monotonic() + 30
    while not job_pids and time.monotonic() < deadline:
        listing = subprocess.run(["scontrol", "listpids"], env=env(), capture_output=True, text=True, timeout=30)
        job_pids = [int(line.split()[0]) for line in listing.stdout.splitlines()[1:]  # rc 1 while no step runs
                    if line.split() and line.split()[0].isdigit()]
        time.sleep(0.3)
    assert job_pids, "the sleep job never started"
    proc = script("stop", timeout=120)
    assert proc.returncode == 0, proc.stderr
    alive = [name for name, pid in pids.items() if _alive(pid, name)]
    assert not alive, f"still running after stop: {alive}"
    assert not [pid for pid in job_pids if os.path.exists(f"/proc/{pid}")], "job processes outlived stop"
    assert script("status").returncode == 3
