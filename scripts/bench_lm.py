#!/usr/bin/env python
"""CPU speed of our semantic token LM at the scale of the shared LM harness (``lm_bench.py``).

Prints, with `--threads` torch threads (2 by default):
- the semantic training step time: forward, next-token cross-entropy, backward and an Adam step (lr 3e-4),
  median of `--reps` steps after `--warmup` ones, at batch 4 of 100 semantic ids (2 s at 50 Hz, 500 clusters);
- the achieved GFLOP/s of that step, against the machine's fp32 matmul peak measured in the same run (a
  `--matmul-size` square matmul, fastest of the repetitions, ``2 n^3`` FLOPs);
- the sampling speed in tokens/s of 100 ids at batch 1, with and without the KV cache;
- the process CPU time over wall time of every timing (about the thread count when the run had the cores
  to itself).

FLOPs of a train step (forward once, backward about twice the forward), counted analytically::

    6 * P * B * T  +  12 * depth * B * T^2 * dim

with `P` the weights of every matmul (the linear layers of the blocks and the output head, not the
embedding table, norms or biases), `B * T` the tokens of the batch (`T` = ids + BOS) and the second term
the attention scores and their weighted sum (``Q K^T`` and ``A V``: ``2 * 2 * T^2 * dim`` per layer and
sequence in the forward, counted without the causal half). Adam, norms and softmax are left out.

The model is :class:`LMTransformer` as our semantic stage trains it: the vocabulary of
:class:`SemanticLayout` (clusters, then EOS, PAD, BOS), input ``[BOS, ids]``, targets ``[ids, EOS]``, width,
depth and heads from the harness's CFG, GELU MLP x4, no dropout.

    python scripts/bench_lm.py [--threads 2] [--warmup 2] [--reps 5] [--matmul-size 2048] [--quick]
                               [--json PATH]

The harness times our side and the reference back to back through `make_adapter` (run it from the
benchmark environment, never the project's; see /work/shared/bench/README.md); the coarse and fine cases
are not ours yet, so leave them out with `--only`::

    cd /work/shared/bench
    PYTHONPATH=/work/main/scripts /work/bench-venv/bin/python lm_bench.py --only semantic,sample,mulan \\
        --impl bench_lm:make_adapter
    /work/bench-venv/bin/python lm_bench.py --only semantic,sample,mulan
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
import torch.nn.functional as F
from torch import nn

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
for folder in (ROOT, SCRIPTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import bench_mulan  # noqa: E402
from bench_mulan import MuLaNAdapter, timed  # noqa: E402

from audiogen_lab.models.token_layout import SemanticLayout  # noqa: E402
from audiogen_lab.modules.lm_transformer import LMTransformer  # noqa: E402

LossFn = tp.Callable[[tp.Dict[str, torch.Tensor]], torch.Tensor]
Sampler = tp.Callable[[int], torch.Tensor]
# The semantic keys of lm_bench.py's CFG (the harness passes its whole CFG to `make_adapter` and each case).
CFG: tp.Dict[str, tp.Any] = dict(
    seconds=2.0, semantic_hz=50, semantic_vocab=500, dim=256, depth=4, heads=4, dim_head=64, batch=4,
    lr=3e-4, threads=2, warmup=2, reps=5, seed=0,
)
QUICK = dict(warmup=0, reps=1)
FF_MULT = 4.0
MAX_LENGTH = 4096  # positions accepted by the model; caches are sized to each request, so this costs nothing
# The reference as lm_bench.py builds it (audiolm-pytorch 2.4 SemanticTransformer defaults), for the notes.
REFERENCE_NOTES = (
    "positions: ours rotary; reference a relative position bias from a 3-layer MLP over distances",
    "blocks: ours GELU MLP x{ff_mult:g}, one residual stream; reference GEGLU MLP (hidden 8/3 x dim) with "
    "extra LayerNorms, 4 hyper-connection residual streams and value residuals",
    "vocabulary: ours {vocab} ids (clusters, EOS, PAD, BOS) with a BOS token; reference clusters + EOS with a "
    "learned start vector",
)


# -- our model ------------------------------------------------------------------------------------------
def build_model(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> LMTransformer:
    """Our untrained semantic LM (seeded by ``cfg['seed']``) over the vocabulary of ``cfg['semantic_vocab']``
    clusters and the specials."""
    c = dict(CFG, **(cfg or {}))
    if c['dim'] // c['heads'] != c['dim_head']:
        raise ValueError(f"our heads have width dim // heads = {c['dim'] // c['heads']}, but dim_head="
                         f"{c['dim_head']}; change dim, heads or dim_head so that they agree.")
    layout = SemanticLayout(int(c['semantic_vocab']))
    torch.manual_seed(int(c['seed']))
    return LMTransformer(layout.vocab_size, dim=c['dim'], depth=c['depth'], heads=c['heads'], ff_mult=FF_MULT,
                         dropout=0.0, max_length=MAX_LENGTH)


def semantic_loss(model: LMTransformer, layout: SemanticLayout, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of semantic ids `[B, N]`: input ``[BOS, ids]``, targets ``[ids, EOS]``
    (`N + 1` predictions per item, PAD targets ignored)."""
    ids = layout.flatten(ids)
    bos = ids.new_full((ids.shape[0], 1), layout.bos_id)
    logits = model(torch.cat([bos, ids], dim=1))  # [B, N + 1, V]
    targets = layout.append_eos(ids)  # [B, N + 1]
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=layout.pad_id)


def make_sampler(model: LMTransformer, layout: SemanticLayout, use_kv_cache: bool,
                 top_k: tp.Optional[int] = None) -> Sampler:
    """`fn(num_tokens) -> [1, num_tokens]` cluster ids drawn at temperature 1 from a BOS prompt; the special ids
    are masked, so the sequence never ends early at EOS."""
    def only_codes(logits: torch.Tensor, step: int) -> torch.Tensor:
        logits = logits.clone()
        logits[:, layout.cardinality:] = float('-inf')  # EOS, PAD, BOS
        return logits

    def sample(num_tokens: int) -> torch.Tensor:
        prompt = torch.full((1, 1), layout.bos_id, dtype=torch.long)
        out = model.generate(prompt, num_tokens, temperature=1.0, top_k=top_k, use_cache=use_kv_cache,
                             logits_processor=only_codes)
        return out[:, 1:]
    return sample


class LMAdapter:
    """The adapter of ``lm_bench.py --impl bench_lm:make_adapter``: the semantic stage (training and sampling)
    and MuLaN are ours; coarse and fine are not implemented, so run the harness with
    ``--only semantic,sample,mulan``."""

    def __init__(self, mulan_adapter: MuLaNAdapter) -> None:
        self._mulan = mulan_adapter

    def semantic(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[LMTransformer, LossFn]:
        """A fresh model of the harness's sizes and its `loss_fn({'semantic_ids': [B, N]}) -> scalar`."""
        model, layout = build_model(cfg), SemanticLayout(int(cfg['semantic_vocab']))
        return model, lambda batch: semantic_loss(model, layout, batch['semantic_ids'])

    def semantic_sampler(self, cfg: tp.Dict[str, tp.Any], use_kv_cache: bool = True) -> Sampler:
        """`fn(num_tokens) -> [1, num_tokens]` from a fresh model in eval mode (top-k from ``cfg['top_k']``)."""
        model = build_model(cfg).eval()
        return make_sampler(model, SemanticLayout(int(cfg['semantic_vocab'])), use_kv_cache, cfg.get('top_k'))

    def mulan(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[nn.Module, LossFn]:
        """Our MuLaN, as ``bench_mulan.py`` builds it."""
        return self._mulan.mulan(cfg)


def make_adapter(cfg: tp.Dict[str, tp.Any]) -> LMAdapter:
    """Factory for the harness (which passes its CFG dict again to each case: sizes, vocabulary, seed)."""
    return LMAdapter(bench_mulan.make_adapter(cfg))


# -- measurement ----------------------------------------------------------------------------------------
def make_batch(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> tp.Dict[str, torch.Tensor]:
    """Seeded semantic ids ``[B, N]`` in [0, semantic_vocab) of the harness's shape, with no id repeated
    consecutively (like the harness's, though not the same draws)."""
    c = dict(CFG, **(cfg or {}))
    g = torch.Generator().manual_seed(int(c['seed']))
    length = int(round(c['seconds'] * c['semantic_hz']))
    vocab = int(c['semantic_vocab'])
    if vocab < 2:
        raise ValueError(f"semantic_vocab must be at least 2 to draw ids without repeats, got {vocab}.")
    first = torch.randint(0, vocab, (c['batch'], 1), generator=g)
    steps = torch.randint(1, vocab, (c['batch'], max(length - 1, 0)), generator=g)  # never 0: no repeat
    ids = torch.cat([first, steps], dim=1).cumsum(dim=1) % vocab
    return {'semantic_ids': ids[:, :length]}


def matmul_params(model: nn.Module) -> int:
    """Weights that enter a matmul: those of every `nn.Linear` (the embedding table is a lookup)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def train_step_flops(model: LMTransformer, batch: int, length: int) -> float:
    """``6 P B T + 12 depth B T^2 dim`` FLOPs of forward + backward on `batch` sequences of `length` tokens."""
    depth = len(model.blocks)
    return 6.0 * matmul_params(model) * batch * length + 12.0 * depth * batch * length ** 2 * model.dim


def matmul_peak(size: int, warmup: int, reps: int) -> tp.Dict[str, tp.Any]:
    """fp32 GFLOP/s of a `size` square matmul (``2 size^3`` FLOPs), from the fastest of `reps` calls."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    res = timed(lambda: torch.mm(a, b), max(warmup, 1), reps)
    return dict(res, size=size, gflops=2.0 * size ** 3 / res['min_s'] / 1e9)


def bench_train(model: LMTransformer, batch: tp.Dict[str, torch.Tensor], layout: SemanticLayout, warmup: int,
                reps: int, lr: float = CFG['lr']) -> tp.Dict[str, tp.Any]:
    """Training steps as the harness times them: zero_grad, loss, backward, Adam step (train mode)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = semantic_loss(model, layout, batch['semantic_ids'])
        loss.backward()
        optimizer.step()
        last['loss'] = float(loss.detach())

    res = timed(step, warmup, reps)
    return dict(res, loss=last['loss'])


def bench_sample(sampler: Sampler, num_tokens: int, warmup: int, reps: int, seed: int = 0
                 ) -> tp.Dict[str, tp.Any]:
    """Times `sampler(num_tokens)`; adds tokens/s (tokens generated / median)."""
    torch.manual_seed(seed)
    out = {}
    res = timed(lambda: out.update(ids=sampler(num_tokens)), warmup, reps)
    tokens = int(out['ids'].shape[-1])
    return dict(res, tokens=tokens, tokens_per_s=tokens / res['median_s'])


# -- command line ---------------------------------------------------------------------------------------
def parse_args(argv: tp.Optional[tp.Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=CFG['threads'])
    ap.add_argument('--warmup', type=int, default=CFG['warmup'])
    ap.add_argument('--reps', type=int, default=CFG['reps'])
    ap.add_argument('--matmul-size', type=int, default=2048, help='side of the square matmul timed for the peak')
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
    layout = SemanticLayout(int(cfg['semantic_vocab']))
    batch = make_batch(cfg)
    b, n = batch['semantic_ids'].shape
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    flops = train_step_flops(model, b, n + 1)
    train = bench_train(model, batch, layout, cfg['warmup'], cfg['reps'], cfg['lr'])
    train['gflops'] = flops / train['median_s'] / 1e9
    peak = matmul_peak(args.matmul_size, cfg['warmup'], cfg['reps'])
    sample = {}
    for name, use_cache in (('kv-cache', True), ('no-cache', False)):
        sampler = make_adapter(cfg).semantic_sampler(cfg, use_kv_cache=use_cache)
        sample[name] = bench_sample(sampler, n, cfg['warmup'], cfg['reps'], cfg['seed'])
    notes = [note.format(ff_mult=FF_MULT, vocab=layout.vocab_size) for note in REFERENCE_NOTES]
    res = {'cfg': cfg, 'vocab_size': layout.vocab_size, 'parameters': params,
           'matmul_parameters': matmul_params(model), 'train_flops': flops, 'train': train, 'matmul_peak': peak,
           'sample': sample, 'reference_differences': notes,
           'torch': torch.__version__, 'python': platform.python_version(),
           'loadavg_start': list(loadavg_start), 'loadavg_end': list(os.getloadavg())}

    print(f"semantic LM benchmark (ours): width {cfg['dim']}, depth {cfg['depth']}, {cfg['heads']} heads, "
          f"vocabulary {layout.vocab_size}; {args.threads} threads, median of {cfg['reps']} after "
          f"{cfg['warmup']} warm-up (torch {torch.__version__})")
    print(f"parameters: {params:,} ({res['matmul_parameters']:,} in matmuls)")
    print(f"train step (B={b}, N={n} + BOS) {_timing(train)}  loss {train['loss']:.3f}")
    print(f"train step FLOPs 6*P*B*T + 12*depth*B*T^2*dim = {flops / 1e9:.3f} GFLOP -> {train['gflops']:.2f} "
          f"GFLOP/s, {100 * train['gflops'] / peak['gflops']:.1f}% of the fp32 matmul peak")
    print(f"fp32 matmul peak ({peak['size']}x{peak['size']}, fastest run) {_timing(peak)}  "
          f"{peak['gflops']:.2f} GFLOP/s")
    for name, s in sample.items():
        print(f"sample {name:<8} (B=1, {s['tokens']} tokens) {_timing(s)}  {s['tokens_per_s']:.1f} tok/s")
    print("differences from the reference (audiolm-pytorch as lm_bench.py builds it):")
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
