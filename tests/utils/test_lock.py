"""XPLock: one live process per XP folder; stale locks from dead processes or silent hosts are taken over."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from audiogen_lab.utils.lock import FORCE_ENV, XPLock, XPLockedError, pid_alive


def _write_lock(folder, **record):
    now = time.time()
    full = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now, "token": "other"}
    full.update(record)
    path = folder / "run.lock"
    path.write_text(json.dumps(full))
    return path


@pytest.fixture
def sleeper():
    """A live process of this host that is not the test itself."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_lock_file_holds_owner_and_is_removed_on_exit(tmp_path):
    with XPLock(tmp_path, heartbeat_every=0) as lock:
        record = json.loads(lock.path.read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        assert record["started"] <= record["heartbeat"] <= time.time()
    assert not lock.path.exists()


def test_lock_is_released_when_the_run_raises(tmp_path):
    lock = XPLock(tmp_path, heartbeat_every=0.01)
    with pytest.raises(ZeroDivisionError):
        with lock:
            raise ZeroDivisionError("boom")
    assert not lock.path.exists()
    assert lock._thread is None
    with XPLock(tmp_path, heartbeat_every=0):  # free again
        pass


def test_second_lock_is_refused_naming_the_holder(tmp_path, sleeper, monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)
    path = _write_lock(tmp_path, pid=sleeper.pid)
    with pytest.raises(XPLockedError) as info:
        XPLock(tmp_path, description="XP abc").acquire()
    message = str(info.value)
    assert "XP abc is already running" in message
    assert f"pid={sleeper.pid}" in message and f"host={socket.gethostname()}" in message
    assert FORCE_ENV in message and str(path) in message and "\n" not in message
    assert json.loads(path.read_text())["pid"] == sleeper.pid  # untouched


def test_same_process_cannot_hold_it_twice(tmp_path):
    with XPLock(tmp_path, heartbeat_every=0):
        with pytest.raises(XPLockedError, match=f"pid={os.getpid()}"):
            XPLock(tmp_path, heartbeat_every=0).acquire()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = _dead_pid()
    _write_lock(tmp_path, pid=dead)
    with caplog.at_level(logging.WARNING):
        with XPLock(tmp_path, heartbeat_every=0) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"pid {dead} is no longer running" in caplog.text
    assert lock.took_over is not None and not lock.path.exists()
    assert not list(tmp_path.glob("run.lock*"))


def test_reused_pid_is_detected_by_its_start_time(tmp_path, sleeper):
    _write_lock(tmp_path, pid=sleeper.pid, proc_start=1)  # the sleeper did not start at tick 1
    with XPLock(tmp_path, heartbeat_every=0) as lock:
        assert "now another process" in lock.took_over


def test_other_host_lock_is_stale_only_after_the_timeout(tmp_path):
    _write_lock(tmp_path, host="gpu-node-7", pid=1234, heartbeat=time.time() - 30)
    with pytest.raises(XPLockedError, match="host=gpu-node-7 pid=1234"):
        XPLock(tmp_path, timeout=60).acquire()
    _write_lock(tmp_path, host="gpu-node-7", pid=1234, heartbeat=time.time() - 90)
    with XPLock(tmp_path, timeout=60, heartbeat_every=0) as lock:
        assert "gpu-node-7" in lock.took_over and "s old (timeout 60 s)" in lock.took_over


def test_requeued_slurm_job_takes_over_its_earlier_run(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    _write_lock(tmp_path, host="gpu-node-7", pid=1234, slurm_job="4242")
    with XPLock(tmp_path, heartbeat_every=0) as lock:
        assert "earlier run of SLURM job 4242" in lock.took_over
        assert json.loads(lock.path.read_text())["slurm_job"] == "4242"
    _write_lock(tmp_path, host="gpu-node-7", pid=1234, slurm_job="4243")  # another job: still running
    with pytest.raises(XPLockedError):
        XPLock(tmp_path).acquire()


def test_force_takes_over_a_live_lock(tmp_path, sleeper, monkeypatch):
    _write_lock(tmp_path, pid=sleeper.pid)
    monkeypatch.setenv(FORCE_ENV, "1")
    with XPLock(tmp_path, heartbeat_every=0) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert FORCE_ENV in lock.took_over


def test_heartbeat_thread_refreshes_the_timestamp(tmp_path):
    with XPLock(tmp_path, heartbeat_every=0.05) as lock:
        first = json.loads(lock.path.read_text())["heartbeat"]
        deadline = time.time() + 5
        while json.loads(lock.path.read_text())["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.02)
        record = json.loads(lock.path.read_text())
        assert record["heartbeat"] > first and record["started"] == pytest.approx(lock.started)


def test_heartbeat_stops_when_the_lock_was_taken(tmp_path, caplog):
    lock = XPLock(tmp_path, heartbeat_every=0).acquire()
    _write_lock(tmp_path, token="someone-else")
    with caplog.at_level(logging.WARNING):
        assert lock.heartbeat() is False
    assert "Lost the lock" in caplog.text
    lock.release()
    assert json.loads((tmp_path / "run.lock").read_text())["token"] == "someone-else"  # not ours to delete


def test_unreadable_lock_is_held_until_old(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text("")
    with pytest.raises(XPLockedError, match="unknown process"):
        XPLock(tmp_path, timeout=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    with XPLock(tmp_path, timeout=60, heartbeat_every=0) as lock:
        assert "unreadable" in lock.took_over
