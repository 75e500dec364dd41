"""Learning-rate schedules stepped once per update, as multipliers of the base learning rate."""
from __future__ import annotations

import math
import typing as tp

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def cosine_schedule(warmup: int, total: int, lr_min_ratio: float = 0.0, cycle_length: float = 1.0
                    ) -> tp.Callable[[int], float]:
    """Linear warmup over `warmup` updates then a cosine decay to `lr_min_ratio` at `total`."""
    def fn(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup) / cycle_length)
        return lr_min_ratio + (1 - lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn


def linear_warmup_schedule(warmup: int, total: int, lr_min_ratio: float = 0.0) -> tp.Callable[[int], float]:
    """Linear warmup then a linear decay to `lr_min_ratio` at `total`."""
    def fn(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - (1.0 - lr_min_ratio) * progress
    return fn


def inverse_sqrt_schedule(warmup: int) -> tp.Callable[[int], float]:
    """Linear warmup then a decay proportional to 1 / sqrt(step)."""
    def fn(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        return math.sqrt(max(1, warmup) / (step + 1))
    return fn


def step_schedule(step_size: int, gamma: float = 0.1) -> tp.Callable[[int], float]:
    """Multiply the learning rate by `gamma` every `step_size` updates."""
    return lambda step: gamma ** (step // step_size)


def exponential_schedule(gamma: float) -> tp.Callable[[int], float]:
    """Multiply the learning rate by `gamma` at every update."""
    return lambda step: gamma ** step


def get_lr_scheduler(optimizer: Optimizer, name: tp.Optional[str], total_updates: int,
                     **kwargs: tp.Any) -> tp.Optional[LambdaLR]:
    """Build the scheduler `name` (None for a constant learning rate).

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        name: one of `cosine`, `linear_warmup`, `inverse_sqrt`, `step`, `exponential`, or None.
        total_updates: number of updates of the whole run (epochs × updates per epoch).
        kwargs: the schedule's own arguments (e.g. `warmup`, `lr_min_ratio`).
    """
    if name is None:
        return None
    factories: tp.Dict[str, tp.Callable[..., tp.Callable[[int], float]]] = {
        "cosine": lambda **kw: cosine_schedule(total=total_updates, **kw),
        "linear_warmup": lambda **kw: linear_warmup_schedule(total=total_updates, **kw),
        "inverse_sqrt": inverse_sqrt_schedule,
        "step": step_schedule,
        "exponential": exponential_schedule,
    }
    if name not in factories:
        raise KeyError(f"schedule.lr_scheduler={name!r} is unknown; choose one of {sorted(factories)} or null.")
    return LambdaLR(optimizer, factories[name](**kwargs))
