"""Latent files: precomputed continuous latents `[D, T]`, one memory-mapped `.npy` file per clip.

A latent folder holds `latent_NNNNN.npy` (float32 or float16 `[D, T]`) and `meta.json` with the
producing model (`model`: signature or export name), `frame_rate`, `dim` (D), optional `sample_rate`
and `extra`, and one entry per file: `{file, frames, scale, source}` where `scale` is the scale the
model returned with the latents (None when it does not normalise) and `source` the audio file.

Stereo audio coded by a mono autoencoder channel by channel is stored with its channels concatenated as
features: `[channels * D', T]`, left first, with `extra['channels']` the audio channels (1 when absent).

Write with `write_latent_files`; `LatentDataset` returns fixed-length crops drawn from
`(seed, epoch, index)` like `AudioDataset`, with `length` telling real frames from padding, and swaps the
left and right latents of stereo files at random when asked (`swap_channels`).
"""
from dataclasses import asdict, dataclass, field
import logging
from pathlib import Path
import typing as tp

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import ItemPlan, item_generator
from .token_dataset import META_NAME, _write_json, read_folder_meta

logger = logging.getLogger(__name__)

SWAP_SALT = 0x5_3a9  # the left/right swap draw is independent of the crop draw of the same item

PathLike = tp.Union[str, Path]
LatentItem = tp.Union[torch.Tensor, np.ndarray, tp.Tuple[tp.Any, tp.Optional[float], str]]


@dataclass
class LatentMeta:
    """What produced the latents.

    Attributes:
        model: signature (`//sig/SIG`) or export name of the producing model.
        frame_rate: latent frames per second.
        dim: latent channels D.
        sample_rate: audio sample rate of the producing model, if known.
        extra: free-form JSON-serialisable details.
    """
    model: str
    frame_rate: float
    dim: int
    sample_rate: tp.Optional[int] = None
    extra: tp.Dict[str, tp.Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Audio channels whose latents are concatenated as features (`extra['channels']`, default 1)."""
        return int(self.extra.get('channels') or 1)

    @classmethod
    def from_dict(cls, d: tp.Dict[str, tp.Any], where: str = 'latent metadata') -> 'LatentMeta':
        missing = [key for key in ('model', 'frame_rate', 'dim') if key not in d]
        if missing:
            raise ValueError(f"{where} lacks the keys {missing}.")
        return cls(model=str(d['model']), frame_rate=float(d['frame_rate']), dim=int(d['dim']),
                   sample_rate=None if d.get('sample_rate') is None else int(d['sample_rate']),
                   extra=dict(d.get('extra') or {}))


def write_latent_files(folder: PathLike, latents: tp.Iterable[LatentItem],
                       meta: tp.Union[LatentMeta, tp.Dict[str, tp.Any]], dtype: str = 'float32',
                       overwrite: bool = False) -> Path:
    """Write one `.npy` per latent item to `folder` and return the `meta.json` path.

    Args:
        folder: output folder (created).
        latents: items `[D, T]`, or `(latents, scale, source_path)` triples (scale may be None).
        meta: the producing model's `LatentMeta` (or a dict with its fields).
        dtype: `float32` or `float16` on disk.
        overwrite: replace an existing latent folder.
    Raises:
        ValueError: an item has the wrong shape, is empty, or holds NaN / infinite values.
    """
    folder = Path(folder)
    meta = meta if isinstance(meta, LatentMeta) else LatentMeta.from_dict(dict(meta))
    if dtype not in ('float32', 'float16'):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}.")
    if (folder / META_NAME).exists() and not overwrite:
        raise FileExistsError(f"{folder / META_NAME} exists: pass overwrite=True to replace these latents.")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, item in enumerate(latents):
        scale, source = None, f"{folder}#{index}"
        if isinstance(item, tuple):
            item, scale, source = item
        array = item.detach().float().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if array.ndim != 2 or array.shape[0] != meta.dim or array.shape[1] == 0:
            raise ValueError(f"Latent item {index} ({source}) has shape {array.shape}; expected [dim={meta.dim}, T>0].")
        if not np.isfinite(array).all():
            raise ValueError(f"Latent item {index} ({source}) holds NaN or infinite values.")
        name = f"latent_{index:05d}.npy"
        np.save(folder / name, array.astype(dtype))
        files.append({'file': name, 'frames': int(array.shape[1]),
                      'scale': None if scale is None else float(scale), 'source': str(source)})
    if not files:
        raise ValueError(f"No latent item to write to {folder}.")
    _write_json(folder / META_NAME, {**asdict(meta), 'kind': 'latents', 'files': files})
    return folder / META_NAME


def load_latent_meta(folder: PathLike) -> tp.Tuple[LatentMeta, tp.List[tp.Dict[str, tp.Any]]]:
    """The `LatentMeta` and file list of a latent folder; errors name the file to fix."""
    data = read_folder_meta(folder, 'latents', 'files', 'audiogen_lab.data.latent_dataset.write_latent_files')
    return LatentMeta.from_dict(data, str(Path(folder) / META_NAME)), list(data['files'])


class LatentDataset(torch.utils.data.Dataset):
    """Crops of precomputed latents.

    Items are dicts: `latents` float `[D, T]`, `length` (real frames; the rest is zero padding), `path`
    (the source audio file) and `scale` (float; 1.0 when the model returned none).

    Args:
        folder: latent folder (see the module docstring).
        segment_duration: crop length in seconds (`round(segment_duration * frame_rate)` frames); None
            returns whole files.
        shuffle: draw `num_samples` random crops per epoch, files weighted by length.
        num_samples: items per epoch; see `sampling` for the non-shuffled meaning.
        pad: pad crops shorter than the segment to its length.
        seed: sampling seed.
        name: dataset name used in logs and errors.
        swap_channels: probability of swapping the left and right latents of an item (stereo latents only;
            ignored for mono ones), drawn from `(seed, epoch, index)`.
    """

    def __init__(self, folder: PathLike, segment_duration: tp.Optional[float] = None, shuffle: bool = True,
                 num_samples: tp.Optional[int] = None, pad: bool = True, seed: int = 0, name: str = 'latents',
                 swap_channels: float = 0.0):
        self.folder = Path(folder)
        self.name = name
        self.meta, self.files = load_latent_meta(self.folder)
        if not 0.0 <= swap_channels <= 1.0:
            raise ValueError(f"{name}: swap_channels={swap_channels} is a probability, in [0, 1].")
        if self.meta.dim % self.meta.channels:
            raise ValueError(f"{self.folder / META_NAME}: dim={self.meta.dim} is not a multiple of "
                             f"channels={self.meta.channels}.")
        self.swap_channels = swap_channels if self.meta.channels == 2 else 0.0
        self.seed = seed
        if shuffle and num_samples is None:
            raise ValueError(f"{name} ({self.folder}): a shuffled latent dataset needs num_samples.")
        self.segment_frames = (None if segment_duration is None
                               else max(1, round(segment_duration * self.meta.frame_rate)))
        lengths = torch.tensor([f['frames'] for f in self.files], dtype=torch.float64)
        self.plan = ItemPlan(lengths, shuffle, num_samples, seed)
        self.pad = pad
        self.epoch = 0
        logger.info("%s: %d latent files (%d frames) from %s, model %s.", name, len(self.files),
                    int(lengths.sum()), self.folder, self.meta.model)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: with `shuffle`, items depend on `(seed, epoch, index)`."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tp.Dict[str, tp.Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} ({self.folder}): index {index} out of range for {len(self)} items.")
        entry, position = self.plan.pick(index, self.epoch)
        record = self.files[entry]
        path = self.folder / record['file']
        array = np.load(path, mmap_mode='r')
        if array.ndim != 2 or array.shape[0] != self.meta.dim or array.shape[1] != record['frames']:
            raise ValueError(f"{path} holds latents of shape {array.shape}; {self.folder / META_NAME} says "
                             f"[{self.meta.dim}, {record['frames']}].")
        length = array.shape[1]
        frames = length if self.segment_frames is None else min(length, self.segment_frames)
        offset = int(position * (length - frames + 1))
        latents = torch.from_numpy(np.array(array[:, offset:offset + frames], dtype=np.float32))
        if not torch.isfinite(latents).all():
            raise ValueError(f"{path} ({record['source']}) holds NaN or infinite latents.")
        if self.pad and self.segment_frames is not None and frames < self.segment_frames:
            latents = F.pad(latents, (0, self.segment_frames - frames))
        swap = item_generator(self.seed, self.epoch, index, SWAP_SALT)
        if self.swap_channels > 0 and float(torch.rand((), generator=swap)) < self.swap_channels:
            latents = torch.cat(latents.chunk(2, dim=0)[::-1])
        scale = 1.0 if record.get('scale') is None else float(record['scale'])
        return {'latents': latents, 'length': frames, 'path': record['source'], 'scale': scale}
