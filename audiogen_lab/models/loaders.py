"""Load compression models from exported files or by pretrained name, without any solver.

Export format (written by the solvers' export utility), a ``torch.save``d dict::

    {'format': 'audiogen_lab.export', 'version': 1, 'family': 'compression',
     'xp.cfg': <YAML text of the full config>, 'xp.sig': <str>, 'model': <state_dict>}

Files are read with ``torch.load(weights_only=True)``: anything needing arbitrary unpickling is refused.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import omegaconf
import torch

from ..utils.checkpoint import PRETRAINED_PREFIX, SIG_PREFIX
from ..utils.export import export_states
from ..utils.export import load_export as _load_export
from . import builders
from .compression import CompressionModel
from .pretrained import PRETRAINED, get_entry, get_pretrained_model


def _pretrained_name(name_or_path: str) -> tp.Optional[str]:
    """The pretrained model named by ``//pretrained/NAME`` or a bare NAME, else None."""
    if name_or_path.startswith(PRETRAINED_PREFIX):
        name = name_or_path[len(PRETRAINED_PREFIX):].strip('/')
        if name not in PRETRAINED:
            raise KeyError(f"Unknown pretrained model {name_or_path!r}: choose one of "
                           f"{[PRETRAINED_PREFIX + n for n in sorted(PRETRAINED)]}.")
        return name
    return name_or_path if name_or_path in PRETRAINED else None


def load_export(path: tp.Union[str, Path], family: str = 'compression') -> tp.Dict[str, tp.Any]:
    """Read and check an exported file of model `family` (see :func:`audiogen_lab.utils.export.load_export`)."""
    return _load_export(path, family)


def load_compression_model_cfg(path: tp.Union[str, Path]) -> omegaconf.DictConfig:
    """The full config stored in the exported compression model at `path`."""
    cfg = omegaconf.OmegaConf.create(load_export(path)['xp.cfg'])
    assert isinstance(cfg, omegaconf.DictConfig), f"{path}: 'xp.cfg' is not a YAML mapping"
    return cfg


def load_compression_model(name_or_path: tp.Union[str, Path],
                           device: tp.Union[str, torch.device] = 'cpu') -> CompressionModel:
    """A compression model in eval mode on `device`, from:

    - ``//pretrained/NAME`` (or the bare NAME) of a compression model, e.g. ``encodec_24khz``,
      ``encodec_48khz``: the released weights converted into this framework's model (an
      :class:`EncodecModel` for EnCodec; see :mod:`audiogen_lab.models.pretrained`);
    - a path to an exported file: rebuilt from its config, then its weights loaded.

    ``//sig/SIG`` names an experiment and is resolved by ``CompressionSolver.model_from_checkpoint``.
    """
    value = str(name_or_path)
    if value.startswith(SIG_PREFIX):
        raise ValueError(f"{value}: experiment signatures are resolved by the solver; use "
                         "CompressionSolver.model_from_checkpoint, or export the model and pass the file.")
    name = _pretrained_name(value)
    if name is not None:
        family = get_entry(name).family
        if family != 'compression':
            raise ValueError(f"{value} is a {family!r} model, not a compression model.")
        model = get_pretrained_model(name, device=device)
        assert isinstance(model, CompressionModel), f"{value}: the builder did not return a CompressionModel"
        return model
    return model_from_export(load_export(value), value, device)


def model_from_export(package: tp.Dict[str, tp.Any], source: tp.Union[str, Path],
                      device: tp.Union[str, torch.device] = 'cpu') -> CompressionModel:
    """Rebuild the model of a checked, loaded export (`source` names it in errors); eval mode on `device`."""
    cfg = omegaconf.OmegaConf.create(package['xp.cfg'])
    model = builders.get_compression_model(cfg)
    try:
        model.load_state_dict(export_states(package)['model'])
    except RuntimeError as err:
        raise RuntimeError(f"{source}: weights do not match the model built from its config: {err}") from err
    return model.to(device).eval()
