#!/usr/bin/env python
"""CPU speed of our MuLaN at the scale of the shared LM harness (``lm_bench.py --only mulan``).

Prints, with `--threads` torch threads (2 by default):
- the training step time: forward of both towers, contrastive loss, backward and an Adam step (lr 3e-4),
  median of `--reps` steps after `--warmup` ones, at batch 8 of 2 s 16 kHz clips with 64-token texts
  (random ids in [1, 49408), so no padding);
- the embedding throughput in eval mode without gradients: audio clips/s and texts/s at batch 8;
- the process CPU time over wall time of every timing (about the thread count when the run had the cores
  to itself);
- what differs from the reference (musiclm-pytorch as the harness builds it).

The model is ours as a user trains it: the towers resized to width 256, depth 4, 4 heads and a text table
of 49408 ids (the reference's CLIP vocabulary), everything else (front end, dropout, patch dropout,
SpecAugment, time stretch, contrastive loss) from ``config/model/mulan/<preset>.yaml``.

    python scripts/bench_mulan.py [--preset default] [--threads 2] [--warmup 2] [--reps 5] [--quick]
                                  [--json PATH]

The harness times our side and the reference back to back through `make_adapter` (run it from the
benchmark environment, never the project's; see /work/shared/bench/README.md)::

    cd /work/shared/bench
    PYTHONPATH=/work/main/scripts /work/bench-venv/bin/python lm_bench.py --only mulan \\
        --impl bench_mulan:make_adapter
    /work/bench-venv/bin/python lm_bench.py --only mulan
"""
from __future__ import annotations

import argparse
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

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from audiogen_lab.models.mulan import MuLaN  # noqa: E402
from audiogen_lab.models.mulan_builder import get_mulan_model  # noqa: E402
from audiogen_lab.modules.text_tokenizer import get_tokenizer  # noqa: E402

CONFIG_DIR = ROOT / 'config'
LossFn = tp.Callable[[tp.Dict[str, torch.Tensor]], torch.Tensor]
PRESETS = ('default', 'debug')  # config/model/mulan/<preset>.yaml
# The MuLaN keys of lm_bench.py's CFG (the harness passes its whole CFG to `make_adapter` and `mulan`).
CFG: tp.Dict[str, tp.Any] = dict(
    seconds=2.0, mulan_batch=8, mulan_sample_hz=16000, mulan_text_len=64, mulan_text_vocab=49408,
    mulan_dim=256, mulan_depth=4, mulan_heads=4, dim_head=64, lr=3e-4, threads=2, warmup=2, reps=5, seed=0,
)
QUICK = dict(warmup=0, reps=1)
# The reference as lm_bench.py builds it (musiclm-pytorch 0.2.8 constructor defaults), for the notes.
REFERENCE_NOTES = (
    "front end: ours log-mel ({n_mels} bands, hop {hop}); reference linear power STFT (n_fft 128, window 24, "
    "hop 12: 65 x 2667 at 2 s, cropped to 4 x 166 = 664 patches of 16 x 16) - ours has {patches} patches "
    "per clip, about {ratio:.0f}x fewer tokens in the audio tower",
    "patch dropout: ours {patch_dropout:g} ({kept} of {patches} patches kept); reference 0.25",
    "augmentation: ours SpecAugment ({spec_augment}) and random time stretch ({time_stretch}); reference a "
    "fixed 0.8 time stretch, one frequency and one time mask of up to 80",
    "positions: ours fixed 2-D sine-cosine; reference a learned MLP bias over every pair of patches",
    "blocks: ours GELU MLP x{ff_mult:g}, dropout {dropout:g} (audio) / {text_dropout:g} (text), head width "
    "{head_dim}; reference GEGLU MLP (hidden 8/3 x dim), no dropout, head width 64",
    "text: ours CLS token, {text_len} positions, {vocab} ids; reference 256 positions, 49408 ids",
    "loss: ours {loss} with a learned temperature; reference decoupled contrastive (its MuLaN default)",
)


# -- our model ------------------------------------------------------------------------------------------
def compose_config(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None, preset: str = 'default') -> DictConfig:
    """The config tree of ``model=mulan/<preset>`` with the towers at the harness's scale."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    c = dict(CFG, **(cfg or {}))
    overrides = [
        f'+model=mulan/{preset}', f"sample_rate={int(c['mulan_sample_hz'])}", 'channels=1',
        f"ast.dim={c['mulan_dim']}", f"ast.depth={c['mulan_depth']}", f"ast.heads={c['mulan_heads']}",
        f"text_transformer.dim={c['mulan_dim']}", f"text_transformer.depth={c['mulan_depth']}",
        f"text_transformer.heads={c['mulan_heads']}", f"mulan.text_vocab_size={c['mulan_text_vocab']}",
        f"mulan.max_text_length={c['mulan_text_len']}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base='1.3'):
        return compose(config_name='config', overrides=overrides)


def build_model(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None, preset: str = 'default') -> MuLaN:
    """Our untrained MuLaN (seeded by ``cfg['seed']``) with the fixed byte tokenizer: the benchmark feeds
    token ids directly, so the tokenizer is never run."""
    c = dict(CFG, **(cfg or {}))
    torch.manual_seed(int(c['seed']))
    return get_mulan_model(compose_config(c, preset), tokenizer=get_tokenizer('bytes'))


def contrastive_loss(model: MuLaN, batch: tp.Dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of `batch` = ``{'wavs': [B, T], 'texts': [B, L] ids (0 is padding)}``."""
    audio, text = model(batch['wavs'], batch['texts'])
    loss, _ = model.loss(audio, text)
    return loss


class MuLaNAdapter:
    """The adapter of ``lm_bench.py --impl bench_mulan:make_adapter``: only the MuLaN case is ours."""

    def __init__(self, preset: str = 'default'):
        self.preset = preset

    def mulan(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[MuLaN, LossFn]:
        """A fresh model of the harness's sizes and its `loss_fn(batch) -> scalar`."""
        model = build_model(cfg, self.preset)
        return model, lambda batch: contrastive_loss(model, batch)


def make_adapter(cfg: tp.Dict[str, tp.Any]) -> MuLaNAdapter:
    """Factory for the harness (which passes its CFG dict again to `mulan`: sizes, vocabulary, seed)."""
    return MuLaNAdapter()


# -- measurement ----------------------------------------------------------------------------------------
def make_batch(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> tp.Dict[str, torch.Tensor]:
    """Seeded inputs of the harness's shapes and distributions: waveforms ``[B, T]`` of N(0, 0.1^2) and token
    ids ``[B, L]`` in [1, vocab)."""
    c = dict(CFG, **(cfg or {}))
    g = torch.Generator().manual_seed(int(c['seed']))
    samples = int(round(c['seconds'] * c['mulan_sample_hz']))
    wavs = torch.randn(c['mulan_batch'], samples, generator=g) * 0.1
    texts = torch.randint(1, c['mulan_text_vocab'], (c['mulan_batch'], c['mulan_text_len']), generator=g)
    return {'wavs': wavs, 'texts': texts}


def timed(fn: tp.Callable[[], tp.Any], warmup: int, reps: int) -> tp.Dict[str, tp.Any]:
    """Wall times of `reps` calls after `warmup` ones, and per call the process CPU time over wall time."""
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    for _ in range(warmup):
        fn()
    times, util = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        util.append((time.process_time() - c0) / max(dt, 1e-12))
    return {'times_s': times, 'median_s': statistics.median(times), 'min_s': min(times), 'max_s': max(times),
            'cpu_per_wall': statistics.median(util)}


def bench_train(model: MuLaN, batch: tp.Dict[str, torch.Tensor], warmup: int, reps: int,
                lr: float = CFG['lr']) -> tp.Dict[str, tp.Any]:
    """Training steps as the harness times them: zero_grad, loss, backward, Adam step (train mode)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = contrastive_loss(model, batch)
        loss.backward()
        optimizer.step()
        last['loss'] = float(loss.detach())

    res = timed(step, warmup, reps)
    return dict(res, loss=last['loss'])


def bench_embed(model: MuLaN, batch: tp.Dict[str, torch.Tensor], warmup: int, reps: int
                ) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    """Eval-mode, no-grad embedding of the batch's clips and texts; adds items/s (batch / median)."""
    model.eval()
    out = {}
    with torch.no_grad():
        for name, key, embed in (('audio', 'wavs', model.embed_audio), ('text', 'texts', model.embed_text)):
            res = timed(lambda embed=embed, key=key: embed(batch[key]), warmup, reps)
            res['items_per_s'] = batch[key].shape[0] / res['median_s']
            out[name] = res
    return out


def reference_differences(model: MuLaN, cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> tp.List[str]:
    """One line per difference between our model (as built) and the reference at the harness's shapes."""
    c = dict(CFG, **(cfg or {}))
    ast, text = model.audio_tower, model.text_tower
    samples = int(round(c['seconds'] * c['mulan_sample_hz']))
    frames = int(model.frontend.num_frames(torch.tensor([samples]))[0])
    patches = (ast.n_mels // ast.patch_freq) * max(1, math.ceil(frames / ast.patch_time))
    kept = max(1, math.ceil((1.0 - ast.patch_dropout) * patches)) if ast.patch_dropout > 0 else patches
    block = ast.transformer.blocks[0]
    spec_augment, stretch = model.spec_augment, model.time_stretch
    values = dict(
        n_mels=ast.n_mels, hop=model.frontend.hop_length, patches=patches, ratio=664 / patches,
        patch_dropout=ast.patch_dropout, kept=kept,
        spec_augment=(f"{spec_augment.num_freq_masks} frequency masks of up to "
                      f"{spec_augment.freq_masking.mask_param}, {spec_augment.num_time_masks} time masks of up to "
                      f"{spec_augment.time_mask_param}" if spec_augment is not None else 'off'),
        time_stretch=(f"rates {stretch.min_rate:g}-{stretch.max_rate:g}, probability {stretch.prob:g}"
                      if stretch is not None else 'off'),
        ff_mult=block.ff[0].out_features / ast.dim, dropout=_dropout(ast), text_dropout=_dropout(text),
        head_dim=ast.dim // block.attn.heads, text_len=text.max_length, vocab=text.vocab_size,
        loss=type(model.contrastive).__name__,
    )
    return [note.format(**values) for note in REFERENCE_NOTES]


def _dropout(module: torch.nn.Module) -> float:
    """The largest dropout rate inside `module` (0 when it has none)."""
    return max((m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)), default=0.0)


# -- command line ---------------------------------------------------------------------------------------
def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--preset', default='default', choices=PRESETS,
                    help='config/model/mulan/<preset>.yaml for everything but the tower sizes')
    ap.add_argument('--threads', type=int, default=CFG['threads'])
    ap.add_argument('--warmup', type=int, default=CFG['warmup'])
    ap.add_argument('--reps', type=int, default=CFG['reps'])
    ap.add_argument('--quick', action='store_true', help=f"smoke run: {QUICK}")
    ap.add_argument('--json', default=None, help='write the figures here')
    return ap.parse_args(argv)


def _timing(res: tp.Dict[str, tp.Any]) -> str:
    runs = ', '.join(f'{t * 1e3:.1f}' for t in res['times_s'])
    return f"median {res['median_s'] * 1e3:8.1f} ms  (runs [{runs}] ms, cpu/wall {res['cpu_per_wall']:.2f})"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = parse_args(argv)
    warmup, reps = (QUICK['warmup'], QUICK['reps']) if args.quick else (args.warmup, args.reps)
    cfg = dict(CFG, threads=args.threads, warmup=warmup, reps=reps)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, cfg)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace, cfg: tp.Dict[str, tp.Any]) -> int:
    loadavg_start = os.getloadavg()
    batch = make_batch(cfg)
    model = build_model(cfg, args.preset)
    params = sum(p.numel() for p in model.parameters())
    train = bench_train(model, batch, cfg['warmup'], cfg['reps'], cfg['lr'])
    embed = bench_embed(model, batch, cfg['warmup'], cfg['reps'])
    notes = reference_differences(model, cfg)
    res = {'preset': args.preset, 'cfg': cfg, 'parameters': params, 'train': train, 'embed': embed,
           'reference_differences': notes, 'torch': torch.__version__, 'python': platform.python_version(),
           'loadavg_start': list(loadavg_start), 'loadavg_end': list(os.getloadavg())}

    b, seconds, length = cfg['mulan_batch'], cfg['seconds'], cfg['mulan_text_len']
    print(f"MuLaN benchmark (ours, preset {args.preset}): AST and text transformer width {cfg['mulan_dim']}, "
          f"depth {cfg['mulan_depth']}, {cfg['mulan_heads']} heads; {args.threads} threads, median of "
          f"{cfg['reps']} after {cfg['warmup']} warm-up (torch {torch.__version__})")
    print(f"parameters: {params:,}")
    print(f"train step (B={b}, {seconds:g} s @ {cfg['mulan_sample_hz'] // 1000} kHz, L={length}) "
          f"{_timing(train)}  loss {train['loss']:.3f}")
    for name, unit in (('audio', 'clips/s'), ('text', 'texts/s')):
        e = embed[name]
        print(f"embed {name:<5} (eval, no_grad, B={b}) {_timing(e)}  {e['items_per_s']:.1f} {unit}")
    print("differences from the reference (musiclm-pytorch as lm_bench.py builds it):")
    for note in notes:
        print(f"  - {note}")
    print(f"load average start {tuple(res['loadavg_start'])} end {tuple(res['loadavg_end'])} "
          f"(cpu/wall about {args.threads} means the run had the cores to itself)")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
