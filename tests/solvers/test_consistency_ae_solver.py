"""The consistency-AE solver end to end on generated clips: curriculum, loss on online weights only,
resume, FAD in evaluate, and the //sig/ -> export -> model_from_checkpoint chain."""
from __future__ import annotations

import pytest
import torch

from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.consistency_ae import ConsistencyAE
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.compression import CompressionSolver
from audiogen_lab.solvers.consistency_ae import ConsistencyAESolver
from audiogen_lab.train import main
from audiogen_lab.utils.export import export_checkpoint

from ..conftest import dataset_overrides, experiments_folder

ARGS = ["solver=compression/consistency_ae_debug", "optim.epochs=2", "optim.updates_per_epoch=3",
        "dataset.batch_size=4", "dataset.valid.num_samples=4", "dataset.evaluate.num_samples=2",
        "dataset.generate.num_samples=1", "generate.num_samples=1"]


@pytest.fixture(scope="module")
def trained_xp(tiny_dataset, tmp_path_factory):
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(ARGS + dataset_overrides(tiny_dataset)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
        yield xp, solver


def test_runs_every_stage_with_fad(trained_xp):
    xp, solver = trained_xp
    assert isinstance(solver, ConsistencyAESolver) and isinstance(solver.model, ConsistencyAE)
    history = solver.history
    assert len(history) == 2
    for key in ("loss", "distance", "delta", "sigma", "generator_lr"):
        assert key in history[-1]["train"]
    for key in ("loss", "mel_dist", "si_snr"):
        assert key in history[-1]["valid"]
    assert history[-1]["evaluate"]["fad"] >= 0 and "mel_dist" in history[-1]["evaluate"]
    assert solver.optim_groups["generator"].optimizer.__class__.__name__ == "RAdam"
    assert solver.best_metric_name == "mel_dist"


def test_discretization_curriculum_endpoints(trained_xp):
    _, solver = trained_xp
    step = solver._train_step
    try:
        solver._train_step = 0
        assert solver.delta() == pytest.approx(0.1)
        solver._train_step = solver.total_updates - 1
        assert solver.delta() == pytest.approx(0.001)
        solver._train_step = (solver.total_updates - 1) / 2
        assert solver.delta() == pytest.approx(0.01)  # exponential: the geometric mean halfway
    finally:
        solver._train_step = step


def test_loss_uses_the_online_weights_not_the_ema(trained_xp):
    """The training loss (student and teacher) comes from the online network: replacing the EMA weights by
    garbage leaves it unchanged, and it equals the model's own loss under the same random state."""
    _, solver = trained_xp
    batch = next(iter(solver.dataloaders["train"]))
    x = batch["audio"] if isinstance(batch, dict) else batch[0]
    with torch.no_grad():
        for value in solver.ema.state.values():
            if value.is_floating_point():
                value.normal_()
    solver._current_stage = "train"  # as inside solver.train()
    torch.manual_seed(7)
    with torch.no_grad():
        expected, _ = solver.model.consistency_loss(x, solver.delta(), **solver._loss_options())
    torch.manual_seed(7)
    before = {k: v.clone() for k, v in solver.model.state_dict().items()}
    try:
        metrics = solver.run_step(0, batch, {})
    finally:
        solver._current_stage = None
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    changed = [k for k, v in solver.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the update changed no weight"


def test_sig_export_model_from_checkpoint(trained_xp, tmp_path):
    xp, solver = trained_xp
    model = CompressionSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    assert isinstance(model, ConsistencyAE) and not model.training
    for key, value in solver.best_state.states["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value)
    path = export_checkpoint(f"//sig/{xp.sig}", tmp_path / "cae.th")
    exported = CompressionModel.get_pretrained(str(path))
    wav = torch.randn(1, 1, 8000) * 0.1
    with torch.no_grad():
        latents, scale = exported.encode(wav)
        assert scale is None and latents.shape == (1, 8, 32)
        torch.testing.assert_close(latents, model.encode(wav)[0])
        torch.testing.assert_close(exported.decode(latents, seed=1), model.decode(latents, seed=1))
