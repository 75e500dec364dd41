"""The compression solver end to end: learning, the //sig/ → export → get_pretrained chain, configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.compression import CompressionSolver
from audiogen_lab.train import main
from audiogen_lab.utils.export import export_checkpoint

from ..conftest import dataset_overrides, experiments_folder

ROOT = Path(__file__).resolve().parents[2]
# Segments cover whole 1 s clips (no random offsets), so the task is to learn to code eight clips.
# The loss mix of the first debug preset (spectral-led, whole 1 s clips, constant lr): on this small task it
# learns steadily across short epochs; the demo preset's own learning is tested on real music and speech
# in test_compression_learning.py.
LEARN_ARGS = ["solver=compression/debug", "optim.epochs=4", "optim.updates_per_epoch=40",
              "evaluate.every=4", "generate.every=4", "dataset.valid.num_samples=8", "dataset.min_segment_ratio=1.0",
              "dataset.segment_duration=1.0", "losses.l1=0.1", "losses.msspec=1.0", "mmd.max_samples=1024",
              "schedule.lr_scheduler=null"]


@pytest.fixture(scope="module")
def trained_xp(tiny_dataset, tmp_path_factory):
    """compression/debug trained for about a minute on generated tonal audio."""
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(LEARN_ARGS + dataset_overrides(tiny_dataset)))  # as `dora run` does
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
        yield xp, solver


def test_debug_codec_learns(trained_xp):
    xp, solver = trained_xp
    history = solver.history
    first, last = history[0]["valid"], history[-1]["valid"]
    assert last["si_snr"] > first["si_snr"] + 6.0, [h["valid"]["si_snr"] for h in history]
    assert last["mel_dist"] < first["mel_dist"]
    # the dependence metrics and codebook usage are reported every valid stage
    for key in ("nmi", "nmi_corrected", "perplexity_q0", "usage_q3", "mmd", "bandwidth"):
        assert key in last
    assert last["bandwidth"] == pytest.approx(8 * 6 * 100 / 1000)  # 8 codebooks x log2(64) bits x 100 Hz
    assert "evaluate" in history[-1] and "generate" in history[-1]
    samples = list((xp.folder / "samples" / "epoch_4").iterdir())
    assert any(p.suffix == ".wav" for p in samples) and any(p.suffix == ".png" for p in samples)


def test_sig_export_get_pretrained_chain(trained_xp, tmp_path):
    xp, solver = trained_xp
    model = CompressionSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    assert not model.training
    for key, value in solver.best_state.states["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value)
    path = export_checkpoint(f"//sig/{xp.sig}", tmp_path / "codec.th")
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "version", "family", "families", "solver", "models", "upstream", "xp.cfg",
                          "xp.sig"}
    assert state["family"] == "compression" and set(state["models"]) == {"model"} and state["version"] == 2
    exported = CompressionModel.get_pretrained(str(path))
    wav = torch.randn(1, 1, 16000) * 0.1
    with torch.no_grad():
        codes, scale = exported.encode(wav)
        assert codes.shape == (1, 8, 100) and codes.dtype == torch.long
        torch.testing.assert_close(codes, model.encode(wav)[0])
        torch.testing.assert_close(exported.decode(codes, scale), model.decode(codes, scale))
    again = CompressionSolver.model_from_checkpoint(str(path))
    torch.testing.assert_close(again.state_dict(), exported.state_dict())
    wrapped = CompressionSolver.wrapped_model_from_checkpoint({"compression_model_n_q": 2}, f"//sig/{xp.sig}")
    assert wrapped.num_codebooks == 2 and not any(p.requires_grad for p in wrapped.parameters())
    wrapped.train()  # frozen for good: a parent's .train() cannot flip it
    assert not any(m.training for m in wrapped.modules())


def test_resume_continues_from_last_epoch(trained_xp):
    xp, solver = trained_xp
    with xp.enter():
        resumed = get_solver(xp.cfg)
        assert resumed.restore()
    assert resumed.epoch == 5
    torch.testing.assert_close(resumed.model.state_dict(), solver.model.state_dict())
    torch.testing.assert_close(resumed.ema.state, solver.ema.state)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config/solver/compression").glob("*.yaml")
                                        if p.stem != "default"))
def test_every_compression_config_composes_and_builds(name, tiny_dataset, dora_dir):
    limits = ["datasource.max_sample_rate=48000", "datasource.max_channels=2"]  # the example data's are lower
    xp = main.get_xp([f"solver=compression/{name}", "show=true"] + limits + dataset_overrides(tiny_dataset))
    cfg = xp.cfg
    assert cfg.solver in ("compression", "consistency_ae") and cfg.sample_rate > 0
    with xp.enter():
        solver = get_solver(cfg)
        solver.show()
    assert isinstance(solver, CompressionSolver) and solver.model.sample_rate == cfg.sample_rate
    if solver.model.is_continuous:
        assert solver.model.latent_dim == cfg.consistency_net.latent_dim * cfg.channels
    else:
        assert solver.model.num_codebooks == cfg.rvq.n_q


@pytest.mark.parametrize("preset", ["debug", "soundstream_16khz"])
def test_show_from_the_command_line(preset, tiny_dataset, dora_dir):
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir)}
    env.pop("USER", None)  # the config must load with $USER unset
    out = subprocess.run([sys.executable, "-m", "dora", "run", f"solver=compression/{preset}", "show=true",
                          *map(str, dataset_overrides(tiny_dataset))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Model model [trainable, ema, best_state, export]:" in out.stderr and "M parameters" in out.stderr


def test_two_process_gloo_run_keeps_weights_synchronized(tiny_dataset, dora_dir):
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab", "AUDIOGEN_LAB_DORA_DIR": str(dora_dir),
           "AUDIOGEN_LAB_USE_RENDEZVOUS": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    args = ["solver=compression/debug", "optim.epochs=2", "optim.updates_per_epoch=3", "dataset.batch_size=4",
            "optim.accumulation_steps=2", "losses.adv=1.0", "losses.feat=1.0", "adversarial.adversaries=[msstftd]",
            "dataset.valid.num_samples=4", "evaluate.every=100", "generate.every=100", "device=cpu",
            *map(str, dataset_overrides(tiny_dataset))]
    out = subprocess.run([sys.executable, "-m", "dora", "run", "-d", "--ddp_workers", "2", *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    xp = main.get_xp(args)
    logs = {rank: (xp.folder / f"solver.log.{rank}").read_text() for rank in (0, 1)
            if (xp.folder / f"solver.log.{rank}").exists()}
    assert out.returncode == 0, out.stderr[-3000:] + "".join(logs.values())[-3000:]
    for rank in (0, 1):  # a discriminator and gradient accumulation: still identical
        assert "Weights of model identical on all 2 ranks" in logs[rank]
        assert "Weights of adv_losses identical on all 2 ranks" in logs[rank]
    xp.link.load()
    assert len(xp.link.history) == 2 and "valid" in xp.link.history[-1]
    state = torch.load(xp.folder / "checkpoint.th", weights_only=True)
    assert state["_train_step"] == 6


@pytest.mark.parametrize("autocast", [False, True])
def test_adversarial_compression_steps_are_finite(autocast, tiny_dataset, dora_dir):
    from audiogen_lab.utils.autocast import bf16_support
    if autocast and not bf16_support("cpu").native:
        pytest.skip("bfloat16 autocast is refused on a CPU that only emulates it (tested in tests/utils)")
    xp = main.get_xp(["solver=compression/debug", f"autocast={str(autocast).lower()}", "optim.epochs=1",
                      "optim.updates_per_epoch=3", "dataset.valid.num_samples=4", "evaluate.every=100",
                      "generate.every=100", "losses.adv=1.0", "losses.feat=1.0", "adversarial.adversaries=[msstftd]",
                      "optim.adversary.max_norm=0.5", "optim.adversary.lr=1e-3", "optim.adversary.betas=[0.5,0.9]",
                      "optim.adversary.lr_scheduler=exponential", "schedule.exponential.gamma=0.5"]
                     + dataset_overrides(tiny_dataset))
    with xp.enter():
        solver = get_solver(xp.cfg)
        assert len(solver.adv_losses) == 1 and solver.models["adv_losses"].role == "adversary"
        group = solver.optim_groups["adversary"]
        assert group.max_norm == 0.5 and group.optimizer.param_groups[0]["betas"] == (0.5, 0.9)
        assert group.scheduler is not None and group.scheduler is not solver.optim_groups["generator"].scheduler
        solver.run()
    assert group.steps_taken == 3 and group.lr == pytest.approx(1e-3 * 0.5 ** 3)  # scheduled with its steps
    train = solver.history[-1]["train"]
    for key in ("msspec", "sisnr", "adv_msstftd", "feat_msstftd", "d_msstftd", "commitment", "mmd",
                "ratio_adv_msstftd", "adversary_grad_norm"):
        assert key in train and torch.isfinite(torch.tensor(train[key])), key


def test_notebook_access_and_export_script(trained_xp, tmp_path):
    from audiogen_lab.train import get_solver_from_sig
    xp, solver = trained_xp
    restored = get_solver_from_sig(f"//sig/{xp.sig}", override_cfg={"dataset": {"num_workers": 0}})
    for key, value in solver.best_state.states["model"].items():
        torch.testing.assert_close(restored.model.state_dict()[key], value)
    assert len(restored.history) == len(solver.history)
    out = subprocess.run([sys.executable, "scripts/export.py", f"//sig/{xp.sig}", str(tmp_path / "codec.th")],
                         cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert CompressionModel.get_pretrained(str(tmp_path / "codec.th")).num_codebooks == 8


def test_continue_from_an_export(trained_xp, tiny_dataset, tmp_path):
    xp, solver = trained_xp
    path = export_checkpoint(f"//sig/{xp.sig}", tmp_path / "codec.th")
    new_xp = main.get_xp(LEARN_ARGS + dataset_overrides(tiny_dataset) + [f"continue_from={path}", "seed=3"])
    with new_xp.enter():
        new = get_solver(new_xp.cfg)
        assert not new.restore()  # no checkpoint of its own: starts from the export's weights
    for key, value in solver.best_state.states["model"].items():
        torch.testing.assert_close(new.model.state_dict()[key], value)
    assert new.history == []


def test_mmd_weight_warms_up(trained_xp):
    xp, solver = trained_xp
    assert solver.cfg.mmd.warmup_updates == 1000 and solver.cfg.losses.mmd == pytest.approx(0.1)
    solver._train_step = 0
    assert solver.quantizer_loss_weight("mmd") == pytest.approx(0.1 / 1000)
    solver._train_step = 499
    assert solver.quantizer_loss_weight("mmd") == pytest.approx(0.05)
    solver._train_step = 5000
    assert solver.quantizer_loss_weight("mmd") == pytest.approx(0.1)
    assert solver.quantizer_loss_weight("commitment") == pytest.approx(solver.cfg.losses.commitment)
    solver._train_step = 160
