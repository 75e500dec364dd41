"""The trainer base, tested with a toy solver defined here (not through a model family)."""
from __future__ import annotations

import pickle

import pytest
import torch

from audiogen_lab.solvers.base import NonFiniteLossError
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint

from .toy_solver import ToySolver, make_toy


class Interrupted(Exception):
    pass


class InterruptedToy(ToySolver):
    """Dies right after committing epoch `stop_after`, as a preempted job would."""

    stop_after = 2

    def commit(self, save_checkpoint: bool = True) -> None:
        super().commit(save_checkpoint)
        if self.epoch - 1 == self.stop_after:
            raise Interrupted()


def _run(xp, klass=ToySolver, overrides=None):
    solver = make_toy(xp, overrides, klass)
    with xp.enter():
        solver.run()
    return solver


def test_resume_equals_uninterrupted_run(dora_dir, tmp_path):
    xp = main.get_xp(["solver=compression/debug", "seed=7"])
    full = _run(xp)
    first_folder = xp.folder
    main.dora.dir = tmp_path / "other"
    xp2 = main.get_xp(["solver=compression/debug", "seed=7"])
    assert xp2.folder != first_folder and not xp2.folder.exists()
    with pytest.raises(Interrupted):
        _run(xp2, InterruptedToy)
    assert len(xp2.link.history) == 2
    resumed = _run(xp2)
    assert len(resumed.history) == 4
    for a, b in zip(full.history, resumed.history):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-6)
        assert a["valid"]["loss"] == pytest.approx(b["valid"]["loss"], rel=1e-6)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[key])
    for key, value in full.ema.state.items():
        torch.testing.assert_close(value, resumed.ema.state[key])
    assert full.lr_scheduler.get_last_lr() == resumed.lr_scheduler.get_last_lr()


def test_training_learns_and_stages_run(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=1"])
    solver = _run(xp)
    history = solver.history
    assert history[-1]["valid"]["loss"] < 0.2 * history[0]["train"]["loss"]
    # evaluate every 2 epochs and on the last one
    assert [("evaluate" in h) for h in history] == [False, True, False, True]
    assert solver.best_state.best_metric == pytest.approx(min(h["valid"]["loss"] for h in history))


def test_best_state_direction_higher(dora_dir):
    class Higher(ToySolver):
        best_metric_direction = "higher"
    solver = _run(main.get_xp(["solver=compression/debug", "seed=2"]), Higher)
    history = solver.history
    assert solver.best_state.best_metric == pytest.approx(max(h["valid"]["loss"] for h in history))
    assert solver.best_state.best_metric == pytest.approx(history[0]["valid"]["loss"])


def test_keep_last_deletes_old_epoch_checkpoints(dora_dir):
    solver = _run(main.get_xp(["solver=compression/debug", "seed=3"]))
    kept = [epoch for epoch, _ in checkpoint.epoch_checkpoints(solver.folder)]
    assert kept == [3, 4]
    assert (solver.folder / "checkpoint.th").exists()
    assert not list(solver.folder.glob("*.tmp"))


def test_checkpoint_holds_yaml_config_and_loads_weights_only(dora_dir):
    solver = _run(main.get_xp(["solver=compression/debug", "seed=4"]))
    state = torch.load(solver.checkpoint_path, weights_only=True)
    assert isinstance(state["xp.cfg"], str) and "solver: toy" in state["xp.cfg"]


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.th"
    checkpoint.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = checkpoint.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.th"]


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['EVIL_MARK']).write_text('pwned')",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    mark = tmp_path / "mark"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    path = tmp_path / "evil.th"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    torch.save({"model": _Evil()}, tmp_path / "evil2.th")
    for candidate in (path, tmp_path / "evil2.th"):
        with pytest.raises(checkpoint.CheckpointLoadError, match=str(candidate.name)):
            checkpoint.load_checkpoint(candidate)
    assert not mark.exists()


def test_nonfinite_loss_is_skipped_then_stops(dora_dir, caplog):
    solver = make_toy(main.get_xp(["solver=compression/debug", "seed=5"]), {"optim": {"max_nonfinite_steps": 3}})
    solver.inject_nan_at = {3}
    before = None
    with solver.xp.enter():
        solver.run_stage("train", solver.train)
        assert solver.history == []  # not committed
        assert "Non-finite loss at epoch 1, update 3" in caplog.text
        assert all(torch.isfinite(p).all() for p in solver.model.parameters())
        solver._start_epoch()
        solver.inject_nan_at = set(range(0, 1000))
        with pytest.raises(NonFiniteLossError, match="3 consecutive updates"):
            solver.run_stage("train", solver.train)
    del before


def test_continue_from_sig_starts_from_best_weights(dora_dir):
    source = _run(main.get_xp(["solver=compression/debug", "seed=6"]))
    sig = source.xp.sig
    xp = main.get_xp(["solver=compression/debug", "seed=6", f"continue_from=//sig/{sig}"])
    solver = make_toy(xp, {"optim": {"epochs": 1}})
    with xp.enter():
        solver.restore()
    for key, value in source.best_state.states["model"].items():
        torch.testing.assert_close(solver.model.state_dict()[key], value)
    assert solver.history == []


def test_execute_only_does_not_change_history(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=8"])
    _run(xp)
    solver = make_toy(xp, {"execute_only": "evaluate"})
    with xp.enter():
        metrics = solver.run()
    assert "mse" in metrics
    assert len(solver.history) == 4


def test_excluded_keys_do_not_change_signature(dora_dir):
    base = main.get_xp(["solver=compression/debug", "seed=9"]).sig
    excluded = ["device=cpu", "dataset.num_workers=7", "logging.level=DEBUG", "checkpoint.keep_last=3"]
    assert main.get_xp(["solver=compression/debug", "seed=9"] + excluded).sig == base
    assert main.get_xp(["solver=compression/debug", "seed=10"]).sig != base


def test_tensorboard_logging_when_asked(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=11", "logging.log_tensorboard=true"])
    solver = _run(xp, overrides={"optim": {"epochs": 1}, "logging": {"log_tensorboard": True}})
    events = list(solver.folder.rglob("events.out.tfevents.*"))
    assert events, list(solver.folder.rglob("*"))


def test_autocast_bf16_trains(dora_dir):
    # forced where the CPU only emulates bfloat16: the toy model is small enough either way
    xp = main.get_xp(["solver=compression/debug", "seed=12", "autocast=true", "autocast_force=true"])
    solver = _run(xp, overrides={"optim": {"epochs": 2}, "autocast": True, "autocast_force": True})
    assert solver.autocast_enabled and solver.autocast_dtype == torch.bfloat16
    history = solver.history
    assert history[-1]["valid"]["loss"] < history[0]["train"]["loss"]
