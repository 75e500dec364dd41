"""Token shards: precomputed discrete codes on disk, memory-mapped, read as an iterable dataset.

A token folder holds:
- `meta.json`: the producing model (`model`: its signature or export name), `frame_rate` (frames per
  second), `cardinality` (codes per codebook), `num_codebooks`, optional `sample_rate` and `extra`, and
  the list of shards;
- per shard `shard_NNNNN.npy` (codes `[K, F]`, the items of the shard concatenated along time; int16
  when the cardinality allows, else int32), `shard_NNNNN.offsets.npy` (int64 `[N + 1]`, item `i` is
  frames `offsets[i]:offsets[i + 1]`) and `shard_NNNNN.sources.json` (the source file of each item).

Write with `write_token_shards`, read with `TokenShardDataset`, an IterableDataset that splits its
items across ranks and DataLoader workers (each index read exactly once) and draws crops from
`(seed, epoch, index)` like `AudioDataset`.
"""
from dataclasses import asdict, dataclass, field
import json
import logging
import os
from pathlib import Path
import typing as tp

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import ItemPlan, shard_indices

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
META_NAME = 'meta.json'
DEFAULT_SHARD_FRAMES = 1 << 22  # frames per shard before a new one is started
CodesItem = tp.Union[torch.Tensor, np.ndarray, tp.Tuple[tp.Any, str]]


@dataclass
class TokenShardMeta:
    """What produced the codes and how to read them.

    Attributes:
        model: signature (`//sig/SIG`) or export name of the producing compression model.
        frame_rate: code frames per second.
        cardinality: codes per codebook (values are in `[0, cardinality)`).
        num_codebooks: K.
        sample_rate: audio sample rate of the producing model, if known.
        extra: free-form JSON-serialisable details (e.g. bandwidth).
    """
    model: str
    frame_rate: float
    cardinality: int
    num_codebooks: int
    sample_rate: tp.Optional[int] = None
    extra: tp.Dict[str, tp.Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: tp.Dict[str, tp.Any], where: str = 'token metadata') -> 'TokenShardMeta':
        missing = [key for key in ('model', 'frame_rate', 'cardinality', 'num_codebooks') if key not in d]
        if missing:
            raise ValueError(f"{where} lacks the keys {missing}.")
        return cls(model=str(d['model']), frame_rate=float(d['frame_rate']), cardinality=int(d['cardinality']),
                   num_codebooks=int(d['num_codebooks']),
                   sample_rate=None if d.get('sample_rate') is None else int(d['sample_rate']),
                   extra=dict(d.get('extra') or {}))


def _codes_dtype(cardinality: int) -> np.dtype:
    return np.dtype(np.int16) if cardinality <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def _write_json(path: Path, data: tp.Any) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + '\n', encoding='utf-8')
    os.replace(tmp, path)


def write_token_shards(folder: PathLike, codes: tp.Iterable[CodesItem],
                       meta: tp.Union[TokenShardMeta, tp.Dict[str, tp.Any]],
                       shard_frames: int = DEFAULT_SHARD_FRAMES, overwrite: bool = False) -> Path:
    """Write codes to memory-mappable shards in `folder` and return the `meta.json` path.

    Args:
        folder: output folder (created).
        codes: items `[K, T]` (integer tensors or arrays), or `(codes, source_path)` pairs naming the
            audio file each item was encoded from (else the item is named `<folder>#<index>`).
        meta: the producing model's `TokenShardMeta` (or a dict with its fields).
        shard_frames: start a new shard once this many frames are buffered.
        overwrite: replace an existing token folder.
    Raises:
        ValueError: an item has the wrong shape, is empty, or holds codes outside `[0, cardinality)`.
        FileExistsError: `folder` already holds token shards and `overwrite` is False.
    """
    folder = Path(folder)
    meta = meta if isinstance(meta, TokenShardMeta) else TokenShardMeta.from_dict(dict(meta))
    if (folder / META_NAME).exists() and not overwrite:
        raise FileExistsError(f"{folder / META_NAME} exists: pass overwrite=True to replace these token shards.")
    folder.mkdir(parents=True, exist_ok=True)
    dtype = _codes_dtype(meta.cardinality)
    shards: tp.List[tp.Dict[str, tp.Any]] = []
    buffer: tp.List[np.ndarray] = []
    sources: tp.List[str] = []

    def flush() -> None:
        if not buffer:
            return
        name = f"shard_{len(shards):05d}"
        offsets = np.concatenate([[0], np.cumsum([b.shape[1] for b in buffer])]).astype(np.int64)
        np.save(folder / f"{name}.npy", np.concatenate(buffer, axis=1))
        np.save(folder / f"{name}.offsets.npy", offsets)
        _write_json(folder / f"{name}.sources.json", sources)
        shards.append({'file': f"{name}.npy", 'items': len(buffer), 'frames': int(offsets[-1])})
        buffer.clear()
        sources.clear()

    total = 0
    for index, item in enumerate(codes):
        source = f"{folder}#{index}"
        if isinstance(item, tuple):
            item, source = item
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if array.ndim != 2 or array.shape[0] != meta.num_codebooks or array.shape[1] == 0:
            raise ValueError(f"Token item {index} ({source}) has shape {array.shape}; expected "
                             f"[num_codebooks={meta.num_codebooks}, T>0].")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"Token item {index} ({source}) has dtype {array.dtype}; codes are integers.")
        if array.min() < 0 or array.max() >= meta.cardinality:
            raise ValueError(f"Token item {index} ({source}) holds codes in [{array.min()}, {array.max()}], "
                             f"outside [0, cardinality={meta.cardinality}).")
        buffer.append(array.astype(dtype))
        sources.append(str(source))
        total += 1
        if sum(b.shape[1] for b in buffer) >= shard_frames:
            flush()
    flush()
    if not total:
        raise ValueError(f"No token item to write to {folder}.")
    _write_json(folder / META_NAME, {**asdict(meta), 'kind': 'tokens', 'dtype': dtype.name, 'shards': shards})
    logger.info("Wrote %d token items in %d shards to %s.", total, len(shards), folder)
    return folder / META_NAME


def read_folder_meta(folder: PathLike, kind: str, entries: str, writer: str) -> tp.Dict[str, tp.Any]:
    """The checked `meta.json` of a folder of precomputed encodings of `kind` (``tokens``, ``latents``),
    whose list of files is under `entries`; errors name the file and the `writer` function to use."""
    path = Path(folder) / META_NAME
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise FileNotFoundError(f"No {kind} at {folder}: {path} is missing. Write them with `{writer}`.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read {kind} metadata {path}: {exc}") from exc
    if data.get('kind') != kind or not data.get(entries):
        raise ValueError(f"{path} does not describe {kind} (kind={data.get('kind')!r}, "
                         f"{len(data.get(entries) or [])} {entries}).")
    return data


def load_token_meta(folder: PathLike) -> tp.Tuple[TokenShardMeta, tp.List[tp.Dict[str, tp.Any]]]:
    """The `TokenShardMeta` and shard list of a token folder; errors name the file to fix."""
    data = read_folder_meta(folder, 'tokens', 'shards', 'audiogen_lab.data.token_dataset.write_token_shards')
    return TokenShardMeta.from_dict(data, str(Path(folder) / META_NAME)), list(data['shards'])


class TokenShardDataset(torch.utils.data.IterableDataset):
    """Crops of precomputed codes, iterated across ranks and DataLoader workers without duplicates.

    Yields item dicts `tokens` long `[K, T]`, `length` (real frames; the rest is padding with 0) and
    `path` (the item's source). Item `i` reads entry/offset from `(seed, epoch, i)` (see `sampling`);
    items are split across ranks and workers in blocks of `block_size` (`sampling.shard_indices`).

    Args:
        folder: token folder (see the module docstring).
        segment_duration: crop length in seconds (`round(segment_duration * frame_rate)` frames); None
            yields whole items.
        shuffle: draw `num_samples` random crops per epoch, items weighted by length.
        num_samples: items per epoch (all ranks together); see `sampling` for the non-shuffled meaning.
        pad: pad crops shorter than the segment to its length (`length` says where).
        seed: sampling seed.
        block_size: items per block when splitting across ranks and workers: the per-rank batch size
            keeps every batch whole and the batch order independent of the number of workers.
        rank, world_size: override torch.distributed's (e.g. to split by hand).
        name: dataset name used in logs and errors.
    """

    def __init__(self, folder: PathLike, segment_duration: tp.Optional[float] = None, shuffle: bool = True,
                 num_samples: tp.Optional[int] = None, pad: bool = True, seed: int = 0, block_size: int = 1,
                 rank: tp.Optional[int] = None, world_size: tp.Optional[int] = None, name: str = 'tokens'):
        self.folder = Path(folder)
        self.name = name
        self.meta, shards = load_token_meta(self.folder)
        self.shard_files = [str(self.folder / shard['file']) for shard in shards]
        # Flat index of items: (shard, start, length).
        entries, self.sources = [], []
        for shard_index, shard in enumerate(shards):
            base = self.folder / shard['file'][:-len('.npy')]
            offsets = np.load(f"{base}.offsets.npy")
            sources = json.loads(Path(f"{base}.sources.json").read_text(encoding='utf-8'))
            if len(offsets) != shard['items'] + 1 or len(sources) != shard['items']:
                raise ValueError(f"{base}.offsets.npy / .sources.json do not match the {shard['items']} items "
                                 f"that {self.folder / META_NAME} lists for {shard['file']}.")
            for i in range(shard['items']):
                entries.append((shard_index, int(offsets[i]), int(offsets[i + 1] - offsets[i])))
            self.sources.extend(sources)
        self.entries = entries
        self.segment_frames = (None if segment_duration is None
                               else max(1, round(segment_duration * self.meta.frame_rate)))
        if shuffle and num_samples is None:
            raise ValueError(f"{name} ({self.folder}): a shuffled token dataset needs num_samples.")
        lengths = torch.tensor([length for _, _, length in entries], dtype=torch.float64)
        self.plan = ItemPlan(lengths, shuffle, num_samples, seed)
        self.pad = pad
        self.block_size = block_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._arrays: tp.Dict[int, np.ndarray] = {}
        logger.info("%s: %d token items (%d frames) from %s, model %s, %d items per epoch.", name, len(entries),
                    int(lengths.sum()), self.folder, self.meta.model, len(self.plan))

    def __getstate__(self) -> tp.Dict[str, tp.Any]:
        state = dict(self.__dict__)
        state['_arrays'] = {}  # memory maps are reopened in each worker
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: with `shuffle`, items depend on `(seed, epoch, index)`."""
        self.epoch = int(epoch)

    def num_items(self) -> int:
        """Items per epoch over all ranks and workers."""
        return len(self.plan)

    def _array(self, shard: int) -> np.ndarray:
        if shard not in self._arrays:
            array = np.load(self.shard_files[shard], mmap_mode='r')
            if array.ndim != 2 or array.shape[0] != self.meta.num_codebooks:
                raise ValueError(f"{self.shard_files[shard]} holds codes of shape {array.shape}; "
                                 f"{self.folder / META_NAME} says num_codebooks={self.meta.num_codebooks}.")
            self._arrays[shard] = array
        return self._arrays[shard]

    def get(self, index: int) -> tp.Dict[str, tp.Any]:
        """Item `index` of the current epoch (what iteration yields for it)."""
        entry, position = self.plan.pick(index, self.epoch)
        shard, start, length = self.entries[entry]
        frames = length if self.segment_frames is None else min(length, self.segment_frames)
        offset = int(position * (length - frames + 1))
        codes = torch.from_numpy(np.array(self._array(shard)[:, start + offset:start + offset + frames])).long()
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.meta.cardinality):
            raise ValueError(f"{self.shard_files[shard]}: item {self.sources[entry]} holds codes outside "
                             f"[0, cardinality={self.meta.cardinality}).")
        if self.pad and self.segment_frames is not None and frames < self.segment_frames:
            codes = F.pad(codes, (0, self.segment_frames - frames))
        return {'tokens': codes, 'length': frames, 'path': self.sources[entry]}

    def read_item(self, entry: int) -> tp.Dict[str, tp.Any]:
        """The whole stored item `entry` (``0 <= entry < len(self.entries)``), uncropped: `tokens` long
        ``[K, T]``, `length` and `path` (for corpus statistics and checks)."""
        shard, start, length = self.entries[entry]
        codes = torch.from_numpy(np.array(self._array(shard)[:, start:start + length])).long()
        return {'tokens': codes, 'length': length, 'path': self.sources[entry]}

    def __iter__(self) -> tp.Iterator[tp.Dict[str, tp.Any]]:
        for index in shard_indices(len(self.plan), self.block_size, self.rank, self.world_size):
            yield self.get(index)
