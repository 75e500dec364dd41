"""Checkpoint files: atomic writes, safe loading, and resolution of ``//sig/`` names.

Checkpoints hold only tensors, numbers, strings and containers of those (configs are stored as YAML
text), so every load uses ``torch.load(..., weights_only=True)``. A file that would need arbitrary
unpickling is refused with :class:`CheckpointLoadError` instead of executing its code.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import typing as tp
import zipfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SIG_PREFIX = "//sig/"
PRETRAINED_PREFIX = "//pretrained/"
CHECKPOINT_NAME = "checkpoint.th"
_EPOCH_RE = re.compile(r"^checkpoint_(\d+)\.th$")


class CheckpointLoadError(RuntimeError):
    """A checkpoint exists but cannot be loaded safely."""


def checkpoint_name(epoch: tp.Optional[int] = None) -> str:
    """``checkpoint.th`` for the latest state, ``checkpoint_{epoch}.th`` for a kept epoch."""
    return CHECKPOINT_NAME if epoch is None else f"checkpoint_{epoch}.th"


def save_checkpoint(state: tp.Any, path: tp.Union[str, Path]) -> Path:
    """Write `state` to `path` atomically: a temporary file in the same folder, fsync, rename.

    If anything fails midway the previous file at `path` is untouched and the temporary file is
    removed, so an interrupted write never leaves a corrupt checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    return path


def load_checkpoint(path: tp.Union[str, Path], map_location: tp.Any = "cpu") -> tp.Any:
    """Load a checkpoint with ``weights_only=True``; refuse anything that needs arbitrary code.

    A file that is not a torch checkpoint at all (audio, JSON, text...) is refused with
    :class:`CheckpointLoadError` saying so.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    not_checkpoint = not_a_checkpoint_reason(path)
    if not_checkpoint is not None:
        raise CheckpointLoadError(f"{path} is not an audiogen_lab checkpoint ({not_checkpoint}).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointLoadError(
            f"Refusing to load {path}: it is not a plain-tensor checkpoint and would need arbitrary "
            f"unpickling ({str(err).splitlines()[0]}). Only load files you trust, and re-save them "
            "with tensors, numbers, strings and containers only.") from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointLoadError(f"Checkpoint {path} is corrupt or truncated: {err}") from err
    except Exception as err:  # torch's legacy reader fails in many ways on foreign files
        raise CheckpointLoadError(
            f"{path} is not an audiogen_lab checkpoint (torch.load failed: {type(err).__name__}: {err}).") from err


_KNOWN_FORMATS = ((b"RIFF", "it is a WAV/RIFF file"), (b"fLaC", "it is a FLAC file"), (b"OggS", "it is an Ogg file"),
                  (b"ID3", "it is an MP3 file"), (b"\xff\xfb", "it is an MP3 file"), (b"\x89HDF", "it is an HDF5 file"),
                  (b"\x93NUMPY", "it is a NumPy .npy file"), (b"\x1f\x8b", "it is gzip-compressed"))


def not_a_checkpoint_reason(path: tp.Union[str, Path]) -> tp.Optional[str]:
    """Why `path` cannot be a torch checkpoint, from its first bytes, or None if it may be one.

    ``torch.save`` writes a zip archive holding ``<name>/data.pkl`` (or, in the legacy format, a
    pickle, which starts with the PROTO opcode ``0x80``).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return None  # a truncated torch zip: torch.load reports it as corrupt
        if not any(name.endswith("data.pkl") for name in names):
            return f"a zip archive without data.pkl, holding {', '.join(names[:3]) or 'nothing'}"
        return None
    if head[:1] == b"\x80":
        return None
    for magic, what in _KNOWN_FORMATS:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown format starting with {head[:8]!r}"
    if text.lstrip()[:1] in ("{", "["):
        return "it is a JSON file"
    return f"it is a text file starting with {text.strip()[:30]!r}"


def epoch_checkpoints(folder: tp.Union[str, Path]) -> tp.List[tp.Tuple[int, Path]]:
    """The ``checkpoint_{epoch}.th`` files of `folder`, sorted by epoch."""
    found = []
    for child in Path(folder).iterdir():
        match = _EPOCH_RE.match(child.name)
        if match:
            found.append((int(match.group(1)), child))
    return sorted(found)


def flush_stale_checkpoints(folder: tp.Union[str, Path], keep_last: tp.Optional[int]) -> tp.List[Path]:
    """Delete epoch checkpoints beyond the `keep_last` most recent ones; returns what was deleted."""
    if keep_last is None or keep_last < 0:
        return []
    stale = [path for _, path in epoch_checkpoints(folder)]
    stale = stale[:max(0, len(stale) - keep_last)]
    for path in stale:
        path.unlink(missing_ok=True)
        logger.debug("Removed stale checkpoint %s", path)
    return stale


def resolve_checkpoint_path(sig_or_path: tp.Union[str, Path], name: str = CHECKPOINT_NAME) -> Path:
    """Turn ``//sig/SIG``, an XP folder or a file path into a checkpoint file path.

    ``//sig/SIG`` is looked up in the experiments folder (see :mod:`audiogen_lab.environment`).
    """
    value = str(sig_or_path)
    if value.startswith(SIG_PREFIX):
        from ..environment import AudioGenEnvironment
        sig = value[len(SIG_PREFIX):].strip("/")
        path = AudioGenEnvironment.get_dora_dir() / "xps" / sig / name
        if not path.exists():
            raise FileNotFoundError(
                f"No checkpoint for signature {sig!r}: {path} does not exist (experiments folder from "
                "$AUDIOGEN_LAB_DORA_DIR or config/teams/).")
        return path
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / name
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    return path


def leftover_temporary_files(folder: tp.Union[str, Path]) -> tp.List[Path]:
    """Temporary files left in `folder` by checkpoint writes that were interrupted (killed mid-save)."""
    names = (CHECKPOINT_NAME + ".", "checkpoint_")
    return sorted(p for p in Path(folder).glob("checkpoint*.tmp") if p.name.startswith(names))
