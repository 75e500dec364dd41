"""One running process per XP: a lock file in the XP folder, safe across machines sharing the folder.

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds JSON
``{host, pid, started, heartbeat, proc_start, slurm_job, token}`` (times in seconds since the epoch). While it is
held, a daemon thread rewrites ``heartbeat`` every ``heartbeat_every`` seconds, so the solver has
nothing to call; :meth:`XPLock.heartbeat` is public for code that wants to refresh it explicitly.

A second process finding the lock is refused with :class:`XPLockedError` naming the holder, unless
the lock is stale, in which case it is taken over with a warning:

- same host: the pid is no longer alive (or is now another process: its start time differs);
- other host: the heartbeat is older than ``timeout`` seconds (``$AUDIOGEN_LAB_LOCK_TIMEOUT``,
  default 600). Clocks of machines sharing a folder must agree to well within that;
- the holder was an earlier run of the same SLURM job (a requeued job keeps its id): that run is over.

To run anyway (e.g. the other machine is gone but its heartbeat is recent), set
``AUDIOGEN_LAB_FORCE_RUN=1`` or delete the lock file.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import typing as tp
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

FORCE_ENV = "AUDIOGEN_LAB_FORCE_RUN"
TIMEOUT_ENV = "AUDIOGEN_LAB_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
DEFAULT_HEARTBEAT_EVERY = 30.0


class XPLockedError(RuntimeError):
    """Another live process holds the XP's lock; the message is one line naming it."""


def _proc_start(pid: int) -> tp.Optional[int]:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid apart; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def slurm_job() -> tp.Optional[str]:
    """The SLURM job (``ARRAYID_TASK`` for array tasks) this process belongs to, or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _fmt_time(stamp: tp.Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(stamp)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"


class XPLock:
    """Context manager holding ``folder/name`` while an XP runs.

    Args:
        folder: the XP folder (created if needed).
        name: lock file name; different names are independent locks.
        timeout: seconds without heartbeat after which a lock from another host is stale
            (default ``$AUDIOGEN_LAB_LOCK_TIMEOUT`` or 600).
        heartbeat_every: seconds between heartbeats of the background thread (0: no thread).
        force: take the lock even if held (default: ``$AUDIOGEN_LAB_FORCE_RUN`` is 1/true/yes).
        description: what is locked, for messages (e.g. ``XP 97d170e1``).
    """

    def __init__(self, folder: tp.Union[str, Path], name: str = "run.lock", timeout: tp.Optional[float] = None,
                 heartbeat_every: float = DEFAULT_HEARTBEAT_EVERY, force: tp.Optional[bool] = None,
                 description: tp.Optional[str] = None) -> None:
        self.path = Path(folder) / name
        if timeout is None:
            timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
        self.timeout = float(timeout)
        self.heartbeat_every = float(heartbeat_every)
        if force is None:
            force = os.environ.get(FORCE_ENV, "").lower() in ("1", "true", "yes")
        self.force = force
        self.description = description or str(Path(folder))
        self.host = socket.gethostname()
        self.token: tp.Optional[str] = None
        self.started: tp.Optional[float] = None
        #: why a previous lock was taken over (None if the lock was free)
        self.took_over: tp.Optional[str] = None
        self._stop = threading.Event()
        self._thread: tp.Optional[threading.Thread] = None

    # ------------------------------------------------------------------ reading
    def read(self) -> tp.Optional[dict]:
        """The holder's record, ``{}`` if the file is unreadable or half-written, None if there is no lock."""
        for attempt in range(3):
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return None
            try:
                record = json.loads(text)
                if isinstance(record, dict):
                    return record
            except json.JSONDecodeError:
                pass
            time.sleep(0.05 * (attempt + 1))  # the holder may be writing it right now
        return {}

    def stale_reason(self, record: dict) -> tp.Optional[str]:
        """Why the lock described by `record` is stale, or None if its holder may still be running."""
        now = time.time()
        if not record:
            try:
                age = now - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it was removed"
            return f"it is unreadable and {age:.0f} s old" if age > self.timeout else None
        pid = int(record.get("pid", -1))
        job = slurm_job()
        if job is not None and record.get("slurm_job") == job and (record.get("host"), pid) != (self.host, os.getpid()):
            return f"it was written by an earlier run of SLURM job {job} (requeued)"
        if record.get("host") == self.host:
            if not pid_alive(pid):
                return f"pid {pid} is no longer running on {self.host}"
            start = record.get("proc_start")
            if start is not None and _proc_start(pid) not in (None, start):
                return f"pid {pid} on {self.host} is now another process"
            return None
        age = now - float(record.get("heartbeat", 0))
        if age > self.timeout:
            return f"its last heartbeat from {record.get('host')} is {age:.0f} s old (timeout {self.timeout:.0f} s)"
        return None

    def holder(self, record: dict) -> str:
        """``host=... pid=... started ...`` for messages."""
        if not record:
            return "an unknown process (unreadable lock file)"
        beat = time.time() - float(record.get("heartbeat", 0))
        return (f"host={record.get('host')} pid={record.get('pid')} started {_fmt_time(record.get('started'))} "
                f"(last heartbeat {beat:.0f} s ago)")

    # ------------------------------------------------------------------ acquire / release
    def _record(self, heartbeat: float) -> dict:
        return {"host": self.host, "pid": os.getpid(), "started": self.started, "heartbeat": heartbeat,
                "proc_start": _proc_start(os.getpid()), "slurm_job": slurm_job(), "token": self.token}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._record(self.started or time.time()), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _take_over(self, record: tp.Optional[dict]) -> None:
        """Move a stale lock aside, only if it is still the one judged stale."""
        aside = self.path.with_name(f"{self.path.name}.stale.{self.host}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            moved = {}
        if record and moved.get("token") != record.get("token"):
            # Someone else replaced the stale lock meanwhile: put theirs back (never over a new one).
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def acquire(self) -> "XPLock":
        """Take the lock, taking over a stale one; raise :class:`XPLockedError` if a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.started = time.time()
        for _ in range(5):
            if self._create():
                break
            record = self.read()
            if record is None:
                continue  # released meanwhile
            reason = self.stale_reason(record)
            if reason is None and not self.force:
                raise XPLockedError(
                    f"{self.description} is already running: {self.holder(record)}; lock file {self.path}. "
                    f"Wait for it to finish, or if it is not running any more, rerun with {FORCE_ENV}=1 "
                    f"or delete {self.path}.")
            reason = reason or f"{FORCE_ENV} is set"
            logger.warning("Taking over the lock of %s held by %s: %s.", self.description, self.holder(record),
                           reason)
            self.took_over = reason
            self._take_over(record)
        else:
            raise XPLockedError(f"Could not take {self.path}: other processes keep taking it.")
        if self.heartbeat_every > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat:{self.path}", daemon=True)
            self._thread.start()
        return self

    def owned(self) -> bool:
        """Whether the lock file is still ours."""
        record = self.read()
        return bool(record) and self.token is not None and record.get("token") == self.token

    def heartbeat(self) -> bool:
        """Refresh the heartbeat time; False (with a warning) if the lock is no longer ours."""
        if self.token is None:
            return False
        if not self.owned():
            logger.warning("Lost the lock %s: another process took it over or it was deleted.", self.path)
            return False
        tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
        tmp.write_text(json.dumps(self._record(time.time())))
        os.replace(tmp, self.path)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            try:
                if not self.heartbeat():
                    return
            except OSError as err:  # a flaky shared filesystem must not kill the run
                logger.warning("Could not refresh the heartbeat of %s: %s", self.path, err)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.token is not None and self.owned():
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> "XPLock":
        return self.acquire()

    def __exit__(self, *exc: tp.Any) -> None:
        self.release()
