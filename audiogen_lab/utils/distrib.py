"""Distributed helpers beyond flashy's: agreement on flags, metrics averaged by name, gathering with
gradients, per-rank random streams. Every function is a cheap no-op in a single process."""
from __future__ import annotations

import typing as tp

import flashy.distrib
import torch
import torch.distributed as dist

from .utils import get_rng_state, seed_everything, set_rng_state


def any_rank(flag: bool, device: tp.Union[str, torch.device] = "cpu") -> bool:
    """True on every rank if `flag` is True on at least one rank (one all-reduce)."""
    if not flashy.distrib.is_distributed():
        return bool(flag)
    tensor = torch.tensor(float(flag), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def average_metrics(metrics: tp.Dict[str, float], count: float = 1.0,
                    device: tp.Union[str, torch.device] = "cpu") -> tp.Dict[str, float]:
    """Average `metrics` across ranks by name, each rank weighted by `count`.

    Ranks may hold different keys (a metric only some batches produce): the union of keys is
    returned, each averaged over the ranks that have it. flashy's version pairs values by position,
    which silently mixes metrics when the keys differ.
    """
    if not flashy.distrib.is_distributed():
        return dict(metrics)
    gathered: tp.List[tp.Any] = [None] * flashy.distrib.world_size()
    dist.all_gather_object(gathered, sorted(metrics))
    keys = sorted(set().union(*gathered))
    values = torch.zeros(len(keys), 2, dtype=torch.float64, device=device)
    for index, key in enumerate(keys):
        if key in metrics:
            values[index, 0] = float(metrics[key]) * count
            values[index, 1] = count
    dist.all_reduce(values)
    return {key: float(values[i, 0] / values[i, 1]) for i, key in enumerate(keys)}


def average_tensor(value: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of `value` (a detached float copy; `value` itself on a single process)."""
    value = value.detach().float().clone()
    if flashy.distrib.is_distributed():
        dist.all_reduce(value)
        value /= flashy.distrib.world_size()
    return value


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of the gathered tensor (one
    all-reduce) and hands each rank the rows it contributed. Plain blocking collectives only, so that
    it behaves the same on gloo and NCCL."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` [B, ...] of every rank along dim 0 -> [world * B, ...], keeping the
    gradient path to every rank's input (for contrastive losses over the global batch): the gradient
    of rank r's input is the sum over ranks of their gradients of rows `r * B:(r + 1) * B`.

    All ranks must pass tensors of the same shape.
    """
    if not flashy.distrib.is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor.contiguous())


def seed_rank_streams(seed: int) -> None:
    """Give each rank its own random stream (noise, crops, masks) after identical initialisation."""
    seed_everything(seed + 1_000_003 * flashy.distrib.rank())


def gather_rng_states() -> tp.List[tp.Dict[str, tp.Any]]:
    """The RNG states of every rank (the list has one entry per rank, on every rank)."""
    state = get_rng_state()
    if not flashy.distrib.is_distributed():
        return [state]
    gathered: tp.List[tp.Any] = [None] * flashy.distrib.world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def restore_rng_states(states: tp.Sequence[tp.Dict[str, tp.Any]]) -> None:
    """Restore this rank's RNG state from what :func:`gather_rng_states` saved (same world size), or
    derive a distinct stream per rank from rank 0's when the world size changed."""
    rank = flashy.distrib.rank()
    if len(states) == flashy.distrib.world_size():
        set_rng_state(states[rank])
    else:
        set_rng_state(states[0])
        if rank > 0:
            seed_everything(int(torch.randint(0, 2 ** 31, (1,))) + rank)
