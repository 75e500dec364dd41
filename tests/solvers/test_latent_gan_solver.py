"""The latent GAN solver end to end on synthetic structured latents: training metrics, resume of G, D,
G-EMA, optimizers and the R1 state, exact-length and batch-independent generation, //sig/ loading."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.data.latent_dataset import LatentMeta, write_latent_files
from audiogen_lab.metrics.latent_gan import jump_profile, seam_ratio, worst_jump_ratio
from audiogen_lab.models.latent_gan import LatentGAN
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.latent_gan import LatentGANSolver
from audiogen_lab.train import main

from ..conftest import experiments_folder

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 12.0
DIM = 8
ARGS = ["solver=latent_gan/debug", "optim.epochs=2", "optim.updates_per_epoch=12", "dataset.valid.num_samples=32"]


def structured_latents(count: int, frames: int, seed: int) -> list:
    """Latents [DIM, frames]: three slow sinusoidal sources with random rates and phases, mixed by one fixed
    matrix into DIM correlated dimensions with their own offsets and scales, plus a little noise."""
    mixing = torch.randn(DIM, 3, generator=torch.Generator().manual_seed(0))
    offsets = torch.linspace(-2, 3, DIM)[:, None]
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32)
    items = []
    for _ in range(count):
        freqs = 0.02 + 0.06 * torch.rand(3, 1, generator=gen)
        phases = 2 * math.pi * torch.rand(3, 1, generator=gen)
        sources = torch.sin(2 * math.pi * freqs * t + phases)
        items.append(offsets + 0.5 * mixing @ sources + 0.05 * torch.randn(DIM, frames, generator=gen))
    return items


def _overrides(root) -> list:
    return [f"datasource.train={root / 'train'}", f"datasource.valid={root / 'valid'}"]


@pytest.fixture(scope="module")
def latent_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    meta = LatentMeta(model="synthetic", frame_rate=RATE, dim=DIM)
    write_latent_files(root / "train", structured_latents(24, 300, seed=1), meta)
    write_latent_files(root / "valid", structured_latents(8, 300, seed=2), meta)
    return root


@pytest.fixture(scope="module")
def trained_xp(latent_root, tmp_path_factory):
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(ARGS + _overrides(latent_root)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
        yield xp, solver


def test_training_reports_finite_metrics(trained_xp):
    _, solver = trained_xp
    assert isinstance(solver, LatentGANSolver) and isinstance(solver.model, LatentGAN)
    assert len(solver.history) == 2
    train, valid = solver.history[-1]["train"], solver.history[-1]["valid"]
    for key in ("d_loss", "g_loss", "d_hinge", "r1", "r1_gamma", "certainty", "generator_lr", "critic_lr"):
        assert key in train and math.isfinite(train[key]), key
    for key in ("fd", "mean_error", "std_error", "seam", "d_loss", "g_loss"):
        assert key in valid and math.isfinite(valid[key]), key
    assert train["skipped_updates"] == 0
    assert solver.model.frame_rate == RATE
    # the normaliser holds the statistics of the training latents
    values = torch.cat(structured_latents(24, 300, seed=1), dim=1)
    assert torch.allclose(solver.model.latent_mean, values.mean(1), atol=1e-3)
    assert torch.allclose(solver.model.latent_std, values.std(1), atol=1e-2)


def test_resume_restores_every_state(trained_xp):
    xp, solver = trained_xp
    assert solver.r1.gamma != 1.0  # the adaptive weight moved
    with xp.enter():
        again = get_solver(xp.cfg)
        assert again.restore()
    for name in ("model", "critic"):
        for key, value in getattr(solver, name).state_dict().items():
            assert torch.equal(value, getattr(again, name).state_dict()[key]), (name, key)
    for key, value in solver.ema.state.items():
        assert torch.equal(value, again.ema.state[key]), key
    assert again.ema.count == solver.ema.count
    for name, group in solver.optim_groups.items():
        old, new = group.optimizer.state_dict(), again.optim_groups[name].optimizer.state_dict()
        assert old["state"].keys() == new["state"].keys() and len(old["state"]) > 0
        for index, state in old["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(new["state"][index][key])), (name, key)
    assert again.r1.state_dict() == pytest.approx(solver.r1.state_dict(), nan_ok=True)
    assert again.epoch == solver.epoch


def test_generation_length_and_batching(trained_xp):
    xp, _ = trained_xp
    model = LatentGANSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    assert isinstance(model, LatentGAN) and not model.training and model.frame_rate == RATE
    latents = model.generate(61, num_samples=2, truncation=1.5, seed=3)
    assert latents.shape == (2, DIM, 61 * int(RATE)) and torch.isfinite(latents).all()
    one_by_one = model.generate(61, num_samples=2, truncation=1.5, seed=3, batch_halves=1)
    assert torch.allclose(latents, one_by_one, atol=1e-5)
    assert torch.equal(latents, model.generate(61, num_samples=2, truncation=1.5, seed=3))
    assert not torch.allclose(latents, model.generate(61, num_samples=2, truncation=1.5, seed=4))
    assert model.generate(2.5, seed=0).shape == (1, DIM, 30)
    assert model.generate(61.04, seed=0).shape[-1] == round(61.04 * RATE)


def test_loaded_model_is_the_ema_best_state(trained_xp):
    xp, solver = trained_xp
    model = LatentGANSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    best = solver.best_state.states["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key


def test_seam_ratio_is_one_for_smooth_signals_and_large_for_jumps():
    t = torch.arange(64, dtype=torch.float64)
    smooth = torch.sin(0.3 * t)[None, None]
    assert seam_ratio(smooth, 8) == pytest.approx(1.0, abs=0.15)
    assert worst_jump_ratio(smooth, 8) == pytest.approx(1.0, abs=0.2)
    steps = smooth + torch.repeat_interleave(torch.arange(8, dtype=torch.float64), 8)[None, None]
    assert seam_ratio(steps, 8) > 3 and worst_jump_ratio(steps, 8) == pytest.approx(seam_ratio(steps, 8))
    moved = smooth + torch.repeat_interleave(torch.arange(8, dtype=torch.float64), 8).roll(-3)[None, None]
    assert seam_ratio(moved, 8) < 1.5 < 3 < worst_jump_ratio(moved, 8)  # a step 3 frames before each boundary


def test_jump_profile_by_position():
    ramp = torch.arange(24, dtype=torch.float64).pow(2)[None, None]  # jumps 1, 3, 5, ... (2t + 1)
    profile = jump_profile(ramp, 8)
    # position k averages the jumps 2t + 1 at t = k, k + 8, k + 16 (none after the last frame)
    expected = [(sum(2 * t + 1 for t in (k, k + 8, k + 16) if t < 23)) / (3 if k < 7 else 2) for k in range(8)]
    assert profile.tolist() == pytest.approx(expected)
    assert seam_ratio(ramp, 8) == pytest.approx(float(profile[-1] / profile[:-1].mean()))



def test_reconstruction_head_fixed_r1_and_gradient_penalty(latent_root, tmp_path):
    args = ["solver=latent_gan/debug", "optim.epochs=1", "optim.updates_per_epoch=4", "dataset.valid.num_samples=16",
            "latent_critic.reconstruction=true", "latent_gan.adaptive_r1=false", "latent_gan.r1_gamma=0.5",
            "latent_gan.gp_weight=1.0", f"datasource.evaluate={latent_root / 'valid'}", "latent_gan.eval_seconds=3"]
    with experiments_folder(tmp_path / "dora"):
        xp = main.init_xp(main.get_xp(args + _overrides(latent_root)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
    train = solver.history[-1]["train"]
    for key in ("reconstruction", "gp", "r1"):
        assert key in train and math.isfinite(train[key]), key
    assert train["r1_gamma"] == 0.5 and solver.r1.state_dict() == {"gamma": 0.5}
    assert math.isfinite(solver.history[-1]["valid"]["fd"])
    evaluate = solver.history[-1]["evaluate"]  # the synthetic latents name no loadable autoencoder: latent metrics only
    assert evaluate["speed_latent"] > 0 and math.isfinite(evaluate["fd"]) and "fad" not in evaluate


def test_latent_dim_mismatch_names_the_key(latent_root, tmp_path):
    with experiments_folder(tmp_path / "dora"):
        xp = main.init_xp(main.get_xp(["solver=latent_gan/debug", "latent_gan.latent_dim=4"] + _overrides(latent_root)))
        with xp.enter(), pytest.raises(ValueError, match="latent_gan.latent_dim=8"):
            get_solver(xp.cfg)


def test_generated_latents_decode_through_an_autoencoder_in_chunks():
    from pathlib import Path

    from omegaconf import OmegaConf

    from audiogen_lab.models.builders import get_compression_model
    from audiogen_lab.models.latent_gan import decode_latents
    from audiogen_lab.models.latent_gan_builder import get_latent_gan_model

    root = Path(__file__).resolve().parents[2] / "config" / "model"
    torch.manual_seed(0)
    codec = get_compression_model(OmegaConf.merge(OmegaConf.load(root / "consistency_ae" / "debug.yaml"),
                                                  {"solver": "compression", "sample_rate": 16000, "channels": 1}))
    codec.eval()
    cfg = OmegaConf.merge(OmegaConf.load(root / "latent_gan" / "default.yaml"),
                          OmegaConf.load(root / "latent_gan" / "debug.yaml"),
                          {"latent_gan": {"latent_dim": codec.latent_dim}})
    gan = get_latent_gan_model(cfg).eval()
    gan.set_normaliser([0.0] * codec.latent_dim, [1.0] * codec.latent_dim, codec.frame_rate)
    with torch.no_grad():
        latents = gan.generate(2.0, seed=0)
    frames = round(2.0 * codec.frame_rate)
    assert latents.shape == (1, codec.latent_dim, frames)
    audio = decode_latents(latents, codec, chunk_seconds=0.5, overlap_seconds=0.1)
    assert audio.shape == (1, 1, frames * codec.hop_length) and torch.isfinite(audio).all()
    # stereo latents of a mono autoencoder: left then right in the features, decoded one by one
    stereo = get_latent_gan_model(OmegaConf.merge(cfg, {"latent_gan": {"latent_dim": 2 * codec.latent_dim}})).eval()
    stereo.set_normaliser([0.0] * 2 * codec.latent_dim, [1.0] * 2 * codec.latent_dim, codec.frame_rate, channels=2)
    assert stereo.channels == 2
    with torch.no_grad():
        latents = stereo.generate(1.0, seed=0)
    torch.manual_seed(1)  # the consistency decoder draws noise: the left channel is decoded first
    audio = decode_latents(latents, codec, chunk_seconds=None, channels=stereo.channels)
    assert audio.shape == (1, 2, round(codec.frame_rate) * codec.hop_length)
    torch.manual_seed(1)
    torch.testing.assert_close(audio[:, :1], decode_latents(latents[:, :codec.latent_dim], codec, chunk_seconds=None))
    assert not torch.allclose(audio[:, 0], audio[:, 1], atol=1e-4)


@torch.no_grad()
def _untrained_metrics(solver: LatentGANSolver) -> dict:
    real = torch.cat([solver.model.normalise(batch["latents"]) for batch in solver.dataloaders["valid"]])
    torch.manual_seed(0)
    coords, style, _ = solver.model.sampler.training_windows(real.shape[0])
    return solver.sample_metrics(real, solver.model(coords, style))


@pytest.fixture(scope="module")
def debug_run(latent_root, tmp_path_factory):
    """The debug recipe (`solver=latent_gan/debug` as shipped) on the synthetic latents: the valid metrics of
    the untrained generator and the history."""
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(["solver=latent_gan/debug"] + _overrides(latent_root)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            untrained = _untrained_metrics(solver)
            solver.run()
    return untrained, solver.history


@pytest.mark.slow
def test_debug_gan_halves_the_latent_fd(debug_run):
    untrained, history = debug_run
    assert history[-1]["valid"]["fd"] <= 0.5 * untrained["fd"], (untrained, [e["valid"] for e in history])


@pytest.mark.slow
def test_debug_gan_joins_windows_without_seams(debug_run):
    """The debug recipe penalises window positions that jump more than the data (latent_gan.jump_excess_weight):
    the joins of independently generated halves jump about as much as frames inside a half, and no other
    position of a half stands out either (the discontinuity is not just moved off the join)."""
    _, history = debug_run
    valid = history[-1]["valid"]
    assert valid["seam"] <= 1.5 and valid["seam_worst"] <= 1.5, [e["valid"] for e in history]
    assert history[-1]["train"]["jump_excess"] >= 0


def test_generate_script_decodes_exact_length_audio(tmp_path):
    """Stereo latents of a mono autoencoder at its frame rate: the evaluate stage measures speed and FAD through
    the autoencoder the training latents' meta.json names; scripts/generate.py --latent-gan decodes stereo files
    of exactly --duration seconds."""
    import soundfile as sf

    from ..conftest import load_script, tiny_autoencoder_export

    autoencoder = tiny_autoencoder_export(tmp_path / "ae")  # 8-d latents at 62.5 frames/s, 16 kHz
    meta = LatentMeta(model=autoencoder, frame_rate=62.5, dim=2 * DIM, extra={"channels": 2})
    stereo = [torch.cat([item, item.roll(5, dims=-1)]) for item in structured_latents(6, 80, seed=5)]
    write_latent_files(tmp_path / "train", stereo, meta)
    write_latent_files(tmp_path / "valid", stereo[:2], meta)
    args = ["solver=latent_gan/debug", "optim.epochs=1", "optim.updates_per_epoch=2", "dataset.valid.num_samples=8",
            f"latent_gan.latent_dim={2 * DIM}", f"datasource.evaluate={tmp_path / 'valid'}",
            "latent_gan.eval_seconds=2", "latent_gan.eval_pieces=3"] + _overrides(tmp_path)
    with experiments_folder(tmp_path / "dora"):
        xp = main.init_xp(main.get_xp(args))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
        evaluate = solver.history[-1]["evaluate"]
        assert evaluate["speed_latent"] > evaluate["speed_end_to_end"] > 0
        assert evaluate["fad"] > 0 and evaluate["fd"] > 0 and math.isfinite(evaluate["mean_error"])
        out = tmp_path / "samples"
        for folder in (out, tmp_path / "again"):
            assert load_script("generate").main(["--latent-gan", f"//sig/{xp.sig}", "--duration", "1.3",
                                                 "--num-samples", "2", "--seed", "0", "--truncation", "2",
                                                 "--device", "cpu", "--out", str(folder)]) == 0
        # the seed fixes the GAN's draws and the decoder's noise
        assert sf.read(out / "sample_001.wav")[0].tolist() == sf.read(tmp_path / "again" / "sample_001.wav")[0].tolist()
        for index in range(2):
            info = sf.info(out / f"sample_{index:03d}.wav")
            assert (info.samplerate, info.channels, info.frames) == (16000, 2, round(1.3 * 16000))
            assert (out / f"sample_{index:03d}.png").stat().st_size > 0
        with pytest.raises(ValueError, match="latent frames/s"):
            load_script("generate").main(["--latent-gan", f"//sig/{xp.sig}", "--autoencoder",
                                          tiny_autoencoder_export(tmp_path / "ae8k", sample_rate=8000),
                                          "--out", str(out)])
