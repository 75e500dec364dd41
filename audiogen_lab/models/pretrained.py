"""Released models named ``//pretrained/NAME``: a registry of checkpoint files, converters and configs.

An entry says which file(s) hold the released weights, which model family it belongs to, the full
config of the matching architecture in this framework, and how to turn the files' state dicts into
the state dict of the model built from that config. Loading a name therefore gives one of *our*
models (e.g. :class:`EncodecModel`), which a solver can fine-tune (``continue_from=//pretrained/NAME``).

Nothing is ever downloaded. Each file is looked for, in order, in:

1. an explicit `repository` (a folder, or the file itself), and then nowhere else;
2. ``$AUDIOGEN_LAB_PRETRAINED_DIR``;
3. the team's reference folder (``reference_dir`` in ``config/teams/<team>.yaml``, or
   ``$AUDIOGEN_LAB_REFERENCE_DIR``);
4. ``torch.hub.get_dir()/checkpoints`` (where the ``encodec`` package caches its downloads).

Registered: ``encodec_24khz`` and ``encodec_48khz``, Meta's EnCodec (see :mod:`.meta_encodec`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import typing as tp
from pathlib import Path

import omegaconf
import torch
from torch import nn

from ..environment import CONFIG_DIR, AudioGenEnvironment
from ..utils.checkpoint import PRETRAINED_PREFIX, load_checkpoint
from .builders import get_compression_model
from .meta_encodec import StateDict, convert_encodec_state_dict

PRETRAINED_ENV = 'AUDIOGEN_LAB_PRETRAINED_DIR'
PathLike = tp.Union[str, Path]


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """One released model.

    Attributes:
        checkpoints: file names of the released weights.
        family: the model family ('compression'), whose builder makes the model from `config`.
        config: full model config as YAML text (the model section plus ``sample_rate`` / ``channels``).
        convert: state dicts of the files (in the order of `checkpoints`) -> our model's state dict.
        source: where the files come from, for error messages.
    """
    checkpoints: tp.Tuple[str, ...]
    family: str
    config: str
    convert: tp.Callable[[tp.List[StateDict]], StateDict]
    source: str = ''


PRETRAINED: tp.Dict[str, PretrainedEntry] = {}
FAMILY_BUILDERS: tp.Dict[str, tp.Callable[[omegaconf.DictConfig], nn.Module]] = {}


def register_pretrained(name: str, entry: PretrainedEntry) -> None:
    """Make `entry` available as ``//pretrained/<name>``."""
    assert name and '/' not in name, f"pretrained names are plain words, got {name!r}"
    PRETRAINED[name] = entry


def register_family_builder(family: str, builder: tp.Callable[[omegaconf.DictConfig], nn.Module]) -> None:
    """Builder (config -> model) of the pretrained entries of `family`."""
    FAMILY_BUILDERS[family] = builder


def get_entry(name: str) -> PretrainedEntry:
    """The registry entry of pretrained model `name` (a KeyError lists the registered names)."""
    if name not in PRETRAINED:
        raise KeyError(f"Unknown pretrained model {name!r}: choose one of {sorted(PRETRAINED)}.")
    return PRETRAINED[name]


def _model_config_text(preset: str, sample_rate: int, channels: int) -> str:
    """YAML text of model preset ``config/model/<preset>.yaml`` (self-contained) with the audio format."""
    path = CONFIG_DIR / 'model' / f'{preset}.yaml'
    cfg = omegaconf.OmegaConf.load(path)
    assert isinstance(cfg, omegaconf.DictConfig) and 'defaults' not in cfg, \
        f"{path} must be a self-contained mapping (no defaults list) to describe a pretrained model"
    cfg.sample_rate = sample_rate
    cfg.channels = channels
    return omegaconf.OmegaConf.to_yaml(cfg)


def _convert_encodec(states: tp.List[StateDict]) -> StateDict:
    [state] = states
    return convert_encodec_state_dict(state)


# -- lookup ----------------------------------------------------------------------------------------

def _search_folders() -> tp.List[Path]:
    folders = []
    if os.environ.get(PRETRAINED_ENV):
        folders.append(Path(os.environ[PRETRAINED_ENV]).expanduser())
    reference = AudioGenEnvironment.get_reference_dir()
    if reference is not None:
        folders.append(reference)
    folders.append(Path(torch.hub.get_dir()) / 'checkpoints')
    return folders


def find_pretrained_checkpoint(name: str, repository: tp.Optional[PathLike] = None,
                               filename: tp.Optional[str] = None) -> Path:
    """Path of checkpoint file `filename` (default: the entry's first file) of pretrained model `name`.

    With `repository` (a folder holding the file, or the file itself) only that place is searched;
    otherwise ``$AUDIOGEN_LAB_PRETRAINED_DIR`` (when set), the team's reference folder (when set), then
    ``torch.hub.get_dir()/checkpoints``. Raises FileNotFoundError naming the file and every place searched.
    """
    name = strip_prefix(name)
    entry = get_entry(name)
    filename = filename or entry.checkpoints[0]
    assert filename in entry.checkpoints, f"{name} has no checkpoint file {filename!r}: {entry.checkpoints}"
    if repository is not None:
        repository = Path(repository).expanduser()
        candidates = [repository if repository.is_file() else repository / filename]
    else:
        candidates = [folder / filename for folder in _search_folders()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = '\n  '.join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Pretrained model {name!r} needs the file {filename} ({entry.source}); nothing is downloaded. "
        f"Searched:\n  {searched}\nPut the file in one of these places, set ${PRETRAINED_ENV} to the folder "
        f"holding it, or set the team's reference_dir (config/teams/) or $AUDIOGEN_LAB_REFERENCE_DIR.")


def _check_checksum(path: Path) -> None:
    """The file name carries the first hex digits of its sha256 (``name-<digits>.th``)."""
    expected = path.stem.rsplit('-', 1)[-1]
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    if not digest.hexdigest().startswith(expected):
        raise RuntimeError(f"{path}: sha256 starts with {digest.hexdigest()[:len(expected)]}, expected "
                           f"{expected}; the file is corrupt or not the released checkpoint.")


def _read_state(path: Path) -> StateDict:
    """The state dict in `path`, read safely (see :func:`~audiogen_lab.utils.checkpoint.load_checkpoint`)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: not a state dict (a {type(state).__name__}).")
    return state


# -- public API --------------------------------------------------------------------------------------

def pretrained_config(name: str) -> omegaconf.DictConfig:
    """Full model config of pretrained model `name` (model sections, ``sample_rate``, ``channels``): the
    family builder makes from it a model whose state dict matches :func:`pretrained_state_dict`."""
    cfg = omegaconf.OmegaConf.create(get_entry(name).config)
    assert isinstance(cfg, omegaconf.DictConfig)
    return cfg


def pretrained_state_dict(name: str, repository: tp.Optional[PathLike] = None,
                          verify_checksum: bool = False) -> StateDict:
    """State dict, in this framework's format, of pretrained model `name` (``//pretrained/NAME`` or NAME).

    Reads the released file(s) (see :func:`find_pretrained_checkpoint`; ``torch.load(weights_only=True)``)
    and converts them. `verify_checksum` compares each file's sha256 with the digits in its name.
    Load it into a model built from :func:`pretrained_config` or from the matching solver preset.
    """
    name = strip_prefix(name)
    entry = get_entry(name)
    paths = [find_pretrained_checkpoint(name, repository, filename) for filename in entry.checkpoints]
    if verify_checksum:
        for path in paths:
            _check_checksum(path)
    states = [_read_state(path) for path in paths]
    try:
        return entry.convert(states)
    except (KeyError, TypeError, ValueError) as err:
        raise RuntimeError(f"{', '.join(map(str, paths))}: not a state dict of {name}: {err}") from err


def get_pretrained_model(name: str, repository: tp.Optional[PathLike] = None,
                         device: tp.Union[str, torch.device] = 'cpu', verify_checksum: bool = False) -> nn.Module:
    """Pretrained model `name` as this framework's model (built from :func:`pretrained_config`), with the
    released weights, in eval mode on `device`."""
    name = strip_prefix(name)
    entry = get_entry(name)
    if entry.family not in FAMILY_BUILDERS:
        raise KeyError(f"no model builder registered for family {entry.family!r} (pretrained model {name!r}).")
    state = pretrained_state_dict(name, repository, verify_checksum)
    model = FAMILY_BUILDERS[entry.family](pretrained_config(name))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        files = ', '.join(entry.checkpoints)
        raise RuntimeError(f"{files}: not a state dict of {name}: {err}") from err
    return model.to(device).eval()


def strip_prefix(name: str) -> str:
    """``//pretrained/NAME`` -> NAME (NAME is returned unchanged)."""
    return name[len(PRETRAINED_PREFIX):].strip('/') if name.startswith(PRETRAINED_PREFIX) else name


def _register_defaults() -> None:
    register_family_builder('compression', get_compression_model)
    release = 'EnCodec weights released by Meta, https://dl.fbaipublicfiles.com/encodec/v0/{}'
    for name, filename, preset, sample_rate, channels in (
            ('encodec_24khz', 'encodec_24khz-d7cc33bc.th', 'encodec/meta_24khz', 24000, 1),
            ('encodec_48khz', 'encodec_48khz-7e698e3e.th', 'encodec/meta_48khz', 48000, 2)):
        register_pretrained(name, PretrainedEntry(
            checkpoints=(filename,), family='compression', config=_model_config_text(preset, sample_rate, channels),
            convert=_convert_encodec, source=release.format(filename)))


_register_defaults()
