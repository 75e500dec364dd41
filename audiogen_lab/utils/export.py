"""Compact model exports: the best weights plus the config, with no optimizer or solver state.

An export is a ``torch.save``d dict, loadable with ``weights_only=True``::

    {'format': 'audiogen_lab.export', 'version': 1, 'family': <solver family, e.g. 'compression'>,
     'xp.cfg': <YAML text of the full config>, 'xp.sig': <signature>, 'model': <state_dict>}

Downstream code reads it with the family's loader (e.g. ``CompressionModel.get_pretrained(path)``).
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

from omegaconf import OmegaConf

from .checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint

EXPORT_FORMAT = "audiogen_lab.export"
EXPORT_VERSION = 1


def export_checkpoint(sig_or_path: tp.Union[str, Path], out: tp.Union[str, Path],
                      model_key: str = "model") -> Path:
    """Export the best state of `model_key` from a solver checkpoint (``//sig/SIG``, folder or file)."""
    path = resolve_checkpoint_path(sig_or_path)
    state = load_checkpoint(path)
    best = state.get("best_state", {}).get("states", {})
    if model_key not in best:
        raise KeyError(f"{path} has no best state for {model_key!r} (found {sorted(best)}).")
    cfg_text = state.get("xp.cfg")
    if not isinstance(cfg_text, str):
        raise ValueError(f"{path} does not hold its config as YAML text; was it written by audiogen_lab?")
    family = OmegaConf.create(cfg_text).get("solver")
    package = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "family": family,
        "xp.cfg": cfg_text, "xp.sig": state.get("xp.sig"), "model": best[model_key],
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
    if family is not None and package.get("family") != family:
        raise ValueError(f"{path}: holds a {package.get('family')!r} model, expected a {family!r} model.")
    for key in ("xp.cfg", "model"):
        if key not in package:
            raise ValueError(f"{path}: export is missing its {key!r} entry.")
    if not isinstance(package["xp.cfg"], str):
        raise ValueError(f"{path}: 'xp.cfg' must be YAML text, got {type(package['xp.cfg']).__name__}.")
    return package
