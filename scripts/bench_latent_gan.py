#!/usr/bin/env python
"""CPU speed of our Musika-style latent GAN (:class:`LatentGAN`) at the reference configuration.

Prints, with `--threads` torch threads (2 by default), for ``config/model/latent_gan/<preset>.yaml`` (default:
base channels 128, window 256, 64-d latents) with random weights:
- latent-only generation: `LatentGAN.generate` of `--seconds` (60 by default) at `--frame-rate` latent frames
  per second (Music2Latent-like latents of 44.1 kHz audio: 44100 / 4096 = 10.77 frames/s), in eval mode under
  `torch.inference_mode`, median of `--repeats` runs after `--warmup` ones, as "x real time" = seconds of audio
  generated / wall seconds (the real-time factor RTF = wall / audio is its inverse); target >= 100x;
- end to end, beside it: the same generation followed by `decode_latents` through the debug ConsistencyAE of
  ``scripts/bench_consistency_ae.py`` (`--ae-preset`, at `--ae-sample-rate`, one-step decoding in chunks of
  `--chunk-seconds`). That autoencoder has its own latent size and rate (8-d at 62.5 frames/s at 16 kHz), so
  the GAN of this line is the preset's with `latent_dim` and the frame rate set to the autoencoder's (more
  frames per second than the latent-only line: the line says how many);
- the training step at batch `--train-batch` (32) windows of the preset's window, one update of
  ``LatentGANSolver.run_step``: generator forward on training coordinates, critic on real windows (random
  normalised latents) with the R1 penalty (`latent_gan.r1_gamma`, through `torch.autograd.grad` with
  `create_graph`), critic on the detached fakes, hinge losses, the generator's hinge loss through the frozen
  critic, both backward passes and two Adam steps (`optim` of ``solver=latent_gan/default``); the critic's
  reconstruction head when the config enables it. Not timed: the generator EMA, the adaptive-R1 update and the
  gradient penalty (`gp_weight`, 0 in the configs). Median of `--train-repeats` after `--warmup`;
- the FLOPs of one untimed step (`torch.utils.flop_counter`: convolutions and matmuls, forward, backward and
  the double backward of R1; not Adam), the achieved GFLOP/s and their share of the machine's fp32 matmul peak,
  measured in the same run (a `--matmul-size` square matmul, fastest of `--matmul-reps`);
- the process CPU time over wall time of every timing (about the thread count when the run had the cores to
  itself) and the load average before and after. When another process holds one of two cores, every operation
  of a 2-thread run waits for the descheduled thread: latent-only generation (many small operations) then
  slows down by up to two orders of magnitude, with cpu/wall near 1; the fastest run is printed beside the
  median to tell such runs apart.

    python scripts/bench_latent_gan.py [--preset default] [--seconds 60] [--frame-rate 10.7666]
                                       [--num-samples 1] [--batch-halves 64] [--threads 2] [--warmup 1]
                                       [--repeats 3] [--ae-preset debug] [--ae-sample-rate 16000]
                                       [--train-batch 32] [--train-repeats 3] [--matmul-size 2048]
                                       [--json PATH]

`--preset debug` runs everything on the tiny ``config/model/latent_gan/debug.yaml`` (a smoke run in seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import typing as tp
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
for folder in (ROOT, SCRIPTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_compression import count_flops  # noqa: E402
import bench_consistency_ae  # noqa: E402
from bench_consistency_ae import randomize_zero_weights  # noqa: E402
from bench_lm import matmul_peak  # noqa: E402
from bench_mulan import _timing, timed  # noqa: E402

from audiogen_lab.adversarial.discriminators.latent_critic import LatentCritic  # noqa: E402
from audiogen_lab.losses.gan import hinge_discriminator_loss, hinge_gen_loss, r1_penalty  # noqa: E402
from audiogen_lab.models.consistency_ae import ConsistencyAE  # noqa: E402
from audiogen_lab.models.latent_gan import LatentGAN, decode_latents  # noqa: E402
from audiogen_lab.models.latent_gan_builder import get_latent_critic, get_latent_gan_model  # noqa: E402
from audiogen_lab.solvers.builders import get_adversary_optim_config, get_optimizer  # noqa: E402
from audiogen_lab.solvers.latent_gan import _frozen_parameters  # noqa: E402

CONFIG_DIR = ROOT / 'config'
PRESETS = tuple(sorted(path.stem for path in (CONFIG_DIR / 'model' / 'latent_gan').glob('*.yaml')))
MUSIC2LATENT_RATE = 44100 / 4096  # latent frames per second of Music2Latent-like latents of 44.1 kHz audio
TARGET_X_REAL_TIME = 100.0  # latent-only generation at the reference configuration, on 2 CPU cores


# -- models ---------------------------------------------------------------------------------------------
def compose_config(preset: str = 'default', overrides: tp.Sequence[str] = ()) -> DictConfig:
    """The config tree of ``solver=latent_gan/default model=latent_gan/<preset>`` (model and optimizers)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base='1.3'):
        return compose(config_name='config',
                       overrides=['solver=latent_gan/default', f'model=latent_gan/{preset}', *overrides])


def build_gan(cfg: DictConfig, frame_rate: float, seed: int = 0) -> LatentGAN:
    """A randomly initialised LatentGAN of `cfg` at `frame_rate` latent frames/s, identity normaliser
    (mean 0, std 1), in eval mode. The noise scales, zero at initialisation, get small random values so that
    no part of the network is trivially skipped."""
    torch.manual_seed(seed)
    model = get_latent_gan_model(cfg)
    model.set_normaliser([0.0] * model.latent_dim, [1.0] * model.latent_dim, frame_rate)
    randomize_zero_weights(model)
    return model.eval()


def build_autoencoder(preset: str = 'debug', sample_rate: int = 16000, seed: int = 0) -> ConsistencyAE:
    """The ConsistencyAE of ``scripts/bench_consistency_ae.py`` (random weights, eval mode)."""
    return bench_consistency_ae.build_model(sample_rate, preset=preset, seed=seed)


def num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- generation -----------------------------------------------------------------------------------------
def bench_generation(model: LatentGAN, seconds: float, num_samples: int, batch_halves: int, warmup: int,
                     repeats: int, seed: int = 0,
                     decoder: tp.Optional[tp.Callable[[torch.Tensor], torch.Tensor]] = None,
                     ) -> tp.Dict[str, tp.Any]:
    """Times `model.generate(seconds, num_samples)` -> latents `[N, D, round(seconds * rate)]`, followed by
    `decoder(latents) -> audio [N, C, T]` when given, in eval mode under inference mode.

    Adds to the timing: `frames`, `output_shape`, `audio_seconds` (N * seconds), `x_real_time` (audio
    seconds / median wall seconds), `rtf` (its inverse), `x_real_time_best` (of the fastest run) and `finite`.
    """
    out: tp.Dict[str, torch.Tensor] = {}

    def run() -> None:
        latents = model.generate(seconds, num_samples, seed=seed, batch_halves=batch_halves)
        out['latents'] = latents
        if decoder is not None:
            out['audio'] = decoder(latents)

    model.eval()
    torch.manual_seed(seed)  # the decoder's noise
    with torch.inference_mode():
        res = timed(run, warmup, repeats)
    final = out['audio'] if decoder is not None else out['latents']
    audio_seconds = seconds * num_samples
    return dict(res, frames=int(out['latents'].shape[-1]), output_shape=list(final.shape), seconds=seconds,
                num_samples=num_samples, batch_halves=batch_halves, audio_seconds=audio_seconds,
                x_real_time=audio_seconds / res['median_s'], rtf=res['median_s'] / audio_seconds,
                x_real_time_best=audio_seconds / res['min_s'],
                finite=bool(torch.isfinite(final).all()))


def autoencoder_decoder(autoencoder: ConsistencyAE, chunk_seconds: float
                        ) -> tp.Callable[[torch.Tensor], torch.Tensor]:
    """`fn(latents [N, D, T']) -> audio [N, C, T' * hop]` through `decode_latents` (chunked decoding)."""
    return lambda latents: decode_latents(latents, autoencoder, chunk_seconds=chunk_seconds)


# -- training step --------------------------------------------------------------------------------------
class TrainStep:
    """One update of ``LatentGANSolver.run_step`` (float32, no autocast) on a fixed batch of real windows.

    Args:
        model: the LatentGAN (its generator is trained).
        critic: the window critic.
        cfg: the composed config (``latent_gan.r1_gamma``, ``latent_gan.reconstruction_weight``, ``optim``).
        batch: windows B of `model.window` frames.
        seed: seeds the real windows `[B, D, W]` (standard normal: normalised latents) and the generator's
            coordinates, styles and noise.
    """

    def __init__(self, model: LatentGAN, critic: LatentCritic, cfg: DictConfig, batch: int, seed: int = 0):
        self.model, self.critic = model.train(), critic.train()
        self.r1_gamma = float(cfg.latent_gan.r1_gamma)
        self.reconstruction_weight = float(cfg.latent_gan.reconstruction_weight)
        self.g_optimizer = get_optimizer(model.generator, cfg.optim)
        self.d_optimizer = get_optimizer(critic, get_adversary_optim_config(cfg))
        self.rng = torch.Generator().manual_seed(seed)
        self.real = torch.randn(batch, model.latent_dim, model.window, generator=self.rng)
        self.losses: tp.Dict[str, float] = {}

    def __call__(self) -> None:
        self.g_optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        coords, style, _ = self.model.sampler.training_windows(self.real.shape[0], generator=self.rng)
        fake = self.model(coords, style, self.rng)  # [B, D, W]
        # R1 differentiates the critic with respect to its input. The input is a (free) view of the leaf, as
        # FlopCounterMode's module hooks cannot take a leaf input under autograd.grad (pytorch/pytorch#131753).
        real = self.real.detach().requires_grad_(True).view_as(self.real)
        features = self.critic.features(real)
        real_logits = self.critic.logits(features)
        fake_logits = self.critic(fake.detach())
        d_losses = {'d_hinge': hinge_discriminator_loss(real_logits, fake_logits)}
        if self.r1_gamma > 0:
            d_losses['r1'] = r1_penalty(real_logits, real, gamma=self.r1_gamma)
        if self.critic.decoder is not None and self.reconstruction_weight > 0:
            d_losses['reconstruction'] = self.reconstruction_weight * self.critic.reconstruction_loss(real, features)
        with _frozen_parameters(self.critic):
            g_loss = hinge_gen_loss(self.critic(fake))
        d_loss = sum(d_losses.values())
        g_loss.backward()
        d_loss.backward()  # type: ignore[union-attr]
        self.g_optimizer.step()
        self.d_optimizer.step()
        self.losses = {name: float(value.detach()) for name, value in d_losses.items()}
        self.losses.update(d_loss=float(d_loss.detach()), g_loss=float(g_loss.detach()))  # type: ignore[union-attr]


def bench_train(cfg: DictConfig, frame_rate: float, batch: int, warmup: int, repeats: int, peak_gflops: float,
                seed: int = 0) -> tp.Dict[str, tp.Any]:
    """FLOPs of one untimed `TrainStep` of fresh models, then its time (median of `repeats` after `warmup`),
    the achieved GFLOP/s (of the median and of the fastest step) and their percentage of `peak_gflops`."""
    model = build_gan(cfg, frame_rate, seed)
    torch.manual_seed(seed)
    critic = get_latent_critic(cfg)
    step = TrainStep(model, critic, cfg, batch, seed)
    flops = count_flops(step)
    res = timed(step, warmup, repeats)
    gflops, best = flops / res['median_s'] / 1e9, flops / res['min_s'] / 1e9
    return dict(res, batch=batch, window=model.window, latent_dim=model.latent_dim, flops=flops, gflops=gflops,
                percent_of_peak=100.0 * gflops / peak_gflops, gflops_best=best,
                percent_of_peak_best=100.0 * best / peak_gflops, losses=step.losses,
                generator_parameters=num_parameters(model.generator), critic_parameters=num_parameters(critic))


# -- command line ---------------------------------------------------------------------------------------
def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--preset', default='default', choices=PRESETS, help='config/model/latent_gan/<preset>.yaml')
    ap.add_argument('--seconds', type=float, default=60.0, help='audio seconds generated per sample')
    ap.add_argument('--frame-rate', type=float, default=MUSIC2LATENT_RATE,
                    help='latent frames per second of the latent-only line (default 44100 / 4096)')
    ap.add_argument('--num-samples', type=int, default=1, help='pieces generated per call')
    ap.add_argument('--batch-halves', type=int, default=64, help='half windows per generator forward pass')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=3, help='timed generation runs')
    ap.add_argument('--ae-preset', default='debug', choices=sorted(bench_consistency_ae.PRESETS),
                    help='config/model/consistency_ae/<preset>.yaml of the end-to-end line')
    ap.add_argument('--ae-sample-rate', type=int, default=16000,
                    help='sample rate of the end-to-end autoencoder (the debug config is made for 16 kHz)')
    ap.add_argument('--chunk-seconds', type=float, default=10.0, help='decode_latents chunks')
    ap.add_argument('--train-batch', type=int, default=32, help='training windows per step (0: no training step)')
    ap.add_argument('--train-repeats', type=int, default=3, help='timed training steps')
    ap.add_argument('--matmul-size', type=int, default=2048, help='side of the square matmul timed for the peak')
    ap.add_argument('--matmul-reps', type=int, default=5)
    ap.add_argument('--json', default=None, help='write the figures here')
    return ap.parse_args(argv)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    loadavg_start = os.getloadavg()
    cfg = compose_config(args.preset)
    gan = build_gan(cfg, args.frame_rate, args.seed)
    latent_only = bench_generation(gan, args.seconds, args.num_samples, args.batch_halves, args.warmup,
                                   args.repeats, args.seed)

    autoencoder = build_autoencoder(args.ae_preset, args.ae_sample_rate, args.seed)
    e2e_cfg = compose_config(args.preset, [f'latent_gan.latent_dim={autoencoder.latent_dim}'])
    e2e_gan = build_gan(e2e_cfg, autoencoder.frame_rate, args.seed)
    e2e_generate = bench_generation(e2e_gan, args.seconds, args.num_samples, args.batch_halves, args.warmup,
                                    args.repeats, args.seed)
    end_to_end = bench_generation(e2e_gan, args.seconds, args.num_samples, args.batch_halves, args.warmup,
                                  args.repeats, args.seed, autoencoder_decoder(autoencoder, args.chunk_seconds))
    end_to_end.update(generate_only=e2e_generate, latent_dim=e2e_gan.latent_dim, frame_rate=e2e_gan.frame_rate,
                      sample_rate=autoencoder.sample_rate, hop_length=autoencoder.hop_length,
                      ae_preset=args.ae_preset, ae_parameters=num_parameters(autoencoder))

    peak = matmul_peak(args.matmul_size, args.warmup, args.matmul_reps)
    train = None
    if args.train_batch > 0:
        train = bench_train(cfg, args.frame_rate, args.train_batch, args.warmup, args.train_repeats, peak['gflops'],
                            args.seed)
    res = {'preset': args.preset, 'threads': args.threads, 'warmup': args.warmup, 'repeats': args.repeats,
           'frame_rate': gan.frame_rate, 'latent_dim': gan.latent_dim, 'window': gan.window,
           'base_channels': int(cfg.latent_generator.channels),
           'generator_parameters': num_parameters(gan.generator), 'latent_only': latent_only,
           'end_to_end': end_to_end, 'matmul_peak': peak, 'train': train,
           'target_x_real_time': TARGET_X_REAL_TIME,
           'target_met': latent_only['x_real_time'] >= TARGET_X_REAL_TIME,
           'torch': torch.__version__, 'python': platform.python_version(),
           'cpu': platform.processor() or platform.machine(),
           'loadavg_start': list(loadavg_start), 'loadavg_end': list(os.getloadavg())}
    report(res, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


def _speed(res: tp.Dict[str, tp.Any]) -> str:
    return (f"{res['x_real_time']:.1f}x real time (RTF {res['rtf']:.3g}; fastest run "
            f"{res['x_real_time_best']:.1f}x)")


def report(res: tp.Dict[str, tp.Any], args: argparse.Namespace) -> None:
    """Prints the figures of `_run`."""
    lo, e2e, peak, train = res['latent_only'], res['end_to_end'], res['matmul_peak'], res['train']
    samples = f"{args.num_samples} sample{'s' if args.num_samples > 1 else ''}"
    print(f"Latent GAN benchmark (ours, preset {args.preset}): {args.threads} threads, median of {args.repeats} "
          f"after {args.warmup} warm-up (torch {res['torch']}), random weights")
    print(f"model: base channels {res['base_channels']}, window {res['window']}, "
          f"latent_dim {res['latent_dim']}, {res['frame_rate']:.4g} frames/s, "
          f"{res['generator_parameters']:,} generator parameters")
    verdict = 'met' if res['target_met'] else 'NOT met'
    print(f"latent-only generation ({args.seconds:g} s, {samples}, {lo['frames']} frames, latents "
          f"{lo['output_shape']}, batch_halves {args.batch_halves}) {_timing(lo)}  {_speed(lo)}  "
          f"[target >= {res['target_x_real_time']:g}x: {verdict}]")
    print(f"end to end ({args.seconds:g} s, {samples}: GAN with latent_dim {e2e['latent_dim']} at "
          f"{e2e['frame_rate']:.4g} frames/s = {e2e['frames']} frames, then {args.ae_preset} ConsistencyAE "
          f"decode_latents at {e2e['sample_rate']} Hz, {e2e['ae_parameters']:,} parameters, chunks of "
          f"{args.chunk_seconds:g} s; audio {e2e['output_shape']}) {_timing(e2e)}  {_speed(e2e)}; "
          f"its GAN alone {_speed(e2e['generate_only'])}")
    print(f"x real time: latent-only {lo['x_real_time']:.1f}x  |  end to end with the {args.ae_preset} autoencoder "
          f"{e2e['x_real_time']:.1f}x")
    if train is not None:
        print(f"train step (batch {train['batch']} windows of {train['window']} frames x {train['latent_dim']} dims: "
              f"critic hinge + R1 on reals, generator hinge, 2 Adam steps; {train['generator_parameters']:,} + "
              f"{train['critic_parameters']:,} parameters) {_timing(train)}  d_loss {train['losses']['d_loss']:.3f}"
              f" g_loss {train['losses']['g_loss']:.3f}")
        print(f"  {train['flops'] / 1e9:.2f} GFLOP per step (FlopCounterMode) -> {train['gflops']:.2f} GFLOP/s, "
              f"{train['percent_of_peak']:.1f}% of the fp32 matmul peak (fastest step {train['gflops_best']:.2f} "
              f"GFLOP/s, {train['percent_of_peak_best']:.1f}%)")
    print(f"fp32 matmul peak ({peak['size']}x{peak['size']}, fastest run) {_timing(peak)}  "
          f"{peak['gflops']:.2f} GFLOP/s")
    print(f"load average start {tuple(res['loadavg_start'])} end {tuple(res['loadavg_end'])} "
          f"(cpu/wall about {args.threads} means the run had the cores to itself)")


if __name__ == '__main__':
    sys.exit(main())
