"""The trainer base keeps runs clean: frozen models never move, skipped updates change nothing, the
non-finite count survives restarts, checkpoints are never written with NaNs, the history never runs
ahead of the checkpoint, corrupt checkpoints fall back to intact ones, exports hold several models."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from audiogen_lab import solvers
from audiogen_lab.solvers import roles
from audiogen_lab.solvers.base import NonFiniteLossError, NonFiniteStateError, StandardSolver
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.export import export_checkpoint

from .toy_solver import ToySolver, make_toy


class HeadToy(ToySolver):
    """A toy with a second trainable, exported model (like an LM with a separate output head)."""

    @classmethod
    def build_model_from_config(cls, cfg, name):
        if name == "head":
            return nn.Linear(1, 1)
        return super().build_model_from_config(cfg, name)

    def build_model(self) -> None:
        super().build_model()
        self.register_model("head", self.build_model_from_config(self.cfg, "head"))


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(solvers.SOLVERS, "toy", "tests.solvers.toy_solver:ToySolver")
    monkeypatch.setitem(solvers.SOLVERS, "toy_head", "tests.solvers.test_base_state:HeadToy")


def _run(xp, klass=ToySolver, overrides=None):
    solver = make_toy(xp, overrides, klass)
    with xp.enter():
        solver.run()
    return solver


def _full_state(solver) -> dict:
    """Every parameter, buffer, optimizer and adaptive state of the solver, cloned."""
    state = {}
    for name, entry in solver.models.items():
        for key, value in entry.module.state_dict().items():
            state[f"{name}.{key}"] = value.detach().clone()
    for name, group in solver.optim_groups.items():
        state[f"optim.{name}"] = torch.cat([v.flatten().float() for s in group.optimizer.state.values()
                                            for v in s.values() if isinstance(v, torch.Tensor)] or [torch.zeros(0)])
        state[f"optim.{name}.lr"] = torch.tensor(group.lr)
    for name, source in solver._adaptive.items():
        state[f"adaptive.{name}"] = repr(source.state_dict())
    return state


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_frozen_model_never_changes_under_a_training_parent():
    from audiogen_lab.models.builders import get_compression_model
    from omegaconf import OmegaConf
    cfg = OmegaConf.load("config/model/encodec/debug.yaml")
    cfg = OmegaConf.merge(cfg, {"sample_rate": 16000, "channels": 1})
    codec = get_compression_model(cfg)
    codec.train()
    codec(torch.randn(4, 1, 1600))  # k-means init of the codebooks, like a trained codec
    parent = nn.ModuleDict({"codec": roles.freeze(codec), "lm": nn.Linear(4, 4)})
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    parent.train()
    assert parent["lm"].training and not codec.training and not any(m.training for m in codec.modules())
    for _ in range(3):
        codec(torch.randn(4, 1, 1600))
    after = codec.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [] and roles.is_frozen(codec)
    assert not any(p.requires_grad for p in codec.parameters())


def test_roles_modes_and_show(dora_dir, caplog):
    solver = make_toy(main.get_xp(["solver=compression/debug", "seed=20"]), klass=HeadToy)
    assert {n: e.role for n, e in solver.models.items()} == {"model": "trainable", "critic": "adversary",
                                                            "head": "trainable"}
    assert set(solver.best_state.sources) == {"model", "head"} and set(solver._ema_sources) == {"model", "head"}
    with caplog.at_level(logging.INFO):
        solver.show()
    assert "Model critic [adversary]" in caplog.text
    assert "Model head [trainable, ema, best_state, export]" in caplog.text


def test_skipped_update_changes_nothing_and_is_counted(dora_dir):
    solver = make_toy(main.get_xp(["solver=compression/debug", "seed=21"]), {"optim": {"epochs": 1}})
    seen = {}
    original = solver.run_step

    def probe(idx, batch, metrics):
        if idx in (4, 5):
            seen[f"before{idx}"] = _full_state(solver)
        out = original(idx, batch, metrics)
        if idx in (4, 5):
            seen[f"after{idx}"] = _full_state(solver)
        return out
    solver.run_step = probe
    solver.inject_nan_at = {4, 5}
    with solver.xp.enter():
        solver.run()
    _assert_same(seen["before4"], seen["after4"])
    _assert_same(seen["before5"], seen["after5"])
    train = solver.history[-1]["train"]
    assert train["skipped_updates"] == 2 and train["skipped_fraction"] == pytest.approx(0.2)
    assert solver._train_step == 8


def test_nonfinite_count_survives_a_restart(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=22"])
    solver = make_toy(xp, {"optim": {"epochs": 1, "max_nonfinite_steps": 3}})
    solver.inject_nan_at = {8, 9}  # the last two updates of epoch 1
    with xp.enter():
        solver.run()
    assert solver._nonfinite_streak == 2
    again = make_toy(xp, {"optim": {"epochs": 2, "max_nonfinite_steps": 3}})
    again.inject_nan_at = {0}
    with xp.enter(), pytest.raises(NonFiniteLossError, match="3 consecutive updates"):
        again.run()


def test_best_state_never_taken_from_nonfinite_metrics(dora_dir):
    solver = make_toy(main.get_xp(["solver=compression/debug", "seed=23"]))
    solver._pending_metrics = {"valid": {"loss": 0.1, "l2": float("inf")}}
    solver.update_best_state_from_stage("valid")
    assert solver.best_state.best_metric is None
    solver._pending_metrics = {"valid": {"loss": 0.1, "l2": 0.2}}
    solver.update_best_state_from_stage("valid")
    assert solver.best_state.best_metric == pytest.approx(0.1)


def test_commit_refuses_nonfinite_weights_and_keeps_previous(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=24"])
    solver = _run(xp, overrides={"optim": {"epochs": 1}})
    previous = checkpoint.load_checkpoint(solver.checkpoint_path)
    with torch.no_grad():
        solver.model[0].weight[0, 0] = float("nan")
    with xp.enter(), pytest.raises(NonFiniteStateError, match=r"model\.0\.weight"):
        solver.commit()
    kept = checkpoint.load_checkpoint(solver.checkpoint_path)
    torch.testing.assert_close(kept["model"], previous["model"])
    assert len(xp.link.history) == 1


def test_kill_during_checkpoint_write_leaves_history_behind(dora_dir, monkeypatch):
    xp = main.get_xp(["solver=compression/debug", "seed=25"])
    solver = _run(xp, overrides={"optim": {"epochs": 1}})
    real_save = checkpoint.save_checkpoint

    def killed(state, path):
        (path.parent / (path.name + ".abc123.tmp")).write_bytes(b"half written")
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(checkpoint, "save_checkpoint", killed)
    with xp.enter(), pytest.raises(KeyboardInterrupt):
        solver.run_epoch()
        solver.commit()
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    xp.link.load()
    assert len(xp.link.history) == 1  # the history never runs ahead of the checkpoint
    resumed = make_toy(xp, {"optim": {"epochs": 2}})
    with xp.enter():
        resumed.run()
    assert not list(xp.folder.glob("*.tmp")) and len(resumed.history) == 2


def test_corrupt_checkpoint_falls_back_to_intact_epoch_checkpoint(dora_dir, caplog):
    xp = main.get_xp(["solver=compression/debug", "seed=26"])
    solver = _run(xp, overrides={"optim": {"epochs": 3}})
    solver.checkpoint_path.write_bytes(b"\x00garbage")
    resumed = make_toy(xp, {"optim": {"epochs": 4}})
    with xp.enter(), caplog.at_level(logging.WARNING):
        assert resumed.restore()
    assert "Resuming from the intact checkpoint_3.th" in caplog.text and resumed.epoch == 4
    for path in xp.folder.glob("checkpoint_*.th"):
        path.write_bytes(b"broken too")
    solver.checkpoint_path.write_bytes(b"\x00garbage")
    again = make_toy(xp, {"optim": {"epochs": 4}})
    with xp.enter(), pytest.raises(checkpoint.CheckpointLoadError, match="move .* away"):
        again.restore()


class WideToy(ToySolver):
    """The toy after its config changed under the same signature: a wider hidden layer."""

    @classmethod
    def build_model_from_config(cls, cfg, name):
        return nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.1), nn.Linear(32, 1))


def test_checkpoint_of_a_changed_config_is_refused_with_the_remedy(dora_dir):
    xp = main.get_xp(["solver=compression/debug", "seed=32"])
    solver = _run(xp, overrides={"optim": {"epochs": 1}})
    before = solver.checkpoint_path.read_bytes()
    changed = make_toy(xp, {"optim": {"epochs": 2}}, WideToy)
    with xp.enter(), pytest.raises(checkpoint.CheckpointLoadError, match=r"does not fit the current config") as err:
        changed.restore()
    assert str(xp.folder) in str(err.value) and "dora run --clear" in str(err.value)
    assert "size mismatch" in str(err.value)  # the cause, from torch's message
    assert solver.checkpoint_path.read_bytes() == before  # nothing is lost


def test_export_of_two_models_reloads_by_name(dora_dir, toy_registered, tmp_path):
    xp = main.get_xp(["solver=compression/debug", "seed=27"])
    solver = _run(xp, HeadToy, {"solver": "toy_head", "optim": {"epochs": 1}})
    path = export_checkpoint(f"//sig/{xp.sig}", tmp_path / "toy.th")
    package = torch.load(path, weights_only=True)
    assert set(package["models"]) == {"model", "head"} and package["version"] == 2  # the critic is not exported
    head = StandardSolver.model_from_checkpoint(path, name="head")
    assert isinstance(head, nn.Linear) and not head.training
    torch.testing.assert_close(head.state_dict(), solver.best_state.states["head"])
    model = StandardSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    torch.testing.assert_close(model.state_dict(), solver.best_state.states["model"])
    with pytest.raises(KeyError, match="not 'critic'"):
        StandardSolver.model_from_checkpoint(path, name="critic")


def test_mismatched_continue_from_is_refused(dora_dir, toy_registered, tmp_path):
    xp = main.get_xp(["solver=compression/debug", "seed=28"])
    _run(xp, HeadToy, {"solver": "toy_head", "optim": {"epochs": 1}})
    package = torch.load(export_checkpoint(f"//sig/{xp.sig}", tmp_path / "toy.th"), weights_only=True)
    package["models"]["model"]["2.weight"] = torch.zeros(1, 32)  # another architecture
    torch.save(package, tmp_path / "other.th")
    target = main.get_xp(["solver=compression/debug", "seed=29", f"continue_from={tmp_path / 'other.th'}"])
    solver = make_toy(target, {"optim": {"epochs": 1}})
    with target.enter(), pytest.raises(ValueError, match=r"Shape mismatches: 2\.weight"):
        solver.restore()


def test_continue_from_restarts_the_ema_from_the_loaded_weights(dora_dir):
    source = _run(main.get_xp(["solver=compression/debug", "seed=30"]))
    xp = main.get_xp(["solver=compression/debug", "seed=31", f"continue_from=//sig/{source.xp.sig}"])
    solver = make_toy(xp, {"optim": {"epochs": 1}})
    with xp.enter():
        solver.restore()
    for key, value in source.best_state.states["model"].items():
        torch.testing.assert_close(solver.ema.state[f"model.{key}"], value)


def test_fp16_autocast_trains_through_the_base(dora_dir):
    """autocast_dtype=float16: the base's grad scaler scales every loss, unscales before clipping and
    updates once per update (the first update used to crash on an unscaled loss)."""
    xp = main.get_xp(["solver=compression/debug", "seed=32", "autocast=true", "autocast_dtype=float16"])
    solver = _run(xp, overrides={"optim": {"epochs": 2, "max_norm": 1.0}, "autocast": True,
                                 "autocast_dtype": "float16"})
    assert solver.scaler is not None and solver.optim_groups["generator"].scaler is solver.scaler
    assert solver.optim_groups["generator"].steps_taken > 0
    history = solver.history
    assert history[-1]["valid"]["loss"] < history[0]["train"]["loss"]
    assert "scaler" in checkpoint.load_checkpoint(solver.checkpoint_path)


def test_experiments_folder_has_one_source(dora_dir):
    from omegaconf import OmegaConf

    from audiogen_lab.environment import AudioGenEnvironment
    assert "dir" not in OmegaConf.load("config/config.yaml").dora
    assert main.dora.dir == AudioGenEnvironment.get_dora_dir() == dora_dir.resolve()
    assert main.get_xp(["solver=compression/debug"]).folder.parent.parent == dora_dir
