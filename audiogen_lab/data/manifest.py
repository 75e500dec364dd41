"""Audio manifests: one `AudioMeta` per line of a `data.jsonl` (or `data.jsonl.gz`) file.

`{"path": ..., "duration": ..., "sample_rate": ..., "channels": ..., "amplitude"?, "weight"?, "info_path"?}`.
Relative paths are relative to the manifest's folder, so a dataset folder holding its audio and its
manifest can be moved. Build one with `python -m audiogen_lab.data.audio_dataset ROOT OUT` (see `scan`).
"""
from dataclasses import asdict, dataclass, replace
import gzip
import json
import math
import os
from pathlib import Path
import typing as tp

PathLike = tp.Union[str, Path]
MANIFEST_NAMES = ('data.jsonl', 'data.jsonl.gz')
BUILD_COMMAND = 'python -m audiogen_lab.data.audio_dataset ROOT OUT'


@dataclass
class AudioMeta:
    """One manifest entry.

    Attributes:
        path: audio file (relative paths are relative to the manifest's folder).
        duration: in seconds.
        sample_rate: in Hz.
        channels: number of channels.
        amplitude: peak absolute amplitude, filled by `--complete`.
        weight: relative sampling weight (None counts as 1).
        info_path: caption sidecar json (see `info_dataset`).
    """
    path: str
    duration: float
    sample_rate: int
    channels: int
    amplitude: tp.Optional[float] = None
    weight: tp.Optional[float] = None
    info_path: tp.Optional[str] = None

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        """Dictionary for a manifest line; optional fields that are None are left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, d: tp.Dict[str, tp.Any]) -> 'AudioMeta':
        """Build from a manifest line; unknown keys are ignored, missing required keys raise a ValueError."""
        missing = [key for key in ('path', 'duration', 'sample_rate', 'channels') if key not in d]
        if missing:
            raise ValueError(f"Manifest entry {d} lacks the required keys {missing}.")
        amplitude, weight, info_path = (d.get(key) for key in ('amplitude', 'weight', 'info_path'))
        return cls(path=str(d['path']), duration=float(d['duration']), sample_rate=int(d['sample_rate']),
                   channels=int(d['channels']), amplitude=None if amplitude is None else float(amplitude),
                   weight=None if weight is None else float(weight),
                   info_path=None if info_path is None else str(info_path))


def resolve_manifest(path_or_folder: PathLike) -> Path:
    """The manifest file for `path_or_folder`: the file itself, or `data.jsonl` / `data.jsonl.gz` in a folder.

    Raises FileNotFoundError naming the path (and how to build a manifest) when there is none.
    """
    path = Path(path_or_folder)
    if path.is_file():
        return path
    if path.is_dir():
        found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
        if len(found) > 1:
            raise ValueError(f"Both {found[0]} and {found[1]} exist: remove one so the manifest is unambiguous.")
        if found:
            return found[0]
    raise FileNotFoundError(
        f"No audio manifest at {path}: expected a .jsonl / .jsonl.gz file or a folder holding "
        f"{' or '.join(MANIFEST_NAMES)}. Build it with `{BUILD_COMMAND}` (e.g. OUT={path}).")


def _open_manifest(path: Path, mode: str) -> tp.IO[str]:
    if path.name.endswith('.gz'):
        return tp.cast(tp.IO[str], gzip.open(path, mode + 't', encoding='utf-8'))
    return open(path, mode, encoding='utf-8')


def save_audio_meta(path: PathLike, metas: tp.Sequence[AudioMeta], relative: bool = False) -> Path:
    """Write a manifest: jsonl, or gzipped jsonl when `path` ends with `.gz`. Written atomically.

    Args:
        path: manifest file.
        metas: entries to write.
        relative: store `path` / `info_path` relative to the manifest's folder (so the folder can be
            moved with its audio); otherwise they are written as given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.path.abspath(path.parent)
    tmp = path.with_name(path.name + '.tmp.gz' if path.name.endswith('.gz') else path.name + '.tmp')
    with _open_manifest(tmp, 'w') as out:
        for meta in metas:
            if relative:
                info = meta.info_path and os.path.relpath(os.path.abspath(meta.info_path), folder)
                meta = replace(meta, path=os.path.relpath(os.path.abspath(meta.path), folder), info_path=info)
            if meta.amplitude is not None and not math.isfinite(meta.amplitude):
                raise ValueError(f"Refusing to write a non-finite amplitude {meta.amplitude} for {meta.path} "
                                 f"into {path}: the file holds NaN or infinite samples.")
            out.write(json.dumps(meta.to_dict(), allow_nan=False) + '\n')
    os.replace(tmp, path)
    return path


def load_audio_meta(path: PathLike, resolve: bool = True) -> tp.List[AudioMeta]:
    """Read a manifest (a `.jsonl` / `.jsonl.gz` file or a folder holding `data.jsonl[.gz]`).

    With `resolve`, relative `path` / `info_path` entries are resolved against the manifest's folder
    and returned absolute; otherwise entries are returned as stored.
    """
    manifest = resolve_manifest(path)
    folder = manifest.parent.resolve()
    metas = []
    with _open_manifest(manifest, 'r') as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                meta = AudioMeta.from_dict(json.loads(line))
            except (json.JSONDecodeError, ValueError, TypeError) as exc:
                raise ValueError(f"Invalid manifest line {manifest}:{lineno}: {exc}") from exc
            if resolve:
                meta.path = os.path.normpath(folder / meta.path)
                if meta.info_path is not None:
                    meta.info_path = os.path.normpath(folder / meta.info_path)
            metas.append(meta)
    return metas
