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
    """Read an export written by :func:`export_checkpoint`, checking its format and family."""
    package = load_checkpoint(path)
    if not isinstance(package, dict) or package.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not an audiogen_lab export (expected format {EXPORT_FORMAT!r}).")
    if family is not None and package.get("family") != family:
        raise ValueError(f"{path} exports a {package.get('family')!r} model, not a {family!r} one.")
    return package
