"""The segment dataset: fixed-length segments (or whole files) of audio from a manifest.

`AudioDataset` returns item dicts (`audio [C, T]`, `length`, `path`, and `info` when asked) that
`batch.collate` pads and stacks into dict batches with a mask. Item `i` of epoch `e` is a pure function
of `(seed, e, i)` (see `sampling`), so data order survives a resume and is the same in every DataLoader
worker. Files that cannot be read, are truncated, hold NaN / infinite samples or fewer than
`min_frames` samples are skipped with a warning naming them and counted against `max_failure_ratio`.

This module also runs the manifest builder:

    python -m audiogen_lab.data.audio_dataset ROOT OUT [--resolve] [--complete] [--headers-only]
"""
from dataclasses import dataclass, field
import logging
from pathlib import Path
import sys
import typing as tp

import torch
import torch.nn.functional as F

from .audio import MP3_FRAME_TOLERANCE, AudioReadError, audio_read
from .audio_utils import convert_audio
from .batch import collate
from .info_dataset import read_captions
from .manifest import (BUILD_COMMAND, MANIFEST_NAMES, AudioMeta, load_audio_meta,  # noqa: F401
                       resolve_manifest, save_audio_meta)
from .sampling import ItemPlan, choose, item_seed
from .scan import AUDIO_EXTENSIONS, DEFAULT_WORKERS, find_audio_files, main, scan_audio_files  # noqa: F401

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
# A file may hold this much less audio than its manifest entry claims (rounded durations in
# hand-written manifests) before it counts as truncated; MP3 files also get `MP3_FRAME_TOLERANCE`.
DURATION_TOLERANCE = 0.01
# Files holding fewer samples than this (at the dataset's sample rate) are skipped by default.
DEFAULT_MIN_FRAMES = 512
DEFAULT_NUM_SAMPLES = 10_000  # items per epoch of a shuffled dataset without num_samples
_item_seed = item_seed  # earlier name


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
        description: caption from the sidecar json (only when the dataset returns info); one of
            several when the sidecar lists several, picked from `(seed, epoch, index)`.
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


class AudioDataset(torch.utils.data.Dataset):
    """Segments (or whole files) of audio from a list of manifest entries.

    Items are dicts: `audio` float `[C, T]` at `sample_rate` with `channels` channels, `length` (frames
    of real audio, the rest is zero padding), `path` (the source file) and `info` (`SegmentInfo`) when
    `return_info`. `collater` (`batch.collate`) batches them into `audio [B, C, T]`, `mask [B, T]`,
    `paths` (and `info`), padding items of different lengths.

    Args:
        meta: manifest entries.
        segment_duration: segment length in seconds; None returns whole files.
        shuffle: draw `num_samples` random segments per epoch, files weighted by duration and weight.
        num_samples: items per epoch (default 10,000 when `shuffle`). With `shuffle=False`: None gives
            one item per file in order (its first segment or the whole file); N gives N items fixed
            across epochs, spread over the files by a seeded permutation (cycled when N exceeds the
            number of files), each segment at a seeded position.
        sample_rate: output sample rate (files are resampled with julius).
        channels: output channels (mono <-> multi-channel conversion).
        pad: zero-pad segments shorter than `segment_duration` at the end (`length` says where).
        sample_on_duration: weight files by duration when drawing.
        sample_on_weight: weight files by their `weight` entry when drawing.
        min_segment_ratio: a drawn segment holds at least this fraction of `segment_duration` of
            audio (when the file is long enough).
        max_read_retry: how many other draws to try when a file cannot be read.
        return_info: also return a `SegmentInfo`, with a caption and the attributes of the sidecar.
        min_audio_duration: drop files shorter than this (seconds) at construction.
        max_audio_duration: drop files longer than this (seconds) at construction.
        min_frames: files holding fewer samples than this (at `sample_rate`) are skipped with a warning
            naming them (at construction from the manifest, and when read); set it to at least one
            frame (hop length) of the model.
        seed: sampling seed; item `i` of epoch `e` depends only on `(seed, e, i)`.
        max_failure_ratio: stop with an error when more than this fraction of the distinct files
            tried could not be read.
        name: dataset name used in logs and errors.
        manifest: manifest path used in errors (set by `from_meta`).
    """
    # The failure ratio is only judged once this many distinct files (or all of them) were tried.
    min_files_for_failure_ratio: int = 10

    def __init__(self, meta: tp.List[AudioMeta], segment_duration: tp.Optional[float] = None,
                 shuffle: bool = True, num_samples: tp.Optional[int] = None, sample_rate: int = 48_000,
                 channels: int = 2, pad: bool = True, sample_on_duration: bool = True,
                 sample_on_weight: bool = True, min_segment_ratio: float = 0.5, max_read_retry: int = 10,
                 return_info: bool = False, min_audio_duration: tp.Optional[float] = None,
                 max_audio_duration: tp.Optional[float] = None, min_frames: int = DEFAULT_MIN_FRAMES,
                 seed: int = 0, max_failure_ratio: float = 0.1, name: str = 'dataset',
                 manifest: tp.Optional[str] = None):
        self.name = name
        self.manifest = manifest
        if segment_duration is not None and segment_duration <= 0:
            raise ValueError(f"{self._label()}: segment_duration must be > 0 or None, got {segment_duration}.")
        if not 0 <= min_segment_ratio <= 1:
            raise ValueError(f"{self._label()}: min_segment_ratio must be in [0, 1], got {min_segment_ratio}.")
        if shuffle and num_samples is None:
            num_samples = DEFAULT_NUM_SAMPLES
        if (num_samples is not None and num_samples < 1) or sample_rate < 1 or channels < 1 or max_read_retry < 0:
            raise ValueError(f"{self._label()}: num_samples, sample_rate and channels must be >= 1 and "
                             f"max_read_retry >= 0, got {num_samples}, {sample_rate}, {channels}, {max_read_retry}.")
        if not 0 <= max_failure_ratio <= 1:
            raise ValueError(f"{self._label()}: max_failure_ratio must be in [0, 1], got {max_failure_ratio}.")
        if min_frames < 1:
            raise ValueError(f"{self._label()}: min_frames must be >= 1, got {min_frames}.")
        if not meta:
            raise ValueError(f"{self._label()}: the manifest holds no audio files. Check the dataset path "
                             f"or rebuild the manifest with `{BUILD_COMMAND}`.")
        self.sample_rate = sample_rate
        self.min_frames = min_frames
        self.meta = self._filter(list(meta), min_audio_duration, max_audio_duration)
        self.segment_duration = segment_duration
        self.shuffle = shuffle
        self.num_samples = num_samples
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
        self.plan = ItemPlan(self.sample_weights, shuffle, num_samples, seed)
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
        short = [m for m in meta if round(m.duration * self.sample_rate) < self.min_frames]
        if short:
            shown = ', '.join(f"{m.path} ({m.duration * self.sample_rate:.0f} samples)" for m in short[:20])
            more = f" ...and {len(short) - 20} more" if len(short) > 20 else ''
            logger.warning("%s: skipping %d files holding fewer than min_frames=%d samples at %d Hz: %s%s",
                           self._label(), len(short), self.min_frames, self.sample_rate, shown, more)
        long_enough = [m for m in meta if round(m.duration * self.sample_rate) >= self.min_frames]
        kept = [m for m in long_enough if (min_duration is None or m.duration >= min_duration)
                and (max_duration is None or m.duration <= max_duration)]
        if len(kept) < len(long_enough):
            logger.info("%s: dropped %d of %d files outside the duration range [%s, %s] s.", self._label(),
                        len(long_enough) - len(kept), len(long_enough), min_duration, max_duration)
        if not kept:
            raise ValueError(f"{self._label()}: no file is left after filtering durations to "
                             f"[{min_duration}, {max_duration}] s and at least min_frames={self.min_frames} "
                             f"samples; relax min_audio_duration / max_audio_duration / min_frames.")
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
        return len(self.plan)

    def _pick(self, index: int, attempt: int) -> tp.Tuple[AudioMeta, float]:
        """The file and seek time for `index`, on read attempt `attempt` (0 first)."""
        entry, position = self.plan.pick(index, self.epoch, attempt)
        meta = self.meta[entry]
        if self.segment_duration is None:
            return meta, 0.
        max_seek = max(0., meta.duration - self.segment_duration * self.min_segment_ratio)
        return meta, position * max_seek

    def __getitem__(self, index: int) -> tp.Dict[str, tp.Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self._label()}: index {index} out of range for {len(self)} items.")
        for attempt in range(self.max_read_retry + 1):
            meta, seek_time = self._pick(index, attempt)
            if meta.path in self.failed_files:
                continue  # Known bad: reading it again would fail the same way.
            self.tried_files.add(meta.path)
            try:
                return self._load(meta, seek_time, index)
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

    def _read(self, meta: AudioMeta, seek_time: float) -> tp.Tuple[torch.Tensor, int]:
        """Read and check the audio of one item `[C, T]` at the file's rate: raises AudioReadError for
        unreadable, truncated, non-finite or too short files."""
        duration = -1. if self.segment_duration is None else self.segment_duration
        wav, sr = audio_read(meta.path, seek_time, duration, pad=False)  # also rejects NaN / inf samples
        # The manifest says how much audio the file holds: less means it was truncated since.
        start = int(round(seek_time * sr))
        available = int(round(meta.duration * sr)) - start
        wanted = available if duration < 0 else int(round(duration * sr))
        expected = min(wanted, available)
        tolerance = DURATION_TOLERANCE * sr + (MP3_FRAME_TOLERANCE if meta.path.lower().endswith('.mp3') else 0)
        if wav.shape[-1] < expected - tolerance:
            raise AudioReadError(meta.path, f"holds {(start + wav.shape[-1]) / sr:.3f}s of audio from the "
                                            f"requested segment on, but the manifest says {meta.duration:.3f}s: "
                                            f"the file is truncated or changed since the manifest was built.")
        if wav.shape[-1] < wanted:  # the read reached the end: the whole file's length is known
            file_frames = (start + wav.shape[-1]) * self.sample_rate / sr
            if file_frames < self.min_frames:
                raise AudioReadError(meta.path, f"holds {file_frames:.0f} samples at {self.sample_rate} Hz, "
                                                f"fewer than min_frames={self.min_frames}.")
        return wav, sr

    def _load(self, meta: AudioMeta, seek_time: float, index: int) -> tp.Dict[str, tp.Any]:
        """Read, check, convert and pad one item. Raises AudioReadError for files that must be skipped."""
        wav, sr = self._read(meta, seek_time)
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
        item: tp.Dict[str, tp.Any] = {'audio': wav, 'length': n_frames, 'path': meta.path}
        if self.return_info:
            info = SegmentInfo(meta=meta, seek_time=seek_time, n_frames=n_frames, total_frames=wav.shape[-1],
                               sample_rate=self.sample_rate, channels=self.channels)
            if meta.info_path is not None:
                captions, info.attributes = read_captions(meta.info_path)
                info.description = self.choose_caption(captions, index)
            item['info'] = info
        return item

    def choose_caption(self, captions: tp.Sequence[str], index: int) -> tp.Optional[str]:
        """One of `captions` for item `index`, from `(seed, epoch, index)` (fixed across epochs when not
        shuffled); None when there is none."""
        if not captions:
            return None
        return choose(captions, self.seed, self.plan.fixed_epoch(self.epoch), index)

    def collater(self, samples: tp.Sequence[tp.Dict[str, tp.Any]]) -> tp.Dict[str, tp.Any]:
        """Batch items into a dict batch (`audio [B, C, T]`, `mask [B, T]`, `paths`, `info`): see `batch.collate`."""
        return collate(samples)


if __name__ == '__main__':
    sys.exit(main())
