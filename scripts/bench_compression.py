#!/usr/bin/env python
"""Benchmark our EncodecModel against the `encodec` package's model at the same configuration.

Prints, in one run on the same machine (runs are interleaved so that load affects both alike):
- training step time (forward, L1 + multi-scale mel + commitment losses, backward, Adam step) at
  24 kHz, batch 8 x 1 s, 8 codebooks of 1024 entries, in float32 and (ours) under bf16 autocast;
- encode and decode real-time factors (seconds of compute per second of audio) on 10 s of audio.

    python scripts/bench_compression.py [--steps 10] [--batch 8] [--threads N]

The cpu/wall column is the CPU time over the wall time: about the number of cores when the run had
the machine to itself. Target: our step time at most the package's (aim for 0.8x).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import typing as tp
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402

from audiogen_lab.losses import MultiScaleMelSpectrogramLoss  # noqa: E402
from audiogen_lab.models.builders import get_compression_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 24_000
N_Q = 8
BANDWIDTH = 6.0  # kbps: 8 codebooks of 10 bits at 75 Hz


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


def make_steps(x: torch.Tensor) -> tp.Dict[str, tp.Callable[[], None]]:
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

    return {"audiogen_lab fp32": step_ours(False), "audiogen_lab bf16 autocast": step_ours(True),
            "encodec package fp32": step_theirs}


def bench_training(steps: int, batch: int) -> None:
    torch.manual_seed(0)
    x = 0.1 * torch.randn(batch, 1, SAMPLE_RATE)
    runs = make_steps(x)
    for fn in runs.values():  # k-means initialisation and allocator warm-up
        fn()
        fn()
    times: tp.Dict[str, tp.List[tp.Tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(steps):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    print(f"\nTraining step, 24 kHz, batch {batch} x 1 s, {N_Q} codebooks x 1024 (median of {steps})")
    print(f"{'model':<30}{'step (s)':>10}{'cpu/wall':>10}{'vs package':>12}")
    reference = statistics.median(w for w, _ in times["encodec package fp32"])
    for name, values in times.items():
        wall = statistics.median(w for w, _ in values)
        ratio = sum(c for _, c in values) / sum(w for w, _ in values)
        print(f"{name:<30}{wall:>10.3f}{ratio:>10.2f}{wall / reference:>11.2f}x")


def bench_rtf(seconds: float = 10.0, repeats: int = 3) -> None:
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
            "audiogen_lab decode": lambda: ours.decode(codes_ours, scale),
            "encodec package encode": lambda: theirs.encode(x),
            "encodec package decode": lambda: theirs.decode(frames),
        }
        print(f"\nReal-time factor on {seconds:.0f} s of audio (compute seconds per audio second, lower is better)")
        for name, fn in cases.items():
            fn()
            walls = [timed(fn)[0] for _ in range(repeats)]
            print(f"{name:<30}{statistics.median(walls) / seconds:>10.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_training(args.steps, args.batch)
    bench_rtf()
    return 0


if __name__ == "__main__":
    sys.exit(main())
