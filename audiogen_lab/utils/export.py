"""Compact model exports: the best weights of the exported models plus the config, with no optimizer
or solver state.

An export is a ``torch.save``d dict, loadable with ``weights_only=True`` (format version 2)::

    {'format': 'audiogen_lab.export', 'version': 2,
     'family': <family of the first exported model, e.g. 'compression'>,
     'families': {<model name>: <family>}, 'solver': <solver that trained them>,
     'models': {<model name>: <state_dict>},
     'upstream': {<config key>: <source>},     # e.g. compression_model_checkpoint: //sig/SIG
     'xp.cfg': <YAML text of the full config>, 'xp.sig': <signature>}

Version 1 exports (one ``'model'`` entry, ``family`` = solver name) are still read. Load a model with
``StandardSolver.model_from_checkpoint(path)`` or a family's loader (``CompressionModel.get_pretrained``).
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

from omegaconf import OmegaConf

from .checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint

EXPORT_FORMAT = "audiogen_lab.export"
EXPORT_VERSION = 2


def export_checkpoint(sig_or_path: tp.Union[str, Path], out: tp.Union[str, Path],
                      names: tp.Optional[tp.Sequence[str]] = None) -> Path:
    """Export the best state of the exported models (or of `names`) of a solver checkpoint
    (``//sig/SIG``, an XP folder or a checkpoint file) to `out`."""
    path = resolve_checkpoint_path(sig_or_path)
    state = load_checkpoint(path)
    if is_export(state):
        raise ValueError(f"{path} is already an export.")
    best = state.get("best_state", {}).get("states", {}) if isinstance(state, dict) else {}
    cfg_text = state.get("xp.cfg") if isinstance(state, dict) else None
    if not isinstance(cfg_text, str):
        raise ValueError(f"{path} is not an audiogen_lab solver checkpoint (no config stored as YAML text).")
    described: tp.Dict[str, tp.Dict[str, tp.Any]] = state.get("models") or {}
    if names is None:
        names = [name for name in best if (described.get(name) or {}).get("export", True)]
    missing = [name for name in names if name not in best]
    if missing or not names:
        raise KeyError(f"{path} has no best state for {missing or 'any exported model'} (found {sorted(best)}).")
    solver = OmegaConf.create(cfg_text).get("solver")
    families = {name: (described.get(name) or {}).get("family") or solver for name in names}
    package = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "family": families[names[0]], "families": families,
        "solver": solver, "models": {name: best[name] for name in names}, "upstream": state.get("upstream") or {},
        "xp.cfg": cfg_text, "xp.sig": state.get("xp.sig"),
    }
    return save_checkpoint(package, out)


def load_export(path: tp.Union[str, Path], family: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """Read an export written by :func:`export_checkpoint`, checking its format, version and family.

    Raises FileNotFoundError, :class:`~audiogen_lab.utils.checkpoint.CheckpointLoadError` (a file
    needing arbitrary unpickling, or a corrupt one) or ValueError, each naming the file.
    """
    path = Path(path).expanduser()
    return check_export(load_checkpoint(path), path, family)


def is_export(state: tp.Any) -> bool:
    """Whether a loaded file holds an export (rather than a solver checkpoint)."""
    return isinstance(state, dict) and state.get("format") == EXPORT_FORMAT


def export_states(package: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """The weights by model name of a checked export (version 1: its one model is named ``model``)."""
    return dict(package["models"]) if "models" in package else {"model": package["model"]}


def check_export(package: tp.Any, path: tp.Union[str, Path], family: tp.Optional[str] = None) -> tp.Dict[str, tp.Any]:
    """Check the format, version, family and entries of an already loaded export read from `path`."""
    if not isinstance(package, dict) or package.get("format") != EXPORT_FORMAT:
        found = package.get("format") if isinstance(package, dict) else type(package).__name__
        raise ValueError(f"{path}: not an audiogen_lab export (format {found!r}, expected {EXPORT_FORMAT!r}); "
                         "write it with scripts/export.py.")
    version = package.get("version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise ValueError(f"{path}: export version {version!r} is not supported (this code reads versions "
                         f"<= {EXPORT_VERSION}); update audiogen_lab.")
    families = set((package.get("families") or {}).values()) | {package.get("family")}
    if family is not None and family not in families:
        raise ValueError(f"{path}: holds a {package.get('family')!r} model, expected a {family!r} model.")
    for key in ("xp.cfg", "models" if version >= 2 else "model"):
        if key not in package:
            raise ValueError(f"{path}: export is missing its {key!r} entry.")
    if not isinstance(package["xp.cfg"], str):
        raise ValueError(f"{path}: 'xp.cfg' must be YAML text, got {type(package['xp.cfg']).__name__}.")
    return package
