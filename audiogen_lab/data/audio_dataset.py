"""Audio manifests and the segment dataset.

A manifest is a `data.jsonl` (or `data.jsonl.gz`) file with one `AudioMeta` per line:
`{"path": ..., "duration": ..., "sample_rate": ..., "channels": ..., "amplitude"?, "weight"?, "info_path"?}`.
Relative paths are relative to the manifest's folder, so a dataset folder holding its audio and its
manifest can be moved. Build one with:

    python -m audiogen_lab.data.audio_dataset ROOT OUT [--resolve] [--complete]

`AudioDataset` draws fixed-length segments (or whole files) from a manifest. With `shuffle=True` the
segment of item `i` in epoch `e` is a pure function of `(seed, e, i)`, so data order survives a
resume and is the same in every DataLoader worker.
"""
import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
import gzip
import hashlib
import json
import logging
import os
from pathlib import Path
import struct
import sys
import typing as tp

import torch
import torch.nn.functional as F

from .audio import MP3_FRAME_TOLERANCE, AudioReadError, audio_info, audio_read
from .audio_utils import convert_audio
from .info_dataset import find_sidecar, read_sidecar

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3')
MANIFEST_NAMES = ('data.jsonl', 'data.jsonl.gz')
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)
BUILD_COMMAND = 'python -m audiogen_lab.data.audio_dataset ROOT OUT'
# A file may hold this much less audio than its manifest entry claims (rounded durations in
# hand-written manifests) before it counts as truncated; MP3 files also get `MP3_FRAME_TOLERANCE`.
DURATION_TOLERANCE = 0.01


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


@dataclass
class SegmentInfo:
    """Where a dataset item comes from.

    Attributes:
        meta: the file's manifest entry.
        seek_time: start of the segment in the file, in seconds.
        n_frames: frames of actual audio in the item (at `sample_rate`), before padding.
        total_frames: frames in the item, padding included.
        sample_rate: of the item (the dataset's rate, after resampling).
        channels: of the item.
        description: caption from the sidecar json (only when the dataset returns info).
        attributes: other sidecar attributes (genre, instrument, key...).
    """
    meta: AudioMeta
    seek_time: float
    n_frames: int
    total_frames: int
    sample_rate: int
    channels: int
    description: tp.Optional[str] = None
    attributes: tp.Dict[str, tp.Any] = field(default_factory=dict)


def _scan_one(path: Path, complete: bool) -> tp.Union[AudioMeta, AudioReadError]:
    try:
        info = audio_info(path)
        if info.duration <= 0:
            raise AudioReadError(path, "the file holds no audio frames.")
        amplitude = None
        if complete:
            wav, _ = audio_read(path)
            amplitude = float(wav.abs().max()) if wav.numel() else 0.
    except AudioReadError as exc:
        return exc
    sidecar = find_sidecar(path)
    return AudioMeta(path=str(path), duration=info.duration, sample_rate=info.sample_rate,
                     channels=info.channels, amplitude=amplitude,
                     info_path=None if sidecar is None else str(sidecar))


def find_audio_files(root: PathLike, exts: tp.Sequence[str] = AUDIO_EXTENSIONS, progress: bool = False,
                     resolve: bool = True, workers: int = DEFAULT_WORKERS,
                     complete: bool = False) -> tp.List[AudioMeta]:
    """Scan `root` recursively for audio files and read their headers.

    Args:
        root: folder to scan.
        exts: file extensions to keep (case-insensitive).
        progress: print progress to stderr.
        resolve: make paths absolute with symlinks resolved; otherwise paths are `root` joined with
            the file's relative path.
        workers: threads reading headers.
        complete: also decode every file to fill `amplitude` (its peak absolute value): slow.
    Returns:
        Entries sorted by path. Unreadable or empty files are skipped with one warning listing them.
        `info_path` is set when a caption sidecar `<stem>.json` sits beside the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Cannot scan {root} for audio: no such folder.")
    exts = tuple(ext.lower() if ext.startswith('.') else '.' + ext.lower() for ext in exts)
    paths = sorted(p for p in root.rglob('*') if p.suffix.lower() in exts and p.is_file())
    if resolve:
        paths = [p.resolve() for p in paths]
    metas: tp.List[AudioMeta] = []
    failures: tp.List[AudioReadError] = []
    step = max(1, len(paths) // 10)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for idx, result in enumerate(pool.map(lambda p: _scan_one(p, complete), paths)):
            if isinstance(result, AudioReadError):
                failures.append(result)
            else:
                metas.append(result)
            if progress and ((idx + 1) % step == 0 or idx + 1 == len(paths)):
                print(f"Scanned {idx + 1}/{len(paths)} files in {root}", file=sys.stderr, flush=True)
    if failures:
        shown = '\n'.join(f"  {exc}" for exc in failures[:20])
        more = f"\n  ...and {len(failures) - 20} more" if len(failures) > 20 else ''
        logger.warning("Skipped %d unreadable audio files under %s:\n%s%s", len(failures), root, shown, more)
    return metas


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
            out.write(json.dumps(meta.to_dict()) + '\n')
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


def _item_seed(*values: int) -> int:
    """A 63-bit seed that depends only on `values` (stable across processes and platforms)."""
    digest = hashlib.blake2b(struct.pack(f'<{len(values)}q', *values), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2 ** 63 - 1)


class AudioDataset(torch.utils.data.Dataset):
    """Segments (or whole files) of audio from a list of manifest entries.

    Items are `wav [C, T]` at `sample_rate` with `channels` channels, or `(wav, SegmentInfo)` when
    `return_info`; batch them with `collater` into `[B, C, T]`.

    Args:
        meta: manifest entries.
        segment_duration: segment length in seconds; None returns whole files (batch them only when
            `pad=True` or when files have equal lengths).
        shuffle: draw `num_samples` random segments per epoch, files weighted by duration and weight;
            otherwise iterate over the files in order (first segment of each, or whole file).
        num_samples: dataset length when `shuffle`.
        sample_rate: output sample rate (files are resampled with julius).
        channels: output channels (mono <-> multi-channel conversion).
        pad: zero-pad segments shorter than `segment_duration` at the end.
        sample_on_duration: weight files by duration when drawing.
        sample_on_weight: weight files by their `weight` entry when drawing.
        min_segment_ratio: a drawn segment holds at least this fraction of `segment_duration` of
            audio (when the file is long enough).
        max_read_retry: how many other draws to try when a file cannot be read.
        return_info: also return a `SegmentInfo`, with the caption sidecar's description and attributes.
        min_audio_duration: drop files shorter than this (seconds) at construction.
        max_audio_duration: drop files longer than this (seconds) at construction.
        seed: sampling seed; item `i` of epoch `e` depends only on `(seed, e, i)`.
        max_failure_ratio: stop with an error when more than this fraction of the distinct files
            tried could not be read.
        name: dataset name used in logs and errors.
        manifest: manifest path used in errors (set by `from_meta`).
    """
    # The failure ratio is only judged once this many distinct files (or all of them) were tried.
    min_files_for_failure_ratio: int = 10

    def __init__(self, meta: tp.List[AudioMeta], segment_duration: tp.Optional[float] = None,
                 shuffle: bool = True, num_samples: int = 10_000, sample_rate: int = 48_000,
                 channels: int = 2, pad: bool = True, sample_on_duration: bool = True,
                 sample_on_weight: bool = True, min_segment_ratio: float = 0.5, max_read_retry: int = 10,
                 return_info: bool = False, min_audio_duration: tp.Optional[float] = None,
                 max_audio_duration: tp.Optional[float] = None, seed: int = 0,
                 max_failure_ratio: float = 0.1, name: str = 'dataset', manifest: tp.Optional[str] = None):
        self.name = name
        self.manifest = manifest
        if segment_duration is not None and segment_duration <= 0:
            raise ValueError(f"{self._label()}: segment_duration must be > 0 or None, got {segment_duration}.")
        if not 0 <= min_segment_ratio <= 1:
            raise ValueError(f"{self._label()}: min_segment_ratio must be in [0, 1], got {min_segment_ratio}.")
        if num_samples < 1 or sample_rate < 1 or channels < 1 or max_read_retry < 0:
            raise ValueError(f"{self._label()}: num_samples, sample_rate and channels must be >= 1 and "
                             f"max_read_retry >= 0, got {num_samples}, {sample_rate}, {channels}, {max_read_retry}.")
        if not 0 <= max_failure_ratio <= 1:
            raise ValueError(f"{self._label()}: max_failure_ratio must be in [0, 1], got {max_failure_ratio}.")
        if not meta:
            raise ValueError(f"{self._label()}: the manifest holds no audio files. Check the dataset path "
                             f"or rebuild the manifest with `{BUILD_COMMAND}`.")
        self.meta = self._filter(list(meta), min_audio_duration, max_audio_duration)
        self.segment_duration = segment_duration
        self.shuffle = shuffle
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.channels = channels
        self.pad = pad
        self.sample_on_duration = sample_on_duration
        self.sample_on_weight = sample_on_weight
        self.min_segment_ratio = min_segment_ratio
        self.max_read_retry = max_read_retry
        self.return_info = return_info
        self.seed = seed
        self.max_failure_ratio = max_failure_ratio
        self.epoch = 0
        self.sample_weights = self._sample_weights()
        self.failed_files: tp.Set[str] = set()
        self.tried_files: tp.Set[str] = set()
        hours = sum(m.duration for m in self.meta) / 3600
        what = 'whole files' if segment_duration is None else f"{segment_duration:g}s segments"
        logger.info("%s: %d files (%.2f h), %d items of %s at %d Hz, %d channels.", self._label(),
                    len(self.meta), hours, len(self), what, sample_rate, channels)

    @classmethod
    def from_meta(cls, root_or_manifest: PathLike, **kwargs: tp.Any) -> 'AudioDataset':
        """Build from a manifest file or a folder holding `data.jsonl[.gz]`; `kwargs` go to the constructor."""
        manifest = resolve_manifest(root_or_manifest)
        kwargs.setdefault('manifest', str(manifest))
        return cls(load_audio_meta(manifest), **kwargs)

    def _label(self) -> str:
        return f"{self.name} ({self.manifest})" if self.manifest else self.name

    def _filter(self, meta: tp.List[AudioMeta], min_duration: tp.Optional[float],
                max_duration: tp.Optional[float]) -> tp.List[AudioMeta]:
        kept = [m for m in meta if m.duration > 0
                and (min_duration is None or m.duration >= min_duration)
                and (max_duration is None or m.duration <= max_duration)]
        if len(kept) < len(meta):
            logger.info("%s: dropped %d of %d files that are empty or outside the duration range [%s, %s] s.",
                        self._label(), len(meta) - len(kept), len(meta), min_duration, max_duration)
        if not kept:
            raise ValueError(f"{self._label()}: no file is left after filtering durations to "
                             f"[{min_duration}, {max_duration}] s; relax min_audio_duration / max_audio_duration.")
        return kept

    def _sample_weights(self) -> torch.Tensor:
        weights = torch.ones(len(self.meta), dtype=torch.float64)
        if self.sample_on_duration:
            weights *= torch.tensor([m.duration for m in self.meta], dtype=torch.float64)
        if self.sample_on_weight:
            for m in self.meta:
                if m.weight is not None and m.weight < 0:
                    raise ValueError(f"{self._label()}: negative sampling weight {m.weight} for {m.path}.")
            weights *= torch.tensor([1. if m.weight is None else m.weight for m in self.meta], dtype=torch.float64)
        if weights.sum() <= 0:
            raise ValueError(f"{self._label()}: all sampling weights are zero; fix the manifest's `weight` "
                             f"entries or set sample_on_weight=False.")
        return weights

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: with `shuffle`, items depend on `(seed, epoch, index)`."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples if self.shuffle else len(self.meta)

    def _pick(self, index: int, attempt: int) -> tp.Tuple[AudioMeta, float]:
        """The file and seek time for `index`, on read attempt `attempt` (0 first)."""
        if not self.shuffle:
            return self.meta[(index + attempt) % len(self.meta)], 0.
        rng = torch.Generator().manual_seed(_item_seed(self.seed, self.epoch, index, attempt))
        file_index = int(torch.multinomial(self.sample_weights, 1, generator=rng).item())
        meta = self.meta[file_index]
        if self.segment_duration is None:
            return meta, 0.
        max_seek = max(0., meta.duration - self.segment_duration * self.min_segment_ratio)
        return meta, float(torch.rand(1, generator=rng, dtype=torch.float64).item()) * max_seek

    def __getitem__(self, index: int) -> tp.Union[torch.Tensor, tp.Tuple[torch.Tensor, SegmentInfo]]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self._label()}: index {index} out of range for {len(self)} items.")
        for attempt in range(self.max_read_retry + 1):
            meta, seek_time = self._pick(index, attempt)
            if meta.path in self.failed_files:
                continue  # Known bad: reading it again would fail the same way.
            self.tried_files.add(meta.path)
            try:
                return self._load(meta, seek_time)
            except AudioReadError as exc:
                self.failed_files.add(meta.path)
                logger.warning("%s: skipping unreadable file (%d of %d files tried so far failed): %s",
                               self._label(), len(self.failed_files), len(self.tried_files), exc)
                self._check_failure_ratio()
        raise RuntimeError(f"{self._label()}: no readable file for item {index} after "
                           f"{self.max_read_retry + 1} attempts. {self._failed_summary()}")

    def _failed_summary(self) -> str:
        failed = sorted(self.failed_files)
        more = f" ...and {len(failed) - 10} more" if len(failed) > 10 else ''
        return (f"Failed files: {', '.join(failed[:10])}{more}. Fix or remove them and rebuild the manifest "
                f"with `{BUILD_COMMAND}`.")

    def _check_failure_ratio(self) -> None:
        tried = len(self.tried_files)
        if tried < min(self.min_files_for_failure_ratio, len(self.meta)):
            return
        if len(self.failed_files) / tried > self.max_failure_ratio:
            raise RuntimeError(f"{self._label()}: {len(self.failed_files)} of the {tried} files tried could "
                               f"not be read, more than max_failure_ratio={self.max_failure_ratio}. "
                               f"{self._failed_summary()}")

    def _load(self, meta: AudioMeta, seek_time: float) -> tp.Union[torch.Tensor, tp.Tuple[torch.Tensor, SegmentInfo]]:
        """Read, check, convert and pad one item. Raises AudioReadError for unreadable or truncated files."""
        duration = -1. if self.segment_duration is None else self.segment_duration
        wav, sr = audio_read(meta.path, seek_time, duration, pad=False)
        # The manifest says how much audio the file holds: less means it was truncated since.
        start = int(round(seek_time * sr))
        available = int(round(meta.duration * sr)) - start
        expected = available if duration < 0 else min(int(round(duration * sr)), available)
        tolerance = DURATION_TOLERANCE * sr + (MP3_FRAME_TOLERANCE if meta.path.lower().endswith('.mp3') else 0)
        if wav.shape[-1] < expected - tolerance:
            raise AudioReadError(meta.path, f"holds {(start + wav.shape[-1]) / sr:.3f}s of audio from the "
                                            f"requested segment on, but the manifest says {meta.duration:.3f}s: "
                                            f"the file is truncated or changed since the manifest was built.")
        try:
            wav = convert_audio(wav, sr, self.sample_rate, self.channels)
        except ValueError as exc:
            raise ValueError(f"{self._label()}: cannot convert {meta.path}: {exc}") from exc
        n_frames = wav.shape[-1]
        if self.segment_duration is not None:
            target = int(round(self.segment_duration * self.sample_rate))
            wav = wav[..., :target]
            n_frames = wav.shape[-1]
            if self.pad and n_frames < target:
                wav = F.pad(wav, (0, target - n_frames))
        if not self.return_info:
            return wav
        info = SegmentInfo(meta=meta, seek_time=seek_time, n_frames=n_frames, total_frames=wav.shape[-1],
                           sample_rate=self.sample_rate, channels=self.channels)
        if meta.info_path is not None:
            info.description, info.attributes = read_sidecar(meta.info_path)
        return wav, info

    def collater(self, samples: tp.Sequence[tp.Any]
                 ) -> tp.Union[torch.Tensor, tp.Tuple[torch.Tensor, tp.List[SegmentInfo]]]:
        """Batch items into `wav [B, C, T]` (and the list of `SegmentInfo` when `return_info`).

        Items of different lengths (whole files, unpadded segments) are zero-padded to the longest
        when `pad=True`; otherwise they raise a ValueError.
        """
        if self.return_info:
            wavs, infos = [list(x) for x in zip(*samples)]
        else:
            wavs, infos = list(samples), []
        max_len = max(w.shape[-1] for w in wavs)
        if any(w.shape[-1] != max_len for w in wavs):
            if not self.pad:
                raise ValueError(f"{self._label()}: cannot batch items of different lengths "
                                 f"{[w.shape[-1] for w in wavs]}; set pad=True or use batch_size=1.")
            wavs = [F.pad(w, (0, max_len - w.shape[-1])) for w in wavs]
            infos = [replace(info, total_frames=max_len) for info in infos]
        batch = torch.stack(wavs)
        return (batch, infos) if self.return_info else batch


def _manifest_path(out: PathLike) -> Path:
    out = Path(out)
    if out.name.endswith('.jsonl') or out.name.endswith('.jsonl.gz'):
        return out
    return out / MANIFEST_NAMES[0]


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Build a manifest: `python -m audiogen_lab.data.audio_dataset ROOT OUT [--resolve] [--complete]`."""
    parser = argparse.ArgumentParser(
        prog='python -m audiogen_lab.data.audio_dataset',
        description="Scan a folder for audio files (wav, flac, ogg, mp3) and write a jsonl manifest.")
    parser.add_argument('root', help="folder to scan recursively")
    parser.add_argument('out', help="manifest file (.jsonl or .jsonl.gz), or a folder to hold data.jsonl")
    parser.add_argument('--resolve', action='store_true',
                        help="store absolute paths with symlinks resolved (default: paths relative to the "
                             "manifest's folder, so the dataset can be moved)")
    parser.add_argument('--complete', action='store_true',
                        help="decode every file to store its peak amplitude (slow)")
    parser.add_argument('--workers', type=int, default=DEFAULT_WORKERS, help="threads reading headers")
    parser.add_argument('--quiet', action='store_true', help="no progress output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    metas = find_audio_files(args.root, progress=not args.quiet, resolve=args.resolve,
                             workers=args.workers, complete=args.complete)
    if not metas:
        print(f"No readable audio file ({', '.join(AUDIO_EXTENSIONS)}) under {args.root}.", file=sys.stderr)
        return 1
    out = save_audio_meta(_manifest_path(args.out), metas, relative=not args.resolve)
    hours = sum(m.duration for m in metas) / 3600
    captions = sum(m.info_path is not None for m in metas)
    print(f"Wrote {out}: {len(metas)} files, {hours:.3f} hours, {captions} with captions.")
    return 0


if __name__ == '__main__':
    sys.exit(main())
