#!/usr/bin/env python
"""Benchmark our SoundStreamModel against audiolm-pytorch's `SoundStream` at the same size.

Prints, in one run on the same machine (cases are interleaved, alternating their order, so that load
affects both alike):
- the parameter count of both generators (encoder, quantizer, decoder; no discriminators) and their ratio;
- the training step time (forward, L1 + multi-scale mel + commitment losses, backward, Adam step) at
  16 kHz, batch 8 x 1 s, 8 residual-VQ codebooks of 1024 entries, with the FLOPs of one step, the achieved
  GFLOP/s and their fraction of the machine's dense-matmul peak measured at the start;
- encode and decode real-time factors (seconds of compute per second of audio) on 10 s of audio;
- the step-time ratio ours / reference against the target (<= 1.0, aim 0.8), the real-time-factor
  ratios, and the load average before and after.

    python scripts/bench_soundstream.py [--steps 5] [--batch 8] [--repeats 5] [--threads N]
                                        [--max-load 0.7] [--max-wait 900]

Before timing, the script waits until the 1-minute load average is below `--max-load` (polling every
20 s, at most `--max-wait` seconds; then it runs anyway and says so). The cpu/wall column is the CPU time
over the wall time: about the number of threads when the run had the machine to itself.

The same configuration on both sides: 32 channels after the first convolution, doubled at each of the
strides 2, 4, 5, 8 (hop 320, 50 frames/s), three causal residual units with dilations 1, 3, 9 per
resolution, ELU, latent and codebook dimension 128, no attention at the bottleneck, EMA codebooks
(decay 0.99, k-means initialisation, dead codes below 2 replaced), commitment weight 1, plain
straight-through gradients (the reference's rotation trick is turned off) and no quantizer dropout (every
step runs all 8 levels; the reference's dropout is switched off on its instance). The reference's
`forward` also runs its discriminators and its own losses, so its step calls its encoder, quantizer and
decoder directly and then the same losses as ours. Left as each implementation has them: our weight norm
on every convolution, the padding modes (ours zeros, the reference reflection) and the last decoder
kernel (ours 3 taps, the reference 7).

The reference is optional: without it, only our figures are printed. Install it in a separate virtual
environment, never in the project's (`make install` installs torch from this machine's pip indexes)::

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.14.1 torchaudio==2.11.0
    /work/bench-venv/bin/pip install --no-deps audiolm-pytorch==2.4.0
    /work/bench-venv/bin/pip install accelerate beartype einops ema-pytorch encodec==0.1.1 \\
        gateloop-transformer hyper-connections joblib local-attention pytorch-warmup scikit-learn \\
        sentencepiece transformers tqdm vector-quantize-pytorch==1.32.0 wandb \\
        'hydra-core>=1.3,<1.4' omegaconf dora-search==0.1.13 flashy==0.0.2 julius soundfile numpy
    /work/bench-venv/bin/pip install --no-deps -e .
    /work/bench-venv/bin/python scripts/bench_soundstream.py

audiolm-pytorch imports `fairseq`, which does not import on Python >= 3.11 and is only needed by its
HuBERT / wav2vec wrappers: when it is missing this script registers an empty placeholder module.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import math
import os
import statistics
import sys
import time
import types
import typing as tp
import warnings
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_compression import count_flops, load, matmul_peak, timed  # noqa: E402

from audiogen_lab.losses import MultiScaleMelSpectrogramLoss  # noqa: E402
from audiogen_lab.models.builders import get_compression_model  # noqa: E402

SAMPLE_RATE = 16_000
N_Q = 8
BINS = 1024
CHANNELS = 32              # channels after the first convolution, doubled at each stride
STRIDES = (2, 4, 5, 8)     # encoder order
DIMENSION = 128            # latent and codebook dimension
EMA_DECAY = 0.99
RTF_SECONDS = 10.0
TARGET, AIM = 1.0, 0.8     # step time ours / reference
OURS, REFERENCE = "audiogen_lab SoundStream", "audiolm-pytorch SoundStream"
INSTALL_HINT = ("audiolm-pytorch is not installed here: only our figures are printed. Install the reference in "
                "a separate venv as this script's docstring says (python scripts/bench_soundstream.py --help), "
                "e.g. /work/bench-venv, and run the script with that venv's python.")

Step = tp.Callable[[], None]


# -- models ----------------------------------------------------------------------------------------

def our_model() -> nn.Module:
    """Our SoundStreamModel from the 16 kHz preset, every benchmarked size pinned by an override."""
    from audiogen_lab.train import main
    overrides = [
        "solver=compression/soundstream_16khz",
        f"soundstream_net.n_filters={CHANNELS}",
        f"soundstream_net.ratios=[{','.join(str(s) for s in reversed(STRIDES))}]",
        f"soundstream_net.dimension={DIMENSION}",
        "soundstream_net.transformer.num_layers=0",
        "soundstream.quantizer=rvq",
        f"rvq.n_q={N_Q}", f"rvq.bins={BINS}", f"rvq.decay={EMA_DECAY}", "rvq.q_dropout=false",
        "rvq.kmeans_init=true", "rvq.threshold_ema_dead_code=2", "rvq.commitment_weight=1.0",
    ]
    torch.manual_seed(0)
    return get_compression_model(main.get_xp(overrides).cfg)


def reference_model() -> tp.Optional[nn.Module]:
    """audiolm-pytorch's SoundStream at our size, or None when the package is not installed."""
    if importlib.util.find_spec("audiolm_pytorch") is None:
        return None
    try:
        import fairseq  # noqa: F401
    except Exception:  # missing, or broken on Python >= 3.11; only its HuBERT wrappers use it
        sys.modules["fairseq"] = types.ModuleType("fairseq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from audiolm_pytorch import SoundStream
        torch.manual_seed(0)
        model = SoundStream(
            channels=CHANNELS, strides=STRIDES, codebook_dim=DIMENSION, codebook_size=BINS,
            rq_num_quantizers=N_Q, rq_ema_decay=EMA_DECAY, rq_commitment_weight=1.0, rq_rotation_trick=False,
            use_local_attn=False, target_sample_hz=SAMPLE_RATE)
    for rvq in model.rq.rvqs:  # its constructor always turns quantizer dropout on
        assert hasattr(rvq, "quantize_dropout"), \
            "audiolm-pytorch's quantizer has no `quantize_dropout` switch: install vector-quantize-pytorch==1.32.0"
        rvq.quantize_dropout = False
    return model


def generator_parameters(model: nn.Module) -> tp.List[nn.Parameter]:
    """The parameters a generator step trains: the reference holds its discriminators in the same module."""
    if hasattr(model, "non_discr_parameters"):
        return list(model.non_discr_parameters())
    return list(model.parameters())


def reference_forward(model: nn.Module, x: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction [B, 1, T] and summed commitment loss of the reference's encoder, quantizer and
    decoder, without the discriminators and losses its `forward` adds."""
    latents = rearrange(model.encoder(x), "b d t -> b t d")
    quantized, _, commitment = model.rq(latents)
    return model.decoder(rearrange(quantized, "b t d -> b d t")), commitment.sum()


# -- training step ---------------------------------------------------------------------------------

def init_codebooks(models: tp.Dict[str, nn.Module]) -> None:
    """Initialise every codebook with k-means, as the first training batch would, on enough latent
    frames for all the codes (a benchmark batch of 8 x 1 s has 400 for 1024 codes)."""
    seconds = math.ceil(BINS * math.prod(STRIDES) / SAMPLE_RATE)
    x = 0.1 * torch.randn(1, 1, seconds * SAMPLE_RATE)
    with torch.no_grad():
        for name, model in models.items():
            if name == OURS:
                model.train()(x)
            else:
                reference_forward(model.train(), x)


def make_steps(x: torch.Tensor, models: tp.Dict[str, nn.Module]) -> tp.Dict[str, Step]:
    """One generator training step per model: the same losses on each model's reconstruction of `x`."""
    msspec = MultiScaleMelSpectrogramLoss(SAMPLE_RATE, normalized=True)

    def losses(y: torch.Tensor, commitment: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(y, x) + msspec(y, x) + commitment

    def step(name: str, model: nn.Module) -> Step:
        optimizer = torch.optim.Adam(generator_parameters(model), 3e-4)

        def run() -> None:
            if name == OURS:
                result = model(x)
                loss = losses(result.x, result.penalty)
            else:
                loss = losses(*reference_forward(model, x))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    return {name: step(name, model.train()) for name, model in models.items()}


def interleave(cases: tp.Dict[str, Step], repeats: int) -> tp.Dict[str, tp.List[tp.Tuple[float, float]]]:
    """(wall, cpu) seconds of `repeats` calls of each case, alternating the order of the cases."""
    times: tp.Dict[str, tp.List[tp.Tuple[float, float]]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed(cases[name]))
    return times


def bench_training(models: tp.Dict[str, nn.Module], steps: int, batch: int, peak: float) -> tp.Dict[str, float]:
    """Interleaved training steps; prints the table and returns the median step time of each model."""
    torch.manual_seed(0)
    x = 0.1 * torch.randn(batch, 1, SAMPLE_RATE)
    init_codebooks(models)
    runs = make_steps(x, models)
    for fn in runs.values():  # allocator warm-up
        fn()
        fn()
    flops = {name: count_flops(fn) for name, fn in runs.items()}
    print(f"\nTraining step, {SAMPLE_RATE // 1000} kHz, batch {batch} x 1 s, {N_Q} codebooks x {BINS} "
          f"(median of {steps}); {load()}", flush=True)
    times = interleave(runs, steps)
    medians = {name: statistics.median(w for w, _ in values) for name, values in times.items()}
    print(f"{'model':<30}{'step (s)':>10}{'cpu/wall':>10}{'vs ref':>9}{'GFLOP':>9}{'GFLOP/s':>9}{'of peak':>9}")
    for name, values in times.items():
        wall = medians[name]
        ratio = sum(c for _, c in values) / sum(w for w, _ in values)
        versus = f"{wall / medians[REFERENCE]:>8.2f}x" if REFERENCE in medians else f"{'-':>9}"
        rate = flops[name] / wall / 1e9
        print(f"{name:<30}{wall:>10.3f}{ratio:>10.2f}{versus}{flops[name] / 1e9:>9.1f}{rate:>9.1f}{rate / peak:>9.1%}")
    return medians


# -- encode / decode -------------------------------------------------------------------------------

def codec_cases(name: str, model: nn.Module, x: torch.Tensor) -> tp.Dict[str, Step]:
    """Encode and decode calls of `model` on `x` [1, 1, T] through its public API, in eval mode."""
    model.eval()
    if name == OURS:
        codes, scale = model.encode(x)
        return {f"{name} encode": lambda: model.encode(x), f"{name} decode": lambda: model.decode(codes, scale)}
    codes = model.tokenize(x)
    return {f"{name} encode": lambda: model.tokenize(x),
            f"{name} decode": lambda: model.decode_from_codebook_indices(codes)}


def bench_rtf(models: tp.Dict[str, nn.Module], repeats: int) -> tp.Dict[str, float]:
    """Interleaved encode/decode real-time factors; prints them and returns the median of each case."""
    torch.manual_seed(0)
    x = 0.1 * torch.randn(1, 1, int(RTF_SECONDS * SAMPLE_RATE))
    with torch.no_grad():
        cases: tp.Dict[str, Step] = {}
        for name, model in models.items():
            cases.update(codec_cases(name, model, x))
        order = sorted(cases, key=lambda case: (not case.endswith("encode"), case))  # encodes, then decodes
        cases = {case: cases[case] for case in order}
        for fn in cases.values():
            fn()
        print(f"\nReal-time factor on {RTF_SECONDS:.0f} s of audio (compute seconds per audio second, lower is "
              f"better; median of {repeats}); {load()}", flush=True)
        times = interleave(cases, repeats)
    print(f"{'case':<38}{'RTF':>10}{'cpu/wall':>10}")
    rtf = {}
    for case, values in times.items():
        rtf[case] = statistics.median(w for w, _ in values) / RTF_SECONDS
        print(f"{case:<38}{rtf[case]:>10.4f}{sum(c for _, c in values) / sum(w for w, _ in values):>10.2f}")
    return rtf


# -- report ----------------------------------------------------------------------------------------

def report_parameters(models: tp.Dict[str, nn.Module]) -> None:
    counts = {name: sum(p.numel() for p in generator_parameters(model)) for name, model in models.items()}
    print("\nGenerator parameters (encoder, quantizer, decoder; no discriminators)")
    for name, count in counts.items():
        print(f"{name:<30}{count / 1e6:>8.3f} M")
    if REFERENCE in counts:
        print(f"{'ours / reference':<30}{counts[OURS] / counts[REFERENCE]:>8.3f}x")


def report_targets(step: tp.Dict[str, float], rtf: tp.Dict[str, float]) -> None:
    ratio = step[OURS] / step[REFERENCE]
    verdict = "met" if ratio <= TARGET else "NOT met"
    aim = "reached" if ratio <= AIM else "not reached"
    print("\nOurs / reference")
    print(f"{'train step':<12}{ratio:>7.2f}x   target <= {TARGET:.2f}x {verdict}; aim {AIM:.2f}x {aim}")
    for what in ("encode", "decode"):
        print(f"{what + ' RTF':<12}{rtf[f'{OURS} {what}'] / rtf[f'{REFERENCE} {what}']:>7.2f}x   (no target)")


def wait_for_quiet_machine(max_load: float, max_wait: float, poll: float = 20.0) -> None:
    """Wait until the 1-minute load average is below `max_load`, polling every `poll` s for `max_wait` s."""
    if max_load <= 0:
        return
    start = time.monotonic()
    while os.getloadavg()[0] >= max_load:
        waited = time.monotonic() - start
        if waited >= max_wait:
            print(f"The 1-minute load average stayed >= {max_load} for {waited:.0f} s: running anyway; "
                  f"other processes will inflate the timings ({load()}).", flush=True)
            return
        print(f"Waiting for the 1-minute load average to drop below {max_load} ({load()})", flush=True)
        time.sleep(poll)


def versions() -> str:
    found = []
    for package in ("torch", "vector-quantize-pytorch", "audiolm-pytorch"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed encode and decode calls per model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-load", type=float, default=0.7,
                        help="wait for the 1-minute load average to drop below this first (0: do not wait)")
    parser.add_argument("--max-wait", type=float, default=900, help="seconds to wait at most for --max-load")
    args = parser.parse_args()
    assert args.steps >= 1 and args.repeats >= 1 and args.batch >= 1, "--steps, --repeats, --batch must be >= 1"
    if args.threads:
        torch.set_num_threads(args.threads)
    wait_for_quiet_machine(args.max_load, args.max_wait)
    print(f"{versions()}; {torch.get_num_threads()} threads; {load()}")
    models = {OURS: our_model()}
    reference = reference_model()
    if reference is None:
        print(INSTALL_HINT)
    else:
        models[REFERENCE] = reference
    peak = matmul_peak(torch.float32)
    print(f"Dense-matmul peak, 2048x2048 float32: {peak:.1f} GFLOP/s")
    report_parameters(models)
    step = bench_training(models, args.steps, args.batch, peak)
    rtf = bench_rtf(models, args.repeats)
    if reference is not None:
        report_targets(step, rtf)
    else:
        print(f"\n{INSTALL_HINT}")
    print(f"\n{load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
