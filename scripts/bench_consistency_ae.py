#!/usr/bin/env python
"""CPU speed of our ConsistencyAE against the Music2Latent reference, side by side in one run.

Prints, for N seconds of 44.1 kHz mono audio at the reference scale (about 58 M parameters):
- the encode and one-step decode real-time factors, RTF = seconds spent / seconds of audio (median of
  `--repeats` runs after one warm-up run);
- the training step time at batch `--train-batch` of `--train-seconds` segments: the consistency loss
  (encoder, latent pyramid, student and no-grad teacher passes of the decoder), backward and a RAdam step,
  in micro-batches of `--train-micro-batch` items with gradient accumulation (a whole batch of 4 at the
  reference scale needs more than 23 GB; one item about 6 GB), `--train-repeats` timed steps after the
  warm-up;
- the parameter counts.

    python scripts/bench_consistency_ae.py [--seconds 10] [--threads 2] [--repeats 3]
                                           [--train-batch 4] [--train-seconds 2.9721]
                                           [--reference] [--harness PATH] [--json PATH]

With `--reference`, or whenever the `music2latent` package can be imported, the reference runs in the same
process through `M2LRandomInit` of the shared harness (`../shared/bench/m2l_bench.py` next to this
repository, or `--harness`), with random weights, and the ratios ours / reference are printed. The runs
of both sides are interleaved, in alternating order, so that a change of load affects both alike; the
cpu/wall figure (process CPU time over wall time) is about the thread count when the run had the cores
to itself.

The reference training step has no counterpart in the package (it ships inference only): it is built
here from its `UNet` with the same consistency loss as ours (`audiogen_lab.modules.consistency`), the
same batch, noise levels and spectrogram size (the reference STFT has no centre padding, so its segment
is 3 hops longer to give the same number of frames as ours).

The reference is never a dependency of the project: install it in a separate virtual environment::

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.14.1 torchaudio==2.11.0 music2latent
    /work/bench-venv/bin/pip install -e /work/main
    /work/bench-venv/bin/python scripts/bench_consistency_ae.py --reference

The harness can also time our side on its own (`factory` is the adapter it expects)::

    PYTHONPATH=/work/main python /work/shared/bench/m2l_bench.py --impl scripts.bench_consistency_ae:factory
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import typing as tp
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

from audiogen_lab.models.builders import get_compression_model  # noqa: E402
from audiogen_lab.models.consistency_ae import ConsistencyAE  # noqa: E402
from audiogen_lab.modules import consistency as cm  # noqa: E402

PRESETS = {
    'default': ROOT / 'config' / 'model' / 'consistency_ae' / 'default.yaml',
    'debug': ROOT / 'config' / 'model' / 'consistency_ae' / 'debug.yaml',
}
DEFAULT_HARNESS = ROOT.parent / 'shared' / 'bench' / 'm2l_bench.py'
REFERENCE_SETUP = """\
The reference package `music2latent` is not importable by this interpreter ({python}).
Build a separate benchmark environment (never install it in the project's):
    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.14.1 torchaudio==2.11.0 music2latent
    /work/bench-venv/bin/pip install -e {root}
    /work/bench-venv/bin/python scripts/bench_consistency_ae.py --reference"""
# Training-step settings of config/solver/compression/consistency_ae_44khz.yaml (the cost does not depend
# on the noise levels; a mid-curriculum delta is used).
P_MEAN, P_STD, DELTA, LR = -1.1, 2.0, 0.01, 1e-4


# -- our side -------------------------------------------------------------------------------------------
def build_model(sample_rate: int = 44100, preset: str = 'default', config: tp.Any = None,
                channels: int = 1, seed: int = 0) -> ConsistencyAE:
    """A randomly initialised ConsistencyAE from a preset of config/model/consistency_ae or a config.

    Weights left at exactly zero by the initialisation (the output head) get small random values, as the
    harness does for the reference, so that no part of the network is trivially skipped.
    """
    if config is None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config = OmegaConf.load(PRESETS[preset])
    elif not OmegaConf.is_config(config):
        config = OmegaConf.create(config)
    cfg = OmegaConf.merge(config, {'sample_rate': int(sample_rate), 'channels': int(channels)})
    torch.manual_seed(seed)
    model = get_compression_model(cfg)
    assert isinstance(model, ConsistencyAE), f"the config builds a {type(model).__name__}, not a ConsistencyAE"
    randomize_zero_weights(model)
    return model.eval()


def randomize_zero_weights(module: torch.nn.Module, std: float = 1e-3) -> int:
    """Fill every all-zero weight matrix / kernel of `module` with N(0, std^2); returns how many."""
    count = 0
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not bool(p.any()):
                p.normal_(0, std)
                count += 1
    return count


class ConsistencyAEBench:
    """The harness adapter: `encode(wav [C, N]) -> latents`, `decode(latents, steps) -> wav [C, N']`.

    Channels of the audio are coded one by one (folded into the batch) for a mono model, as the
    reference does. Decoding noise is seeded, so outputs are reproducible.
    """

    def __init__(self, model: ConsistencyAE):
        self.model = model.eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = torch.as_tensor(wav, dtype=torch.float32)
            x = x.reshape(-1, self.model.channels, x.shape[-1])
            latents, _ = self.model.encode(x)
        return latents

    def decode(self, latents: torch.Tensor, steps: int = 1) -> torch.Tensor:
        with torch.inference_mode():
            wav = self.model.decode(latents, steps=int(steps), seed=0)
        return wav.reshape(-1, wav.shape[-1])


def factory(sample_rate: int = 44100, preset: str = 'default', config: tp.Any = None,
            seed: int = 0) -> ConsistencyAEBench:
    """Our implementation for `m2l_bench.py --impl scripts.bench_consistency_ae:factory` (random weights)."""
    return ConsistencyAEBench(build_model(sample_rate, preset=preset, config=config, seed=seed))


class TrainStep:
    """One training step on `batch` (a tensor [B, ...]) with its own copy of the network: `loss_fn(x)` on
    micro-batches of `micro_batch` items (0: all at once) with gradient accumulation, then a RAdam step.
    The sum of the micro-batch losses, each weighted by its share of the batch, is the batch loss: the
    same computation in smaller pieces, so that the activations fit in memory."""

    def __init__(self, module: torch.nn.Module, loss_fn: tp.Callable[[torch.Tensor], torch.Tensor],
                 batch: torch.Tensor, micro_batch: int = 0, lr: float = LR):
        self.module, self.loss_fn, self.batch = module, loss_fn, batch
        self.micro_batch = micro_batch if micro_batch > 0 else batch.shape[0]
        self.optimizer = torch.optim.RAdam(module.parameters(), lr=lr)
        self.last_loss = float('nan')

    def __call__(self) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for chunk in self.batch.split(self.micro_batch):
            loss = self.loss_fn(chunk) * (chunk.shape[0] / self.batch.shape[0])
            loss.backward()
            total += float(loss.detach())
        self.optimizer.step()
        self.last_loss = total


def our_train_step(model: ConsistencyAE, batch: int, samples: int, micro_batch: int = 0,
                   seed: int = 0) -> TrainStep:
    net = copy.deepcopy(model).train()
    x = test_signal(samples, net.sample_rate, batch=batch, seed=seed).unsqueeze(1).repeat(1, net.channels, 1)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        loss, _ = net.consistency_loss(x, DELTA, generator=generator, p_mean=P_MEAN, p_std=P_STD)
        return loss

    return TrainStep(net, loss_fn, x, micro_batch)


# -- the reference --------------------------------------------------------------------------------------
def reference_available() -> bool:
    return importlib.util.find_spec('music2latent') is not None


def load_harness(path: tp.Union[str, Path] = DEFAULT_HARNESS):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark harness not found: {path} (set --harness)")
    spec = importlib.util.spec_from_file_location('m2l_bench_harness', path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def reference_train_step(reference: tp.Any, batch: int, frames: int, micro_batch: int = 0,
                         seed: int = 0) -> TrainStep:
    """The reference UNet under the same consistency loss as ours, on spectrograms of `frames` frames."""
    from music2latent import audio as m2l_audio  # only in the benchmark environment
    from music2latent import hparams as m2l_hparams

    net = copy.deepcopy(reference.gen).train()
    hop = int(m2l_hparams.hop)
    samples = frames * hop + 3 * hop  # frames of a 4-hop window without centre padding
    x = test_signal(samples, int(m2l_hparams.sample_rate), batch=batch, seed=seed)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        spec = m2l_audio.to_representation(x)
        assert spec.shape[-1] == frames, f"reference spectrogram has {spec.shape[-1]} frames, not {frames}"
        latents = net.encoder(spec)
        pyramid = net.decoder(latents)
        u = cm.sample_noise_index(spec.shape[0], generator, delta=DELTA, p_mean=P_MEAN, p_std=P_STD)
        noise = torch.randn(spec.shape, generator=generator)

        def denoise(x_noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return net(latents, x_noisy, sigma, pyramid_latents=pyramid)

        loss, _ = cm.consistency_loss(denoise, spec, u, DELTA, noise)
        return loss

    return TrainStep(net, loss_fn, x, micro_batch)


# -- measurement ----------------------------------------------------------------------------------------
def test_signal(samples: int, sample_rate: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """The harness's deterministic test signal (two partials and light noise), [batch, samples]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / sample_rate
    tone = 0.3 * torch.sin(2 * math.pi * 220.0 * t) + 0.2 * torch.sin(2 * math.pi * 331.0 * t)
    return (tone + 0.01 * torch.randn(batch, samples, generator=g)).float()


def interleaved(cases: tp.Dict[str, tp.Callable[[], tp.Any]], warmup: int, repeats: int
                ) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """Times every case `repeats` times after `warmup` runs, alternating their order between rounds.
    Returns per case its last output, the wall times and the process CPU times."""
    names = list(cases)
    res: tp.Dict[str, tp.Dict[str, tp.Any]] = {n: {'out': None, 'wall': [], 'cpu': []} for n in names}
    for n in names:
        for _ in range(warmup):
            res[n]['out'] = cases[n]()
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            res[n]['out'] = cases[n]()
            res[n]['wall'].append(time.perf_counter() - t0)
            res[n]['cpu'].append(time.process_time() - c0)
    return res


def _summary(timing: tp.Dict[str, tp.Any], seconds: tp.Optional[float]) -> tp.Dict[str, tp.Any]:
    wall, cpu = timing['wall'], timing['cpu']
    median = statistics.median(wall)
    out = {'times_s': wall, 'median_s': median, 'min_s': min(wall), 'cpu_s': cpu,
           'cpu_per_wall': sum(cpu) / max(sum(wall), 1e-12)}
    if seconds:
        out['rtf'] = median / seconds
    return out


def _fmt_runs(values: tp.Sequence[float]) -> str:
    return '[' + ', '.join(f'{v:.2f}' for v in values) + ']'


def _line(label: str, res: tp.Dict[str, tp.Any], key: str, unit: str = '') -> str:
    parts = []
    for side in ('ours', 'reference'):
        if side in res:
            d = res[side]
            parts.append(f"{side} {d[key]:.3f}{unit} (runs {_fmt_runs(d['times_s'])} s, "
                         f"cpu/wall {d['cpu_per_wall']:.2f})")
    text = f"{label}: " + '  |  '.join(parts)
    if 'ratio' in res:
        text += f"  |  ratio ours/reference {res['ratio']:.3f}"
    return text


def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=float, default=10.0, help='audio duration for encode / decode')
    ap.add_argument('--sample-rate', type=int, default=44100)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--steps', type=int, default=1, help='decode steps')
    ap.add_argument('--train-batch', type=int, default=4, help='training batch (0: no training step)')
    ap.add_argument('--train-seconds', type=float, default=131072 / 44100, help='training segment length')
    ap.add_argument('--train-micro-batch', type=int, default=1,
                    help='items per forward / backward, gradients accumulated over the batch (0: whole batch); '
                         'the reference scale needs about 6 GB per item')
    ap.add_argument('--train-repeats', type=int, default=1,
                    help='timed training steps after --warmup ones (at the reference scale a step of batch 4 '
                         'takes minutes on 2 cores)')
    ap.add_argument('--preset', default='default', choices=sorted(PRESETS), help='our model configuration')
    ref = ap.add_mutually_exclusive_group()
    ref.add_argument('--reference', action='store_true', help='also run the reference (fails if missing)')
    ref.add_argument('--no-reference', action='store_true', help='our side only, even if the reference exists')
    ap.add_argument('--harness', default=str(DEFAULT_HARNESS), help='path of m2l_bench.py')
    ap.add_argument('--json', default=None, help='write the figures here')
    return ap.parse_args(argv)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = parse_args(argv)
    use_reference = args.reference or (not args.no_reference and reference_available())
    if args.reference and not reference_available():
        print(REFERENCE_SETUP.format(python=sys.executable, root=ROOT))
        return 2
    if not use_reference and not args.no_reference:
        print(REFERENCE_SETUP.format(python=sys.executable, root=ROOT))
        print("Timing our side only.\n")
    if use_reference and args.preset != 'default':
        print(f"note: our preset is {args.preset!r}, the reference is at its own (full) scale")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, use_reference)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace, use_reference: bool) -> int:
    sr = args.sample_rate
    samples = int(round(args.seconds * sr))
    wav = test_signal(samples, sr)
    train_repeats = args.train_repeats

    impls: tp.Dict[str, tp.Any] = {'ours': factory(sample_rate=sr, preset=args.preset)}
    if use_reference:
        harness = load_harness(args.harness)
        impls['reference'] = harness.M2LRandomInit(sample_rate=sr)

    res: tp.Dict[str, tp.Any] = {
        'seconds': args.seconds, 'sample_rate': sr, 'threads': args.threads, 'warmup': args.warmup,
        'repeats': args.repeats, 'steps': args.steps, 'preset': args.preset, 'torch': torch.__version__,
        'python': platform.python_version(), 'cpu': platform.processor() or platform.machine(),
        'num_parameters': {k: v.num_parameters() for k, v in impls.items()},
        'loadavg_start': list(os.getloadavg()),
    }

    # encode / decode: the harness's protocol, under inference mode as the harness runs it
    with torch.inference_mode():
        enc = interleaved({k: (lambda v=v: v.encode(wav)) for k, v in impls.items()}, args.warmup, args.repeats)
        latents = {k: enc[k]['out'] for k in impls}
        dec = interleaved({k: (lambda v=v, k=k: v.decode(latents[k], args.steps)) for k, v in impls.items()},
                          args.warmup, args.repeats)
    res['encode'] = {k: {**_summary(enc[k], args.seconds), 'latent_shape': list(torch.as_tensor(latents[k]).shape)}
                     for k in impls}
    res['decode'] = {}
    for k in impls:
        out = torch.as_tensor(dec[k]['out'])
        res['decode'][k] = {**_summary(dec[k], args.seconds), 'output_shape': list(out.shape),
                            'finite': bool(torch.isfinite(out).all())}

    # training step
    if args.train_batch > 0 and train_repeats > 0:
        ours_model = impls['ours'].model
        train_samples = int(round(args.train_seconds * ours_model.sample_rate))
        frames = max(1, math.ceil(train_samples / ours_model.hop_length)) * ours_model.encoder.time_downsampling
        steps = {'ours': our_train_step(ours_model, args.train_batch, train_samples, args.train_micro_batch)}
        if use_reference:
            steps['reference'] = reference_train_step(impls['reference'], args.train_batch, frames,
                                                      args.train_micro_batch)
        tr = interleaved(steps, args.warmup, train_repeats)
        res['train'] = {k: {**_summary(tr[k], None), 'loss': steps[k].last_loss} for k in steps}
        res['train']['batch'], res['train']['samples'] = args.train_batch, train_samples
        res['train']['micro_batch'] = steps['ours'].micro_batch
        res['train']['spectrogram_frames'] = frames
        del steps
    res['loadavg_end'] = list(os.getloadavg())

    for section in ('encode', 'decode', 'train'):
        part = res.get(section)
        if part and 'ours' in part and 'reference' in part:
            part['ratio'] = part['ours']['median_s'] / part['reference']['median_s']
    params = res['num_parameters']
    if 'reference' in params:
        res['num_parameters_ratio'] = params['ours'] / params['reference']

    print(f"ConsistencyAE benchmark: {args.seconds:g} s of {sr} Hz mono audio, {args.threads} threads, "
          f"median of {args.repeats} runs after {args.warmup} warm-up "
          f"(torch {torch.__version__}, preset {args.preset})")
    text = f"parameters: ours {params['ours']:,}"
    if 'reference' in params:
        text += f"  |  reference {params['reference']:,}  |  ratio {res['num_parameters_ratio']:.3f}"
    print(text)
    shapes = '  |  '.join(f"{k} {v['latent_shape']}" for k, v in res['encode'].items() if isinstance(v, dict))
    print(f"latents: {shapes}")
    print(_line('encode RTF', res['encode'], 'rtf'))
    print(_line(f'decode {args.steps}-step RTF', res['decode'], 'rtf'))
    shapes = '  |  '.join(f"{k} {v['output_shape']}" for k, v in res['decode'].items() if isinstance(v, dict))
    print(f"decoded: {shapes}")
    if 'train' in res:
        t = res['train']
        print(_line(f"train step (batch {t['batch']} in micro-batches of {t['micro_batch']}, "
                    f"{t['samples']} samples = {t['samples'] / sr:.4f} s, "
                    f"{t['spectrogram_frames']} STFT frames; median of {train_repeats}) seconds",
                    t, 'median_s', ' s'))
    print(f"load average start {tuple(res['loadavg_start'])} end {tuple(res['loadavg_end'])} "
          f"(cpu/wall about {args.threads} means the run had the cores to itself)")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
