"""Is mixed precision worth it on this device? bfloat16 support checks for the `autocast` config keys.

On a CPU without native bfloat16 instructions (AVX2-only x86, for instance) PyTorch emulates bfloat16
matmuls and convolutions in slow reference kernels: a training step under bfloat16 autocast can be
hundreds of times slower than in float32. :func:`check_autocast` refuses such a configuration with a
message naming the keys to change, unless the user forces it with `autocast_force=true`. A CPU with
native bfloat16 instructions but no matrix unit (AVX-512 BF16 without AMX) can still run bfloat16
matmuls slower than float32: autocast then gives no speed-up, and the check says so with a warning.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

#: a CPU whose bfloat16 matmul is more than this many times slower than float32 emulates bfloat16.
MAX_NATIVE_SLOWDOWN = 2.0


@dataclass(frozen=True)
class Bf16Support:
    """Whether a device runs bfloat16 natively, and the evidence for it (`reason`, one sentence)."""
    native: bool
    reason: str


def _device_type(device: str) -> str:
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"bfloat16 support checks know the 'cpu' and 'cuda' devices, got device={device!r}.")
    return kind


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocations
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def cpu_bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """Measured time of a [size, size] @ [size, size] bfloat16 matmul over the float32 one, on CPU.

    Below 1 where bfloat16 is native (AVX-512 BF16, AMX); where it is emulated, about 16 at size 256 on
    an AVX2-only CPU, growing with the size (about 400 at 2048). Both run on one thread, so that other
    processes busy on the other cores do not skew the ratio. Takes about 0.2 s where emulated; the
    result is cached per process.
    """
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    b = a.bfloat16()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = _best_time(lambda: a @ a, repeats)
        bf16 = _best_time(lambda: b @ b, repeats)
    finally:
        torch.set_num_threads(threads)
    return bf16 / max(fp32, 1e-9)


def bf16_support(device: str) -> Bf16Support:
    """Whether `device` ('cpu', 'cuda', 'cuda:N') runs bfloat16 natively, with the reason.

    CPU: native when it has AVX-512 BF16 or AMX tiles (`torch.cpu._is_avx512_bf16_supported()`,
    `torch.cpu._is_amx_tile_supported()`); otherwise (other ISAs, e.g. Arm with BF16) when a measured
    bfloat16 matmul is at most `MAX_NATIVE_SLOWDOWN` times slower than float32.
    CUDA: `torch.cuda.is_bf16_supported()`.
    """
    if _device_type(device) == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return Bf16Support(supported, f"torch.cuda.is_bf16_supported() is {supported}")
    avx512_bf16 = torch.cpu._is_avx512_bf16_supported()
    amx = torch.cpu._is_amx_tile_supported()
    if avx512_bf16 or amx:
        return Bf16Support(True, f"the CPU has native bfloat16 (AVX-512 BF16: {avx512_bf16}, AMX: {amx})")
    slowdown = cpu_bf16_slowdown()
    return Bf16Support(
        slowdown <= MAX_NATIVE_SLOWDOWN,
        f"the CPU has neither AVX-512 BF16 nor AMX and a 256x256 bfloat16 matmul measured {slowdown:.1f}x "
        f"the time of float32 (native means at most {MAX_NATIVE_SLOWDOWN:g}x)")


def bf16_is_native(device: str) -> bool:
    """True when `device` ('cpu', 'cuda', 'cuda:N') runs bfloat16 at native speed (see :func:`bf16_support`)."""
    return bf16_support(device).native


def check_autocast(device: str, dtype: torch.dtype, force: bool = False) -> None:
    """Refuse autocast to bfloat16 on a device without native bfloat16; warn instead when `force`.

    Call it when `autocast` is on, with the solver's device, `autocast_dtype` and `autocast_force`.
    Other dtypes pass through unchecked.

    Raises:
        RuntimeError: `dtype` is bfloat16, `device` has no native bfloat16 and `force` is False.
    """
    if dtype != torch.bfloat16:
        return
    support = bf16_support(device)
    if support.native:
        if _device_type(device) == "cpu" and cpu_bf16_slowdown() > 1.0:
            logger.warning("autocast=true with autocast_dtype=bfloat16: %s, but a 256x256 bfloat16 matmul measured "
                           "%.1fx the time of float32 on this CPU, so autocast will not speed training up here "
                           "(autocast=false keeps float32).", support.reason, cpu_bf16_slowdown())
        return
    problem = (f"autocast=true with autocast_dtype=bfloat16 on device '{device}', but {support.reason}: "
               f"training would run far slower than in float32.")
    if force:
        logger.warning("%s Running anyway because autocast_force=true.", problem)
        return
    raise RuntimeError(f"{problem} Set autocast=false (or another autocast_dtype) for this machine, or "
                       f"autocast_force=true to run it anyway.")
