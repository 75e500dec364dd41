"""The command line: user errors are one line on stderr with a non-zero exit, and one XP runs at a time.

The ``dora run`` cases start together in subprocesses (each one fails before training), the lock
wiring of the entry point is tested in-process with the Hydra task replaced.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiogen_lab.config_check import ConfigError
from audiogen_lab.train import lock_name, main
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.lock import XPLockedError

ROOT = Path(__file__).resolve().parents[1]
DEBUG = "solver=compression/debug"
HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def _lock_record(pid: int) -> str:
    now = time.time()
    return json.dumps({"host": socket.gethostname(), "pid": pid, "started": now, "heartbeat": now})


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs every ``dora run`` case at once; returns {case: (completed process, XP folder)}."""
    dora_dir = tmp_path_factory.mktemp("dora_cli")
    cases: tp.Dict[str, tp.Tuple[tp.List[str], tp.Dict[str, str]]] = {
        "unknown_solver": (["solver=compression/debugg"], {}),
        "bad_lr": ([DEBUG, "optim.lr=abc"], {}),
        "full_error": ([DEBUG, "optim.lr=abc"], {"HYDRA_FULL_ERROR": "1"}),
        "locked": ([DEBUG, "seed=11"], {}),
    }
    if not torch.cuda.is_available():
        cases["cuda"] = ([DEBUG, "seed=13", "device=cuda"], {})
    folders = {name: dora_dir / "xps" / main.get_xp(argv).sig for name, (argv, _) in cases.items()
               if name != "unknown_solver"}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    folders["locked"].mkdir(parents=True)
    (folders["locked"] / "run.lock").write_text(_lock_record(sleeper.pid))
    if "cuda" in cases:  # the XP exists, run earlier on CPU
        folders["cuda"].mkdir(parents=True)
        (folders["cuda"] / ".argv.json").write_text(json.dumps([DEBUG, "seed=13", "device=cpu"]))
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir)}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("AUDIOGEN_LAB_FORCE_RUN", None)
    procs = {name: subprocess.Popen([sys.executable, "-m", "dora", "run", *argv], cwd=ROOT, env={**env, **extra},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, extra) in cases.items()}
    try:
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), folders.get(name))
    finally:
        sleeper.kill()
        sleeper.wait()
    results["sleeper_pid"] = sleeper.pid  # type: ignore[assignment]
    return results


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed run, after checking that stderr holds nothing else but Hydra's hint."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1] == HINT and len(lines) == 2, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow  # shares the fixture that starts five `dora run` processes
def test_unknown_solver_lists_nested_solvers(cli):
    line = _one_line_error(cli["unknown_solver"][0])
    assert line.startswith("Error: Unknown solver=compression/debugg")
    assert "Did you mean compression/debug?" in line
    assert "compression/debug, compression/default, compression/encodec_24khz" in line


@pytest.mark.slow  # shares the fixture that starts five `dora run` processes
def test_bad_value_fails_before_the_xp_folder_exists(cli):
    result, folder = cli["bad_lr"]
    assert _one_line_error(result) == "Error: Invalid config: optim.lr='abc'; expected a positive number, e.g. 3e-4."
    assert not folder.exists()


@pytest.mark.parametrize("argv, message", [
    ([DEBUG, "optim.epochs=-1"], "Invalid config: optim.epochs=-1; expected a positive integer."),
    ([DEBUG, "optim.ema.decai=0.9"], "Unknown config key 'optim.ema.decai' in 'optim.ema.decai=0.9'; "
                                      "did you mean optim.ema.decay?"),
    ([DEBUG, "optim.lr=["], "Invalid override 'optim.lr=[': no viable alternative at input '['"),
    ([DEBUG, "+optim.lr=1"], "Invalid command line: Could not append to config. An item is already at 'optim.lr'."),
    ([DEBUG, "+optim.lrr=1"], "Unknown config key 'optim.lrr' in '+optim.lrr=1': no config defines it and no code "
                              "reads it, but it would change the XP signature; did you mean optim.lr?"),
])
def test_command_line_errors_in_process(dora_dir, argv, message, monkeypatch, capsys):
    """What ``dora run`` prints for errors raised before the run, through the command line's excepthook."""
    from audiogen_lab import train
    monkeypatch.setattr(sys, "argv", ["dora", *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(ConfigError) as info:
        main()
    assert str(info.value) == message
    train._print_user_errors(info.type, info.value, info.tb)
    assert capsys.readouterr().err == f"Error: {message}\n{HINT}\n"


@pytest.mark.slow  # shares the fixture that starts five `dora run` processes
def test_full_error_shows_the_traceback(cli):
    result, _ = cli["full_error"]
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "config_check.py" in result.stderr
    assert "ConfigError: Invalid config: optim.lr='abc'" in result.stderr


@pytest.mark.slow  # shares the fixture that starts five `dora run` processes
def test_second_run_of_a_running_xp_is_refused(cli):
    result, folder = cli["locked"]
    line = _one_line_error(result)
    pid = cli["sleeper_pid"]
    assert line.startswith(f"Error: XP {folder.name} is already running: host={socket.gethostname()} pid={pid}")
    assert "AUDIOGEN_LAB_FORCE_RUN=1" in line and str(folder / "run.lock") in line
    assert sorted(p.name for p in folder.iterdir()) == ["run.lock"]  # no .argv.json, .hydra or log written


def test_non_checkpoint_continue_from_fails_at_once(dora_dir, tmp_path, monkeypatch):
    wav = tmp_path / "not_a_checkpoint.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.float32), 16000)
    monkeypatch.setattr(sys, "argv", ["dora", DEBUG, f"continue_from={wav}"])
    with pytest.raises(ConfigError) as info:
        main()
    assert str(info.value) == (f"Invalid config: continue_from={wav}: {wav} is not an audiogen_lab checkpoint "
                               "(it is a WAV/RIFF file).")
    monkeypatch.setattr(sys, "argv", ["dora", DEBUG, f"continue_from={tmp_path / 'nope.th'}"])
    with pytest.raises(ConfigError, match="continue_from=.*nope.th: Checkpoint .*nope.th does not exist."):
        main()
    assert not main.get_xp([DEBUG]).folder.exists()


def test_user_error_inside_the_run_is_one_log_line(dora_dir, monkeypatch, capsys):
    """Errors raised once the run started (e.g. by the solver) are logged, to solver.log too, and exit 1."""
    from audiogen_lab import train

    def refuse(cfg):
        raise checkpoint.CheckpointLoadError("x.wav is not an audiogen_lab checkpoint (it is a WAV/RIFF file).")

    monkeypatch.setattr(train, "get_solver", refuse)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    xp = main.get_xp([DEBUG, "seed=27"])
    xp.folder.mkdir(parents=True)
    task = main.main  # the function under Hydra
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the run installs its own log handlers
    monkeypatch.setattr(root, "level", root.level)
    with xp.enter():
        with pytest.raises(SystemExit) as info:
            task(xp.cfg)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert [line for line in err.splitlines() if "ERROR" in line] == [line for line in err.splitlines()
                                                                         if "x.wav is not an audiogen_lab" in line]
        assert "x.wav is not an audiogen_lab checkpoint (it is a WAV/RIFF file)." in err and "Traceback" not in err
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
        with pytest.raises(checkpoint.CheckpointLoadError):
            task(xp.cfg)
    assert "x.wav is not an audiogen_lab checkpoint" in (xp.folder / "solver.log.0").read_text()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPU")
def test_cuda_without_gpu_keeps_the_xp_argv(cli):
    result, folder = cli["cuda"]
    line = _one_line_error(result)
    assert line.startswith("Error: Invalid config: device=cuda but this machine has no visible GPU")
    assert json.loads((folder / ".argv.json").read_text()) == [DEBUG, "seed=13", "device=cpu"]


# ---------------------------------------------------------------------------------------- lock wiring
class _Probe:
    """Stands in for the Hydra task: records the lock file while the run is inside."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: tp.List[tp.Optional[dict]] = []

    def __call__(self) -> str:
        import dora
        path = dora.get_xp().folder / lock_name(dora.get_xp().cfg) if lock_name(dora.get_xp().cfg) else None
        self.seen.append(json.loads(path.read_text()) if path is not None and path.exists() else None)
        if self.fail:
            raise RuntimeError("training crashed")
        return "done"


def _run_main(monkeypatch, argv, probe):
    monkeypatch.setattr(sys, "argv", ["dora", *argv])
    monkeypatch.setattr(main, "_main", probe)
    return main()


@pytest.fixture
def single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "AUDIOGEN_LAB_FORCE_RUN"):
        monkeypatch.delenv(name, raising=False)


def test_run_holds_the_lock_and_releases_it(dora_dir, monkeypatch, single_process):
    argv = [DEBUG, "seed=21"]
    probe = _Probe()
    assert _run_main(monkeypatch, argv, probe) == "done"
    assert probe.seen[0]["pid"] == os.getpid() and probe.seen[0]["host"] == socket.gethostname()
    folder = main.get_xp(argv).folder
    assert not (folder / "run.lock").exists() and (folder / ".argv.json").exists()
    with pytest.raises(RuntimeError, match="training crashed"):
        _run_main(monkeypatch, argv, _Probe(fail=True))
    assert not (folder / "run.lock").exists()


def test_stale_lock_is_taken_over_with_a_log_line(dora_dir, monkeypatch, caplog, single_process):
    argv = [DEBUG, "seed=22"]
    folder = main.get_xp(argv).folder
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "run.lock").write_text(_lock_record(dead.pid))
    probe = _Probe()
    with caplog.at_level(logging.WARNING):
        _run_main(monkeypatch, argv, probe)
    assert probe.seen[0]["pid"] == os.getpid()
    assert f"Taking over the lock of XP {folder.name}" in caplog.text
    assert f"pid {dead.pid} is no longer running" in caplog.text
    assert not (folder / "run.lock").exists()


def test_refused_run_writes_nothing(dora_dir, monkeypatch, single_process):
    argv = [DEBUG, "seed=23"]
    folder = main.get_xp(argv).folder
    folder.mkdir(parents=True)
    (folder / "run.lock").write_text(_lock_record(os.getppid()))
    probe = _Probe()
    with pytest.raises(XPLockedError, match=f"pid={os.getppid()}"):
        _run_main(monkeypatch, argv, probe)
    assert probe.seen == [] and sorted(p.name for p in folder.iterdir()) == ["run.lock"]


def test_only_rank_zero_locks_and_show_does_not(dora_dir, monkeypatch, single_process):
    probe = _Probe()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    _run_main(monkeypatch, [DEBUG, "seed=24"], probe)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    _run_main(monkeypatch, [DEBUG, "seed=24", "show=true"], probe)
    assert probe.seen == [None, None]


def test_execute_only_takes_its_own_lock(dora_dir, monkeypatch, single_process):
    argv = [DEBUG, "seed=25"]
    folder = main.get_xp(argv).folder
    folder.mkdir(parents=True)
    (folder / "run.lock").write_text(_lock_record(os.getppid()))  # the XP is training
    probe = _Probe()
    _run_main(monkeypatch, [*argv, "execute_only=evaluate"], probe)
    assert probe.seen[0]["pid"] == os.getpid()
    assert not (folder / "execute_only_evaluate.lock").exists() and (folder / "run.lock").exists()


def test_device_is_checked_only_when_running(dora_dir, monkeypatch, single_process):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without GPU")
    with pytest.raises(ConfigError, match="device=cuda"):
        _run_main(monkeypatch, [DEBUG, "seed=26", "device=cuda"], _Probe())
    assert not main.get_xp([DEBUG, "seed=26"]).folder.exists()


# ---------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name, content, reason", [
    ("clip.wav", None, "it is a WAV/RIFF file"),
    ("history.json", b'[{"train": {"loss": 1.0}}]', "it is a JSON file"),
    ("notes.txt", b"best epoch: 3\n", "it is a text file starting with 'best epoch: 3'"),
    ("empty.th", b"", "the file is empty"),
])
def test_non_checkpoint_files_are_named(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is None:
        sf.write(str(path), np.zeros(800, dtype=np.float32), 16000)
    else:
        path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointLoadError) as info:
        checkpoint.load_checkpoint(path)
    assert str(info.value) == f"{path} is not an audiogen_lab checkpoint ({reason})."


def test_real_checkpoints_still_load(tmp_path):
    path = checkpoint.save_checkpoint({"w": torch.arange(3)}, tmp_path / "checkpoint.th")
    assert torch.equal(checkpoint.load_checkpoint(path)["w"], torch.arange(3))
    legacy = tmp_path / "legacy.th"
    torch.save({"w": torch.arange(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(checkpoint.load_checkpoint(legacy)["w"], torch.arange(3))
