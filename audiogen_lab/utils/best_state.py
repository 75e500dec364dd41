"""Keeps a copy of the weights that scored best on the validation metric."""
from __future__ import annotations

import copy
import typing as tp

import torch

from flashy.state import StateDictSource


class BestStateDictManager:
    """Snapshots of registered state sources (models), taken when the validation metric improves.

    The metric direction is declared by the solver: ``'lower'`` (losses, distances) or
    ``'higher'`` (SI-SNR, accuracy). Snapshots live on CPU so they cost no accelerator memory.
    """

    def __init__(self, direction: str = "lower") -> None:
        if direction not in ("lower", "higher"):
            raise ValueError(f"Best-state direction must be 'lower' or 'higher', got {direction!r}.")
        self.direction = direction
        self.sources: tp.Dict[str, StateDictSource] = {}
        self.states: tp.Dict[str, tp.Any] = {}
        self.best_metric: tp.Optional[float] = None

    def register(self, name: str, source: StateDictSource) -> None:
        if name in self.sources:
            raise ValueError(f"{name!r} is already registered in the best state.")
        self.sources[name] = source
        self.states[name] = _to_cpu(source.state_dict())

    def is_better(self, value: float) -> bool:
        """Whether `value` improves on the best metric so far."""
        if value != value:  # NaN never improves
            return False
        if self.best_metric is None:
            return True
        return value < self.best_metric if self.direction == "lower" else value > self.best_metric

    def update(self, value: tp.Optional[float] = None) -> bool:
        """Record the current states if `value` is better (always, when `value` is None)."""
        if value is not None and not self.is_better(value):
            return False
        if value is not None:
            self.best_metric = float(value)
        for name, source in self.sources.items():
            self.states[name] = _to_cpu(source.state_dict())
        return True

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        return {"states": self.states, "best_metric": self.best_metric, "direction": self.direction}

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self.states = dict(state["states"])
        self.best_metric = state["best_metric"]


def _to_cpu(state: tp.Any) -> tp.Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return type(state)((key, _to_cpu(value)) for key, value in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(value) for value in state)
    return copy.deepcopy(state)
