#!/usr/bin/env python
"""Benchmark our EncodecModel against the `encodec` package's model at the same configuration.

Prints, in one run on the same machine (cases are interleaved so that load affects both alike):
- the CPU's bfloat16 status: AVX-512 BF16 / AMX flags and a measured bf16-vs-fp32 matmul time ratio;
- the machine's dense-matmul peak, measured now (float32, and bfloat16 where it is native);
- training step time (forward, L1 + multi-scale mel + commitment losses, backward, Adam step) at
  24 kHz, batch 8 x 1 s, 8 codebooks of 1024 entries, in float32 and (ours) under bf16 autocast where
  bf16 is native, with the FLOPs of one step (torch.utils.flop_counter), the achieved GFLOP/s and
  their fraction of the measured peak;
- encode and decode real-time factors (seconds of compute per second of audio) on 10 s of audio;
- the ratios ours / package against the targets, and the load average before and after.

    python scripts/bench_compression.py [--steps 10] [--batch 8] [--threads N] [--force-bf16]
    python scripts/bench_compression.py --quality [--updates 600]   # quality table, see quality_compression.py

The cpu/wall column is the CPU time over the wall time: about the number of threads when the run had
the machine to itself. Where bfloat16 is emulated (AVX2-only CPUs) a bf16 step is hundreds of times
slower than float32, so it is skipped unless `--force-bf16`.
Targets: fp32 step <= 0.85x the package's, bf16 step <= 0.6x (where native), encode and decode
real-time factors <= 0.9x the package's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import typing as tp
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402

from audiogen_lab.losses import MultiScaleMelSpectrogramLoss  # noqa: E402
from audiogen_lab.models.builders import get_compression_model  # noqa: E402
from audiogen_lab.utils.autocast import bf16_support, cpu_bf16_slowdown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 24_000
N_Q = 8
BANDWIDTH = 6.0  # kbps: 8 codebooks of 10 bits at 75 Hz
TARGETS = {"fp32 step": 0.85, "bf16 step": 0.6, "encode RTF": 0.9, "decode RTF": 0.9}
OURS_FP32, OURS_BF16, PACKAGE_FP32 = "audiogen_lab fp32", "audiogen_lab bf16 autocast", "encodec package fp32"


def our_model() -> torch.nn.Module:
    """Our EncodecModel configured like the package's 24 kHz model."""
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "config/model/encodec/default.yaml"), {
        "sample_rate": SAMPLE_RATE, "channels": 1,
        "encodec": {"causal": True},
        "seanet": {"pad_mode": "reflect", "true_skip": False},
        "rvq": {"n_q": N_Q, "bins": 1024},
    })
    return get_compression_model(cfg)


def package_model() -> torch.nn.Module:
    import encodec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(BANDWIDTH)
    return model


def timed(fn: tp.Callable[[], tp.Any]) -> tp.Tuple[float, float]:
    """Wall and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(*os.getloadavg())


# -- machine ---------------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Dense-matmul GFLOP/s of this machine now: best of `repeats` [size, size] products in `dtype`."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def report_cpu(force_bf16: bool) -> bool:
    """Print the CPU's bfloat16 status; True when the bf16 autocast case should run."""
    support = bf16_support("cpu")
    print(f"CPU: AVX-512 BF16 {torch.cpu._is_avx512_bf16_supported()}, AMX {torch.cpu._is_amx_tile_supported()}, "
          f"measured bf16/fp32 matmul time (256x256, 1 thread) {cpu_bf16_slowdown():.1f}x")
    if support.native:
        print(f"bfloat16 is native: {support.reason}; the bf16 autocast case runs.")
        return True
    if force_bf16:
        print(f"bfloat16 is NOT native ({support.reason}); running the bf16 case anyway (--force-bf16): "
              "expect it to be far slower than float32.")
        return True
    print(f"bfloat16 is NOT native ({support.reason}): skipping the bf16 autocast case "
          "(--force-bf16 runs it).")
    return False


# -- FLOP counting ---------------------------------------------------------------------------------

def _lstm_flops(input_shape: tp.Sequence[int], weight_ih: tp.Sequence[int], weight_hh: tp.Sequence[int]) -> int:
    """Matmul FLOPs of one LSTM layer over a whole sequence: 2 * frames * 4H * (I + H)."""
    frames = input_shape[0] * input_shape[1]
    return 2 * frames * weight_ih[0] * (weight_ih[1] + weight_hh[1])


def _lstm_forward_flops(input, weight0, weight1, *args, **kwargs) -> int:  # noqa: ANN001
    return _lstm_flops(input, weight0, weight1)


def _lstm_backward_flops(input, weight1, weight2, *args, **kwargs) -> int:  # noqa: ANN001
    return 2 * _lstm_flops(input, weight1, weight2)  # gradients of the inputs and of the weights


# torch's flop counter knows matmuls and convolutions but not the fused CPU LSTM kernels
LSTM_FLOP_FORMULAS = {torch.ops.aten.mkldnn_rnn_layer: _lstm_forward_flops,
                      torch.ops.aten.mkldnn_rnn_layer_backward: _lstm_backward_flops}


def count_flops(fn: tp.Callable[[], tp.Any]) -> int:
    """Dense FLOPs (matmuls, convolutions, LSTMs; forward and backward) of one call of `fn`."""
    with FlopCounterMode(display=False, custom_mapping=LSTM_FLOP_FORMULAS) as counter:
        fn()
    return counter.get_total_flops()


# -- training step ---------------------------------------------------------------------------------

def make_steps(x: torch.Tensor, bf16: bool) -> tp.Dict[str, tp.Callable[[], None]]:
    msspec = MultiScaleMelSpectrogramLoss(SAMPLE_RATE, normalized=True)
    ours, theirs = our_model().train(), package_model().train()
    opt_ours = torch.optim.Adam(ours.parameters(), 3e-4)
    opt_theirs = torch.optim.Adam(theirs.parameters(), 3e-4)

    def losses(y: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
        y = y.float()
        return torch.nn.functional.l1_loss(y, x) + msspec(y, x) + penalty

    def step_ours(autocast: bool) -> tp.Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                res = ours(x)
            losses(res.x, res.penalty).backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
        return run

    def step_theirs() -> None:
        emb = theirs.encoder(x)
        res = theirs.quantizer(emb, theirs.frame_rate, BANDWIDTH)
        y = theirs.decoder(res.quantized)[..., :x.shape[-1]]
        losses(y, res.penalty).backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)

    steps = {OURS_FP32: step_ours(False), PACKAGE_FP32: step_theirs}
    if bf16:
        steps[OURS_BF16] = step_ours(True)
    return steps


def bench_training(steps: int, batch: int, bf16: bool, peaks: tp.Dict[str, float]) -> tp.Dict[str, float]:
    """Interleaved training steps; prints the table and returns the median step time of each case."""
    torch.manual_seed(0)
    x = 0.1 * torch.randn(batch, 1, SAMPLE_RATE)
    runs = make_steps(x, bf16)
    for fn in runs.values():  # k-means initialisation and allocator warm-up
        fn()
        fn()
    flops = {name: count_flops(fn) for name, fn in runs.items()}
    times: tp.Dict[str, tp.List[tp.Tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    print(f"\nTraining step, 24 kHz, batch {batch} x 1 s, {N_Q} codebooks x 1024 (median of {steps})")
    print(f"{'model':<30}{'step (s)':>10}{'cpu/wall':>10}{'vs package':>12}{'GFLOP':>9}{'GFLOP/s':>9}"
          f"{'of peak':>9}")
    medians = {name: statistics.median(w for w, _ in values) for name, values in times.items()}
    for name, values in times.items():
        wall = medians[name]
        ratio = sum(c for _, c in values) / sum(w for w, _ in values)
        rate = flops[name] / wall / 1e9
        peak = peaks["bf16"] if name == OURS_BF16 and "bf16" in peaks else peaks["fp32"]
        print(f"{name:<30}{wall:>10.3f}{ratio:>10.2f}{wall / medians[PACKAGE_FP32]:>11.2f}x"
              f"{flops[name] / 1e9:>9.1f}{rate:>9.1f}{rate / peak:>9.1%}")
    return medians


# -- encode / decode -------------------------------------------------------------------------------

def bench_rtf(seconds: float = 10.0, repeats: int = 5) -> tp.Dict[str, float]:
    """Interleaved encode/decode real-time factors; prints them and returns the median of each case."""
    torch.manual_seed(0)
    x = 0.1 * torch.randn(1, 1, int(seconds * SAMPLE_RATE))
    ours, theirs = our_model(), package_model().eval()
    with torch.no_grad():
        ours.train()(x.repeat(2, 1, 1))  # k-means codebook initialisation on enough vectors
        ours.eval()
        codes_ours, scale = ours.encode(x)
        frames = theirs.encode(x)
        cases = {
            "audiogen_lab encode": lambda: ours.encode(x),
            "encodec package encode": lambda: theirs.encode(x),
            "audiogen_lab decode": lambda: ours.decode(codes_ours, scale),
            "encodec package decode": lambda: theirs.decode(frames),
        }
        walls: tp.Dict[str, tp.List[float]] = {name: [] for name in cases}
        for fn in cases.values():
            fn()
        for _ in range(repeats):
            for name, fn in cases.items():
                walls[name].append(timed(fn)[0])
    print(f"\nReal-time factor on {seconds:.0f} s of audio (compute seconds per audio second, lower is better; "
          f"median of {repeats})")
    rtf = {name: statistics.median(values) / seconds for name, values in walls.items()}
    for name, value in rtf.items():
        print(f"{name:<30}{value:>10.4f}")
    return rtf


def report_targets(step: tp.Dict[str, float], rtf: tp.Dict[str, float], peaks: tp.Dict[str, float]) -> None:
    ratios = {"fp32 step": step[OURS_FP32] / step[PACKAGE_FP32],
              "encode RTF": rtf["audiogen_lab encode"] / rtf["encodec package encode"],
              "decode RTF": rtf["audiogen_lab decode"] / rtf["encodec package decode"]}
    if OURS_BF16 in step:
        ratios["bf16 step"] = step[OURS_BF16] / step[PACKAGE_FP32]
    print("\nOurs / package against the targets")
    for name, target in TARGETS.items():
        if name in ratios:
            verdict = "met" if ratios[name] <= target else "NOT met"
            if name == "bf16 step" and peaks.get("bf16", 0.0) < peaks["fp32"]:
                verdict += (f" (bf16 matmuls peak at {peaks['bf16']:.0f} GFLOP/s here, below fp32's "
                            f"{peaks['fp32']:.0f}: the target needs a CPU whose bf16 beats fp32, e.g. with AMX)")
            print(f"{name:<14}{ratios[name]:>7.2f}x   target <= {target:.2f}x   {verdict}")
        else:
            print(f"{name:<14}{'-':>7}    target <= {target:.2f}x   not run (bfloat16 is not native here)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--force-bf16", action="store_true", help="run the bf16 case even where it is emulated")
    parser.add_argument("--quality", action="store_true",
                        help="train EnCodec, EnCodec-MMD and SoundStream at equal budget and print a quality table")
    parser.add_argument("--updates", type=int, default=600, help="--quality: updates per codec")
    parser.add_argument("--dataset", default="dataset/example", help="--quality: example dataset folder")
    args = parser.parse_args()
    if args.quality:
        from quality_compression import run_quality
        return run_quality(args.updates, Path(args.dataset))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load()}")
    bf16 = report_cpu(args.force_bf16)
    peaks = {"fp32": matmul_peak(torch.float32)}
    if bf16_support("cpu").native:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print("Dense-matmul peak, 2048x2048: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    if peaks.get("bf16", float("inf")) < peaks["fp32"]:
        print("bfloat16 is native but slower than float32 on this CPU (no matrix unit): autocast cannot speed "
              "training up here.")
    step = bench_training(args.steps, args.batch, bf16, peaks)
    rtf = bench_rtf()
    report_targets(step, rtf, peaks)
    # other processes on the machine lower a single peak measurement: measure again and keep the best
    again = {"fp32": matmul_peak(torch.float32)}
    if "bf16" in peaks:
        again["bf16"] = matmul_peak(torch.bfloat16)
    print("\nDense-matmul peak measured again after the run: "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in again.items())
          + "; the fractions of peak above used the first measurement: scale them by first / best "
          + "if the two differ much.")
    print(f"\n{load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
