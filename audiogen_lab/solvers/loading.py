"""Models from checkpoints, exports and pretrained names, for every family, without a solver.

A source is ``//sig/SIG`` (an XP's checkpoint), an XP folder, a solver checkpoint file, an export file
(:mod:`audiogen_lab.utils.export`) or ``//pretrained/NAME``. The config stored with the weights names
the solver, whose :meth:`~audiogen_lab.solvers.base.StandardSolver.build_model_from_config` rebuilds
each model; the weights are the best state (EMA when used) of a checkpoint, or the exported weights.
"""
from __future__ import annotations

import logging
import typing as tp
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..utils import checkpoint
from ..utils.export import check_export, export_states, is_export
from . import get_solver_class

logger = logging.getLogger(__name__)


@dataclass
class ModelPackage:
    """What a checkpoint or export holds about its models."""

    source: str
    cfg: DictConfig
    solver: str
    states: tp.Dict[str, tp.Dict[str, torch.Tensor]]
    families: tp.Dict[str, tp.Optional[str]] = field(default_factory=dict)
    upstream: tp.Dict[str, str] = field(default_factory=dict)


def read_package(source: str) -> ModelPackage:
    """Read the models of a checkpoint or export (not ``//pretrained/``)."""
    path = checkpoint.resolve_checkpoint_path(source)
    state = checkpoint.load_checkpoint(path)
    if is_export(state):
        package = check_export(state, path)
        cfg = OmegaConf.create(package["xp.cfg"])
        solver = package.get("solver") or cfg.get("solver")
        families = package.get("families") or {name: package.get("family") for name in export_states(package)}
        return ModelPackage(str(path), cfg, solver, export_states(package), families, package.get("upstream", {}))
    if not isinstance(state, dict) or not isinstance(state.get("xp.cfg"), str) or "best_state" not in state:
        raise ValueError(f"{path} is not an audiogen_lab solver checkpoint or export (no config or best state).")
    cfg = OmegaConf.create(state["xp.cfg"])
    described = state.get("models") or {}
    states = dict(state["best_state"]["states"])
    families = {name: (described.get(name) or {}).get("family") for name in states}
    return ModelPackage(str(path), cfg, cfg.get("solver"), states, families, state.get("upstream", {}))


def read_model_states(source: str) -> tp.Dict[str, tp.Dict[str, torch.Tensor]]:
    """The weights by model name held by `source` (for ``continue_from``)."""
    if source.startswith(checkpoint.PRETRAINED_PREFIX):
        from ..models.pretrained import pretrained_state_dict
        return {"model": pretrained_state_dict(source[len(checkpoint.PRETRAINED_PREFIX):].strip("/"))}
    return read_package(source).states


def load_model(source: str, name: tp.Optional[str] = None, device: tp.Union[str, torch.device] = "cpu",
               family: tp.Optional[str] = None, default_name: str = "model") -> nn.Module:
    """The model `name` of `source` in eval mode on `device` (see the module docstring).

    Args:
        source: where the weights are.
        name: which model of the checkpoint (default: `default_name`, or the only one).
        device: where to put the model.
        family: the family the caller expects (e.g. ``compression``): anything else is an error.
        default_name: the model picked when `name` is None and there are several.
    """
    if source.startswith(checkpoint.PRETRAINED_PREFIX):
        from ..models.pretrained import get_pretrained_model
        model = get_pretrained_model(source[len(checkpoint.PRETRAINED_PREFIX):].strip("/"), device=device)
        _check_family(model, family, source)
        return model.eval()
    package = read_package(source)
    if name is None:
        name = default_name if default_name in package.states or len(package.states) != 1 \
            else next(iter(package.states))
    if name not in package.states:
        raise KeyError(f"{package.source} holds the models {sorted(package.states)}, not {name!r}.")
    expected = package.families.get(name)
    if family is not None and expected is not None and expected != family:
        raise ValueError(f"{package.source}: model {name!r} is a {expected!r} model, expected a {family!r} model.")
    klass = get_solver_class(package.solver)
    model = klass.build_model_from_config(package.cfg, name)
    from .base import _load_strict
    _load_strict(model, package.states[name], f"{package.source} (model {name!r})")
    _check_family(model, family, package.source)
    logger.info("Loaded %s model %r from %s", package.solver, name, package.source)
    return model.to(device).eval()


def _check_family(model: nn.Module, family: tp.Optional[str], source: str) -> None:
    found = getattr(model, "family", None)
    if family is not None and found is not None and found != family:
        raise ValueError(f"{source} holds a {found!r} model, expected a {family!r} model.")
