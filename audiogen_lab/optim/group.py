"""Optimizer groups: one optimizer with its parameters, LR schedule, clipping, gradient accumulation and
fp16 loss scaling, updated with one call.

A solver owns one :class:`Accumulation` (which micro-batch of the current update is running) and one
:class:`OptimizerGroup` per optimizer (a GAN has one per side). Per micro-batch a family calls
``group.backward(loss)``; on the last micro-batch of an update ``group.step()`` averages the gradients
across ranks, unscales them (fp16), clips them, steps the optimizer and, only if the optimizer really
stepped, its schedule. On other micro-batches ``step()`` does nothing, so gradients accumulate and
ranks communicate once per update.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import flashy.distrib
import torch
from torch import nn


@dataclass
class Accumulation:
    """Where the solver is within an update of ``steps`` micro-batches (``micro`` in ``[0, steps)``)."""

    steps: int = 1
    micro: int = 0

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ValueError(f"optim.accumulation_steps must be >= 1, got {self.steps}.")
        self.steps = int(self.steps)

    @property
    def is_first(self) -> bool:
        return self.micro == 0

    @property
    def is_last(self) -> bool:
        return self.micro == self.steps - 1


class OptimizerGroup:
    """An optimizer over the parameters of `modules`, with its schedule, clipping and scaling.

    Args:
        name: name in logs and checkpoints (``generator``, ``adversary``...).
        modules: the modules whose parameters the optimizer updates (gradients and float buffers are
            averaged across ranks before each step).
        optimizer: the optimizer.
        scheduler: LR schedule stepped once per real optimizer step (never on a skipped step).
        max_norm: clip the gradient norm to this value (0: no clipping; the norm is still reported).
        accumulation: shared micro-batch counter of the solver (default: no accumulation).
        scaler: the solver's fp16 gradient scaler (None without fp16). The solver calls
            ``scaler.update()`` once per update, after every group stepped.
    """

    def __init__(self, name: str, modules: tp.Sequence[nn.Module], optimizer: torch.optim.Optimizer,
                 scheduler: tp.Optional[torch.optim.lr_scheduler.LRScheduler] = None, max_norm: float = 0.0,
                 accumulation: tp.Optional[Accumulation] = None,
                 scaler: tp.Optional[torch.amp.GradScaler] = None) -> None:
        self.name = name
        self.modules = list(modules)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_norm = float(max_norm or 0.0)
        self.accumulation = accumulation or Accumulation()
        self.scaler = scaler
        self.steps_taken = 0

    @property
    def parameters(self) -> tp.List[torch.Tensor]:
        return [p for module in self.modules for p in module.parameters() if p.requires_grad]

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def grad_scale(self) -> float:
        """Factor applied to this group's losses: fp16 scale divided by the accumulation steps."""
        scale = float(self.scaler.get_scale()) if self.scaler is not None else 1.0
        return scale / self.accumulation.steps

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` divided by the accumulation steps and multiplied by the fp16 scale."""
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        return loss / self.accumulation.steps

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Accumulate the gradient of `loss` (scaled for accumulation and fp16)."""
        self.scale_loss(loss).backward(retain_graph=retain_graph)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> tp.Optional[tp.Dict[str, float]]:
        """On the last micro-batch of an update: sync, unscale, clip, step, schedule, zero the gradients.

        Returns ``{'<name>_grad_norm', '<name>_lr'}`` after a step, None on other micro-batches.
        """
        if not self.accumulation.is_last:
            return None
        for module in self.modules:
            flashy.distrib.sync_model(module)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = self.parameters
        if self.max_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        else:
            grads = [p.grad for p in params if p.grad is not None]
            grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) \
                if grads else torch.zeros(())
        stepped = True
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            stepped = not _scaler_skipped(self.scaler, self.optimizer)
        else:
            self.optimizer.step()
        if stepped:
            self.steps_taken += 1
            if self.scheduler is not None:
                self.scheduler.step()
        self.zero_grad()
        return {f"{self.name}_grad_norm": float(grad_norm), f"{self.name}_lr": self.lr}

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        state: tp.Dict[str, tp.Any] = {"optimizer": self.optimizer.state_dict(), "steps_taken": self.steps_taken}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps_taken = int(state.get("steps_taken", 0))
        if self.scheduler is not None:
            if "scheduler" not in state:
                raise KeyError(f"The checkpoint of optimizer group {self.name!r} holds no LR schedule state.")
            self.scheduler.load_state_dict(state["scheduler"])


def _scaler_skipped(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``scaler.step(optimizer)`` skipped the step because of inf/NaN gradients."""
    state = scaler._per_optimizer_states.get(id(optimizer), {})  # noqa: SLF001 (no public accessor)
    found = state.get("found_inf_per_device", {})
    return bool(sum(float(v) for v in found.values()) > 0)
