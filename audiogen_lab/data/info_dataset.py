"""Caption sidecars: text attributes stored beside audio files.

Naming convention: the sidecar of `folder/clip.wav` is `folder/clip.json` (the audio path with its
extension replaced by `.json`). Two audio files that differ only by extension share one sidecar.
A sidecar is a JSON object of text attributes, e.g.
`{"description": "A Bach chorale for organ", "genre": "classical", "instrument": "organ", "key": "G major"}`.
`description` is the caption, or a list of captions for clips described several ways (datasets pick one
per item from `(seed, epoch, index)`); every other key is an attribute.
"""
import json
from pathlib import Path
import typing as tp

from .audio import AudioReadError

PathLike = tp.Union[str, Path]
DESCRIPTION_KEY = 'description'


def sidecar_path(audio_path: PathLike) -> Path:
    """Where the sidecar of `audio_path` lives: the same path with a `.json` extension."""
    return Path(audio_path).with_suffix('.json')


def find_sidecar(audio_path: PathLike) -> tp.Optional[Path]:
    """The sidecar of `audio_path` if the file exists, else None."""
    path = sidecar_path(audio_path)
    return path if path.is_file() else None


Description = tp.Union[str, tp.List[str]]


def write_sidecar(audio_path: PathLike, description: tp.Optional[Description] = None, **attributes: tp.Any) -> Path:
    """Write the sidecar of `audio_path` holding `description` (one caption or a list of captions) and
    the other `attributes` (JSON values)."""
    data: tp.Dict[str, tp.Any] = {}
    if description is not None:
        data[DESCRIPTION_KEY] = description
    data.update(attributes)
    path = sidecar_path(audio_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    return path


def read_sidecar(path: PathLike) -> tp.Tuple[tp.Optional[Description], tp.Dict[str, tp.Any]]:
    """Read a sidecar file and return `(description, attributes)`.

    `description` is a string, a non-empty list of strings, or None; `attributes` holds every other key.
    Raises `AudioReadError` naming the file when it cannot be read, is not valid JSON, is not an object,
    or its description is neither a string nor a non-empty list of strings.
    """
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AudioReadError(path, f"invalid caption sidecar: {exc}") from exc
    if not isinstance(data, dict):
        raise AudioReadError(path, f"a caption sidecar must hold a JSON object, got {type(data).__name__}.")
    description = data.pop(DESCRIPTION_KEY, None)
    if isinstance(description, list):
        if not description or not all(isinstance(text, str) for text in description):
            raise AudioReadError(path, f"'{DESCRIPTION_KEY}' must be a string or a non-empty list of strings, "
                                       f"got {description!r}.")
    elif description is not None and not isinstance(description, str):
        raise AudioReadError(path, f"'{DESCRIPTION_KEY}' must be a string or a list of strings, "
                                   f"got {type(description).__name__}.")
    return description, data


def read_captions(path: PathLike) -> tp.Tuple[tp.List[str], tp.Dict[str, tp.Any]]:
    """Read a sidecar and return `(captions, attributes)`: `captions` lists every description (empty when
    the sidecar has none). Raises `AudioReadError` like `read_sidecar`."""
    description, attributes = read_sidecar(path)
    if description is None:
        return [], attributes
    return ([description] if isinstance(description, str) else list(description)), attributes
