"""Roles of the models a solver holds, and freezing of upstream models.

- ``trainable``: updated by an optimizer group; checkpointed; EMA, best state and export by default.
- ``adversary``: a discriminator or critic; trained and checkpointed, but no EMA, best state or export.
- ``frozen``: an upstream model (codec, tokenizer, text encoder) loaded from its own checkpoint: always
  in eval mode, no gradients, buffers never change, never stored in the solver's checkpoint.
"""
from __future__ import annotations

import types
import typing as tp
from dataclasses import dataclass

from torch import nn

TRAINABLE, ADVERSARY, FROZEN = "trainable", "adversary", "frozen"
ROLES = (TRAINABLE, ADVERSARY, FROZEN)


@dataclass
class ModelEntry:
    """A model registered with a solver: its role and what the base does with it."""

    name: str
    module: nn.Module
    role: str
    ema: bool
    best_state: bool
    export: bool

    @property
    def is_updated(self) -> bool:
        """Trained by this solver (trainable or adversary): synchronised and checked across ranks."""
        return self.role in (TRAINABLE, ADVERSARY)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def make_entry(name: str, module: nn.Module, role: str, ema: tp.Optional[bool] = None,
               best_state: tp.Optional[bool] = None, export: tp.Optional[bool] = None) -> ModelEntry:
    """A :class:`ModelEntry` with the role's defaults for the flags left as None."""
    if role not in ROLES:
        raise ValueError(f"Model {name!r}: role must be one of {ROLES}, got {role!r}.")
    trainable = role == TRAINABLE
    entry = ModelEntry(name, module, role, ema=trainable if ema is None else ema,
                       best_state=trainable if best_state is None else best_state,
                       export=trainable if export is None else export)
    if role == FROZEN and (entry.ema or entry.best_state or entry.export):
        raise ValueError(f"Model {name!r} is frozen: it can have no EMA, best state or export.")
    return entry


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement of ``nn.Module.train`` on a frozen module: it and its children stay in eval mode."""
    return nn.Module.train(self, False)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze `module` in place: eval mode for good (a parent's ``.train()`` cannot flip it, so dropout,
    batch statistics and codebook EMA updates stay off), and no parameter requires a gradient."""
    for param in module.parameters():
        param.requires_grad_(False)
    for child in module.modules():
        child.train = types.MethodType(_stay_in_eval, child)  # type: ignore[method-assign]
    module.eval()
    return module


def is_frozen(module: nn.Module) -> bool:
    """Whether `module` went through :func:`freeze`."""
    train = module.__dict__.get("train")
    return isinstance(train, types.MethodType) and train.__func__ is _stay_in_eval
