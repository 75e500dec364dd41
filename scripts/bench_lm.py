#!/usr/bin/env python
"""CPU speed of our AudioLM token LMs (semantic, coarse, fine) at the scale of the shared LM harness (``lm_bench.py``).

Prints, with `--threads` torch threads (2 by default):
- the training step time of each stage: forward, next-token cross-entropy, backward and an Adam step (lr 3e-4),
  median of `--reps` steps after `--warmup` ones, at batch 4 of 2 s: semantic 100 ids (50 Hz, 500 clusters);
  coarse 100 semantic ids then 150 frames x 3 levels (75 Hz, 1024 codes); fine 150 x 3 coarse codes then
  150 x 5 fine codes;
- the achieved GFLOP/s of each step, against the machine's fp32 matmul peak measured in the same run (a
  `--matmul-size` square matmul, fastest of the repetitions, ``2 n^3`` FLOPs);
- the sampling speed in tokens/s of 100 ids at batch 1, with and without the KV cache;
- the process CPU time over wall time of every timing (about the thread count when the run had the cores
  to itself).

FLOPs of a train step (forward once, backward about twice the forward), counted analytically::

    6 * P * B * T  +  12 * depth * B * T^2 * dim

with `P` the weights of every matmul (the linear layers of the blocks and the output head, not the
embedding table, norms or biases), `B * T` the tokens of the batch (`T` = BOS + prefix + target: 101, 551
and 1201 for the three stages) and the second term the attention scores and their weighted sum (``Q K^T``
and ``A V``: ``2 * 2 * T^2 * dim`` per layer and sequence in the forward, counted without the causal half).
Adam, norms and softmax are left out. The head of the coarse and fine stages spans their joint vocabulary
(3578 and 8198 ids), so it weighs much more there than in the semantic stage.

The models are :class:`LMTransformer` as our stages train them (``solver=audiolm/...``): the joint vocabulary
of :func:`~audiogen_lab.solvers.audiolm.stage_plan`, rows ``[BOS] prefix target`` packed by
:func:`~audiogen_lab.models.token_sequences.pack_sequences` (target and EOS predicted, the prefix not:
``prefix_loss_weight`` 0 as in the default config) and the loss :func:`weighted_ce`; width, depth and heads
from the harness's CFG, GELU MLP x4, no dropout. The coarse and fine samplers are :meth:`LMTransformer.generate`
with the KV cache, constrained at each position to the codes of its level by
:meth:`AcousticLayout.constrain_logits` (as :class:`~audiogen_lab.models.audiolm.AudioLM` samples).

    python scripts/bench_lm.py [--threads 2] [--warmup 2] [--reps 5] [--matmul-size 2048] [--quick]
                               [--stages semantic,coarse,fine] [--json PATH]

The harness times our side and the reference back to back through `make_adapter` (run it from the
benchmark environment, never the project's; see /work/shared/bench/README.md)::

    cd /work/shared/bench
    PYTHONPATH=/work/main/scripts /work/bench-venv/bin/python lm_bench.py --impl bench_lm:make_adapter
    /work/bench-venv/bin/python lm_bench.py
    # the acoustic samplers (slow on the reference side):
    ... lm_bench.py --only coarse_sample,fine_sample --reps 3 --warmup 1 [--impl bench_lm:make_adapter]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import typing as tp
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
for folder in (ROOT, SCRIPTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import bench_mulan  # noqa: E402
from bench_mulan import MuLaNAdapter, _timing, timed  # noqa: E402

from audiogen_lab.models.token_layout import SemanticLayout  # noqa: E402
from audiogen_lab.models.token_sequences import Sequences, pack_sequences, weighted_ce  # noqa: E402
from audiogen_lab.modules.lm_transformer import LMTransformer  # noqa: E402
from audiogen_lab.solvers.audiolm import StagePlan, stage_plan  # noqa: E402

LossFn = tp.Callable[[tp.Dict[str, torch.Tensor]], torch.Tensor]
Sampler = tp.Callable[[int], torch.Tensor]
AcousticSampler = tp.Callable[[torch.Tensor], torch.Tensor]
STAGES = ('semantic', 'coarse', 'fine')
# The LM keys of lm_bench.py's CFG (the harness passes its whole CFG to `make_adapter` and each case).
CFG: tp.Dict[str, tp.Any] = dict(
    seconds=2.0, semantic_hz=50, acoustic_hz=75, num_coarse_quantizers=3, num_fine_quantizers=5,
    codebook_size=1024, semantic_vocab=500, dim=256, depth=4, heads=4, dim_head=64, batch=4,
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
def plan_for(stage: str, cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> StagePlan:
    """The :class:`StagePlan` our solver builds for `stage` from the harness's vocabulary sizes (the
    ``audiolm`` config keys: semantic clusters, codes per level, coarse and acoustic level counts)."""
    c = dict(CFG, **(cfg or {}))
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is unknown; choose one of {list(STAGES)}.")
    num_coarse = int(c['num_coarse_quantizers'])
    audiolm = SimpleNamespace(stage=stage, cardinality=int(c['semantic_vocab']),
                              acoustic_cardinality=int(c['codebook_size']), num_coarse=num_coarse,
                              num_acoustic_levels=num_coarse + int(c['num_fine_quantizers']))
    return stage_plan(audiolm)


def build_model(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None, stage: str = 'semantic') -> LMTransformer:
    """Our untrained LM of `stage` (seeded by ``cfg['seed']``) over the stage's joint vocabulary (semantic:
    ``cfg['semantic_vocab']`` clusters and the specials)."""
    c = dict(CFG, **(cfg or {}))
    if c['dim'] // c['heads'] != c['dim_head']:
        raise ValueError(f"our heads have width dim // heads = {c['dim'] // c['heads']}, but dim_head="
                         f"{c['dim_head']}; change dim, heads or dim_head so that they agree.")
    vocab_size = plan_for(stage, c).vocab.vocab_size
    torch.manual_seed(int(c['seed']))
    return LMTransformer(vocab_size, dim=c['dim'], depth=c['depth'], heads=c['heads'], ff_mult=FF_MULT,
                         dropout=0.0, max_length=MAX_LENGTH)


def _levels_first(codes: torch.Tensor) -> torch.Tensor:
    """The harness's codes `[B, Na, Q]` -> ours `[B, Q, Na]`."""
    return codes.transpose(1, 2)


def stage_rows(plan: StagePlan, stage: str, batch: tp.Dict[str, torch.Tensor]) -> Sequences:
    """The rows ``[BOS] prefix target`` our solver packs from a harness batch of `stage` (whole items: EOS is
    the last target; the prefix is not predicted)."""
    offset = plan.vocab.offset(plan.target_part)
    prefix = None
    if stage == 'semantic':
        target = plan.target.flatten(batch['semantic_ids'])
    elif stage == 'coarse':
        prefix = plan.prefix.flatten(batch['semantic_ids'])  # type: ignore[union-attr]
        target = plan.target.flatten(_levels_first(batch['coarse_ids'])) + offset
    else:
        prefix = plan.prefix.flatten(_levels_first(batch['coarse_ids']))  # type: ignore[union-attr]
        target = plan.target.flatten(_levels_first(batch['fine_ids'])) + offset
    items = target.shape[0]

    def lengths(ids: torch.Tensor) -> torch.Tensor:
        return torch.full((items,), ids.shape[1], dtype=torch.long, device=ids.device)
    return pack_sequences(target, lengths(target), torch.ones(items, dtype=torch.bool, device=target.device),
                          bos_id=plan.bos_id, pad_id=plan.pad_id, eos_id=plan.eos_id, prefix=prefix,
                          prefix_lengths=None if prefix is None else lengths(prefix), prefix_weight=0.0)


def stage_loss(model: LMTransformer, plan: StagePlan, stage: str, batch: tp.Dict[str, torch.Tensor]
               ) -> torch.Tensor:
    """The training loss of our solver on a harness batch: :func:`weighted_ce` of the logits of the packed rows."""
    rows = stage_rows(plan, stage, batch)
    return weighted_ce(model(rows.inputs), rows)


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


def make_acoustic_sampler(model: LMTransformer, plan: StagePlan, stage: str, frames: tp.Optional[int] = None,
                          top_k: tp.Optional[int] = None) -> AcousticSampler:
    """The coarse or fine sampler of the harness: `fn(prefix) -> codes [1, Na, Q]` drawn at temperature 1 after
    ``[BOS] prefix`` (coarse: semantic ids `[1, Ns]`, `frames` frames; fine: coarse codes `[1, Na, Qc]`, as many
    frames), each token constrained to the codes of its level (never EOS)."""
    target, offset = plan.target, plan.vocab.offset(plan.target_part)

    def constrain(logits: torch.Tensor, step: int) -> torch.Tensor:
        return target.constrain_logits(logits, step, offset=offset, allow_eos=False)  # type: ignore[union-attr]

    def sample(prefix_ids: torch.Tensor) -> torch.Tensor:
        if stage == 'coarse':
            if frames is None:
                raise ValueError("The coarse sampler needs the number of frames to draw.")
            prefix, num_frames = plan.prefix.flatten(prefix_ids), frames  # type: ignore[union-attr]
        else:
            prefix, num_frames = plan.prefix.flatten(_levels_first(prefix_ids)), prefix_ids.shape[1]  # type: ignore
        prompt = torch.cat([prefix.new_full((prefix.shape[0], 1), plan.bos_id), prefix], dim=1)
        out = model.generate(prompt, num_frames * target.num_levels, temperature=1.0, top_k=top_k,  # type: ignore
                             use_cache=True, logits_processor=constrain)
        return _levels_first(target.unflatten(out[:, prompt.shape[1]:] - offset))  # type: ignore[union-attr]
    return sample


class LMAdapter:
    """The adapter of ``lm_bench.py --impl bench_lm:make_adapter``: every case is ours (the three AudioLM stages,
    their samplers and MuLaN)."""

    def __init__(self, mulan_adapter: MuLaNAdapter) -> None:
        self._mulan = mulan_adapter

    def semantic(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[LMTransformer, LossFn]:
        """A fresh model of the harness's sizes and its `loss_fn({'semantic_ids': [B, N]}) -> scalar`."""
        return self._stage('semantic', cfg)

    def semantic_sampler(self, cfg: tp.Dict[str, tp.Any], use_kv_cache: bool = True) -> Sampler:
        """`fn(num_tokens) -> [1, num_tokens]` from a fresh model in eval mode (top-k from ``cfg['top_k']``)."""
        model = build_model(cfg).eval()
        return make_sampler(model, SemanticLayout(int(cfg['semantic_vocab'])), use_kv_cache, cfg.get('top_k'))

    def _stage(self, stage: str, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[LMTransformer, LossFn]:
        model, plan = build_model(cfg, stage), plan_for(stage, cfg)
        return model, lambda batch: stage_loss(model, plan, stage, batch)

    def coarse(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[LMTransformer, LossFn]:
        """A fresh coarse LM and its `loss_fn({'semantic_ids': [B, Ns], 'coarse_ids': [B, Na, Qc]}) -> scalar`."""
        return self._stage('coarse', cfg)

    def fine(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[LMTransformer, LossFn]:
        """A fresh fine LM and its `loss_fn({'coarse_ids': [B, Na, Qc], 'fine_ids': [B, Na, Qf]}) -> scalar`."""
        return self._stage('fine', cfg)

    def coarse_sampler(self, cfg: tp.Dict[str, tp.Any]) -> AcousticSampler:
        """`fn(semantic_ids [1, Ns]) -> coarse codes [1, Na, Qc]` from a fresh coarse LM in eval mode."""
        frames = int(round(cfg['seconds'] * cfg['acoustic_hz']))
        return make_acoustic_sampler(build_model(cfg, 'coarse').eval(), plan_for('coarse', cfg), 'coarse', frames,
                                     cfg.get('top_k'))

    def fine_sampler(self, cfg: tp.Dict[str, tp.Any]) -> AcousticSampler:
        """`fn(coarse_ids [1, Na, Qc]) -> fine codes [1, Na, Qf]` from a fresh fine LM in eval mode."""
        return make_acoustic_sampler(build_model(cfg, 'fine').eval(), plan_for('fine', cfg), 'fine',
                                     top_k=cfg.get('top_k'))

    def mulan(self, cfg: tp.Dict[str, tp.Any]) -> tp.Tuple[nn.Module, LossFn]:
        """Our MuLaN, as ``bench_mulan.py`` builds it."""
        return self._mulan.mulan(cfg)


def make_adapter(cfg: tp.Dict[str, tp.Any]) -> LMAdapter:
    """Factory for the harness (which passes its CFG dict again to each case: sizes, vocabulary, seed)."""
    return LMAdapter(bench_mulan.make_adapter(cfg))


# -- measurement ----------------------------------------------------------------------------------------
def make_batch(cfg: tp.Optional[tp.Dict[str, tp.Any]] = None) -> tp.Dict[str, torch.Tensor]:
    """Seeded semantic ids ``[B, Ns]`` in [0, semantic_vocab) of the harness's shape, with no id repeated
    consecutively (like the harness's, though not the same draws), and codes ``coarse_ids [B, Na, Qc]``,
    ``fine_ids [B, Na, Qf]`` in [0, codebook_size)."""
    c = dict(CFG, **(cfg or {}))
    g = torch.Generator().manual_seed(int(c['seed']))
    length = int(round(c['seconds'] * c['semantic_hz']))
    vocab = int(c['semantic_vocab'])
    if vocab < 2:
        raise ValueError(f"semantic_vocab must be at least 2 to draw ids without repeats, got {vocab}.")
    first = torch.randint(0, vocab, (c['batch'], 1), generator=g)
    steps = torch.randint(1, vocab, (c['batch'], max(length - 1, 0)), generator=g)  # never 0: no repeat
    ids = torch.cat([first, steps], dim=1).cumsum(dim=1) % vocab
    frames, codes = int(round(c['seconds'] * c['acoustic_hz'])), int(c['codebook_size'])
    coarse = torch.randint(0, codes, (c['batch'], frames, c['num_coarse_quantizers']), generator=g)
    fine = torch.randint(0, codes, (c['batch'], frames, c['num_fine_quantizers']), generator=g)
    return {'semantic_ids': ids[:, :length], 'coarse_ids': coarse, 'fine_ids': fine}


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


def bench_train(model: LMTransformer, loss_fn: LossFn, batch: tp.Dict[str, torch.Tensor], warmup: int,
                reps: int, lr: float = CFG['lr']) -> tp.Dict[str, tp.Any]:
    """Training steps as the harness times them: zero_grad, loss, backward, Adam step (train mode)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    last = {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(batch)
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
    ap.add_argument('--stages', default=','.join(STAGES), help='train steps to time, among ' + ','.join(STAGES))
    ap.add_argument('--json', default=None, help='write the figures here')
    return ap.parse_args(argv)


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
    stages = [stage for stage in args.stages.split(',') if stage]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--stages {unknown} unknown; choose among {','.join(STAGES)}.")
    batch = make_batch(cfg)
    n = batch['semantic_ids'].shape[1]
    train = {}
    for stage in stages:
        model, plan = build_model(cfg, stage), plan_for(stage, cfg)
        rows = stage_rows(plan, stage, batch)
        flops = train_step_flops(model, *rows.inputs.shape)
        res = bench_train(model, functools.partial(stage_loss, model, plan, stage), batch, cfg['warmup'],
                          cfg['reps'], cfg['lr'])
        train[stage] = dict(res, gflops=flops / res['median_s'] / 1e9, flops=flops, rows=list(rows.inputs.shape),
                            vocab_size=plan.vocab.vocab_size, parameters=sum(p.numel() for p in model.parameters()),
                            matmul_parameters=matmul_params(model))
    peak = matmul_peak(args.matmul_size, cfg['warmup'], cfg['reps'])
    sample = {}
    for name, use_cache in (('kv-cache', True), ('no-cache', False)):
        sampler = make_adapter(cfg).semantic_sampler(cfg, use_kv_cache=use_cache)
        sample[name] = bench_sample(sampler, n, cfg['warmup'], cfg['reps'], cfg['seed'])
    vocab = SemanticLayout(int(cfg['semantic_vocab'])).vocab_size
    notes = [note.format(ff_mult=FF_MULT, vocab=vocab) for note in REFERENCE_NOTES]
    res = {'cfg': cfg, 'stages': train, 'matmul_peak': peak, 'sample': sample, 'reference_differences': notes,
           'torch': torch.__version__, 'python': platform.python_version(),
           'loadavg_start': list(loadavg_start), 'loadavg_end': list(os.getloadavg())}
    if 'semantic' in train:  # the keys of the semantic-only report
        semantic = train['semantic']
        res.update(vocab_size=semantic['vocab_size'], parameters=semantic['parameters'], train=semantic,
                   matmul_parameters=semantic['matmul_parameters'], train_flops=semantic['flops'])

    print(f"AudioLM token LM benchmark (ours): width {cfg['dim']}, depth {cfg['depth']}, {cfg['heads']} heads; "
          f"{args.threads} threads, median of {cfg['reps']} after {cfg['warmup']} warm-up (torch {torch.__version__})")
    for stage, figures in train.items():
        b, length = figures['rows']
        shape = f"N={n} + BOS" if stage == 'semantic' else f"T={length}"
        print(f"{stage}: vocabulary {figures['vocab_size']}, parameters {figures['parameters']:,} "
              f"({figures['matmul_parameters']:,} in matmuls), rows [BOS] prefix target of {length} tokens")
        print(f"  train step (B={b}, {shape}) {_timing(figures)}  loss {figures['loss']:.3f}")
        print(f"  train step FLOPs 6*P*B*T + 12*depth*B*T^2*dim = {figures['flops'] / 1e9:.3f} GFLOP -> "
              f"{figures['gflops']:.2f} GFLOP/s, {100 * figures['gflops'] / peak['gflops']:.1f}% of the fp32 "
              "matmul peak")
    print(f"fp32 matmul peak ({peak['size']}x{peak['size']}, fastest run) {_timing(peak)}  "
          f"{peak['gflops']:.2f} GFLOP/s")
    for name, s in sample.items():
        print(f"semantic sample {name:<8} (B=1, {s['tokens']} tokens) {_timing(s)}  {s['tokens_per_s']:.1f} tok/s")
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
