"""Exponential moving average of the weights of one or several modules."""
from __future__ import annotations

import typing as tp
from contextlib import contextmanager

import torch
from torch import nn


class ModuleDictEMA:
    """EMA of every floating-point parameter and buffer of the modules in `modules`.

    Integer buffers (counters, k-means flags) are copied rather than averaged. With `unbias=True` the
    average is bias-corrected as in Adam, so early EMA weights are not pulled towards initialisation.

    Args:
        modules: the modules to track, by name.
        decay: EMA decay per update; `1 - decay` is the weight of the newest value.
        unbias: bias-correct the average.
        device: where the shadow weights live (default: the weights' own device).
    """

    def __init__(self, modules: nn.ModuleDict, decay: float = 0.999, unbias: bool = True,
                 device: tp.Optional[tp.Union[str, torch.device]] = None) -> None:
        assert 0.0 <= decay < 1.0, f"EMA decay must be in [0, 1), got {decay}."
        self.modules = modules
        self.decay = decay
        self.unbias = unbias
        self.device = device
        self.count = 0.0
        self.state: tp.Dict[str, torch.Tensor] = {}
        self._init()

    def _named_tensors(self) -> tp.Iterator[tp.Tuple[str, torch.Tensor]]:
        for key, value in self.modules.state_dict(keep_vars=True).items():
            yield key, value.detach()

    def _init(self) -> None:
        for key, value in self._named_tensors():
            target = value.device if self.device is None else self.device
            self.state[key] = value.clone().to(target)

    @torch.no_grad()
    def step(self) -> None:
        """Fold the current weights into the average (call after each optimizer update)."""
        if self.unbias:
            self.count = self.count * self.decay + 1.0
            weight = 1.0 / self.count
        else:
            weight = 1.0 - self.decay
        averaged, current = [], []
        for key, value in self._named_tensors():
            shadow = self.state[key]
            if value.is_floating_point():
                averaged.append(shadow)
                current.append(value.to(shadow.device, shadow.dtype))
            else:
                shadow.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)

    @contextmanager
    def swap(self) -> tp.Iterator[None]:
        """Temporarily load the EMA weights into the modules."""
        backup = {key: value.clone() for key, value in self._named_tensors()}
        self.modules.load_state_dict(self.state, strict=True)
        try:
            yield
        finally:
            self.modules.load_state_dict(backup, strict=True)

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        return {"state": self.state, "count": self.count}

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self.count = state["count"]
        for key, value in state["state"].items():
            self.state[key].copy_(value)
