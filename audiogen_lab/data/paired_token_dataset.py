"""Aligned token folders read together: crops of several code streams covering the same seconds.

`tokenize_manifest` writes aligned token folders (e.g. `semantic/` ids `[1, Ts]` at 50 Hz and `acoustic/`
codes `[K, Ta]` at 100 Hz): item `i` of every folder comes from the same audio file. `PairedTokenDataset`
reads such folders as one IterableDataset whose items hold one crop per stream, all starting at the same
time `t0` and lasting the same duration, as AudioLM's coarse stage needs (semantic ids and the acoustic
codes of the same span).

The start `t0` is drawn from `(seed, epoch, index)` like `TokenShardDataset`, on the frame grid of the
slowest stream so that every stream starts on a whole frame of it; stream `s` (frame rate `r_s`) then
reads frames `[round(t0 * r_s), round(t0 * r_s) + round(segment_duration * r_s))`. An item's usable
duration `d` is that of its shortest stream: an item shorter than the segment (or every item when
`segment_duration` is None) gives each stream its first `floor(d * r_s)` frames.

Conditioning streams (``meta.extra['conditioning']``, e.g. MuLaN tokens with one column per 10 s window) do
not count in an item's duration nor in the grid: each crop reads the one column whose window holds the
crop's middle, `[K, 1]` (length 1).
"""
import logging
import typing as tp

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import ItemPlan, shard_indices
from .token_dataset import PathLike, TokenShardDataset, TokenShardMeta

logger = logging.getLogger(__name__)


class PairedTokenDataset(torch.utils.data.IterableDataset):
    """Time-aligned crops of several token folders, iterated across ranks and DataLoader workers.

    Yields item dicts `streams` `{name: long [K_name, T_name]}` (zero-padded to the segment with `pad`),
    `stream_lengths` `{name: int}` (real frames of each stream), `length` (real frames of the first timed
    stream)
    and `path` (the items' common source). `batch.collate` turns them into `streams [B, K, T]` and
    `stream_masks [B, T]` per name.

    Args:
        folders: `{stream name: token folder}`; the folders hold the same items (same count and `sources`,
            in the same order), e.g. `{'semantic': out / 'semantic', 'acoustic': out / 'acoustic'}`.
        segment_duration: crop length in seconds; None yields whole items (cut to the shortest stream).
        shuffle: draw `num_samples` random crops per epoch, items weighted by duration.
        num_samples: items per epoch (all ranks together); see `sampling` for the non-shuffled meaning.
        pad: pad crops shorter than the segment to its length (`stream_lengths` says where).
        seed: sampling seed.
        block_size: items per block when splitting across ranks and workers (`sampling.shard_indices`).
        rank, world_size: override torch.distributed's (e.g. to split by hand).
        name: dataset name used in logs and errors.
    """

    def __init__(self, folders: tp.Mapping[str, PathLike], segment_duration: tp.Optional[float] = None,
                 shuffle: bool = True, num_samples: tp.Optional[int] = None, pad: bool = True, seed: int = 0,
                 block_size: int = 1, rank: tp.Optional[int] = None, world_size: tp.Optional[int] = None,
                 name: str = 'paired_tokens'):
        if not folders:
            raise ValueError(f"{name}: `folders` names no token folder; pass {{stream name: folder}}.")
        if segment_duration is not None and segment_duration <= 0:
            raise ValueError(f"{name}: segment_duration must be > 0 or None, got {segment_duration}.")
        if shuffle and num_samples is None:
            raise ValueError(f"{name}: a shuffled paired token dataset needs num_samples.")
        self.name = name
        self.datasets = {stream: TokenShardDataset(folder, shuffle=False, name=f"{name}.{stream}")
                         for stream, folder in folders.items()}
        self.stream_names = list(self.datasets)
        first_name, first = self.stream_names[0], self.datasets[self.stream_names[0]]
        for stream, dataset in self.datasets.items():
            if len(dataset.entries) != len(first.entries):
                raise ValueError(f"{name}: token folders {first.folder} ({len(first.entries)} items) and "
                                 f"{dataset.folder} ({len(dataset.entries)} items) do not hold the same items; "
                                 f"write both from one manifest.")
            mismatch = next((i for i, (a, b) in enumerate(zip(first.sources, dataset.sources)) if a != b), None)
            if mismatch is not None:
                raise ValueError(f"{name}: item {mismatch} of {first.folder} comes from "
                                 f"{first.sources[mismatch]} but item {mismatch} of {dataset.folder} from "
                                 f"{dataset.sources[mismatch]}; the folders of streams {first_name!r} and "
                                 f"{stream!r} are not aligned.")
        self.rates = {stream: dataset.meta.frame_rate for stream, dataset in self.datasets.items()}
        self.conditioning = [s for s, dataset in self.datasets.items() if dataset.meta.extra.get('conditioning')]
        timed = self.timed_streams = [s for s in self.stream_names if s not in self.conditioning]
        if not timed:
            raise ValueError(f"{name}: every stream ({self.stream_names}) is a conditioning stream; add the token "
                             "stream(s) to model, e.g. semantic or acoustic.")
        self.grid_rate = min(self.rates[s] for s in timed)  # crops start on a frame of the slowest stream
        # Usable duration of each item (seconds): that of its shortest stream.
        self.durations = [min(self.datasets[s].entries[i][2] / self.rates[s] for s in timed)
                          for i in range(len(first.entries))]
        self.segment_duration = segment_duration
        self.segment_frames = (None if segment_duration is None else
                               {s: 1 if s in self.conditioning else max(1, round(segment_duration * rate))
                                for s, rate in self.rates.items()})
        self.plan = ItemPlan(torch.tensor(self.durations, dtype=torch.float64), shuffle, num_samples, seed)
        self.pad = pad
        self.block_size = block_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        logger.info("%s: %d aligned items (%.1f s) in streams %s, %d items per epoch.", name, len(self.durations),
                    sum(self.durations), ', '.join(f"{s} @ {r:g} Hz" for s, r in self.rates.items()),
                    len(self.plan))

    def meta(self, name: str) -> TokenShardMeta:
        """The `TokenShardMeta` of stream `name`'s folder."""
        if name not in self.datasets:
            raise KeyError(f"{self.name}: no stream {name!r}; the streams are {self.stream_names}.")
        return self.datasets[name].meta

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: with `shuffle`, items depend on `(seed, epoch, index)`."""
        self.epoch = int(epoch)

    def num_items(self) -> int:
        """Items per epoch over all ranks and workers."""
        return len(self.plan)

    def _read(self, stream: str, entry: int, start: int, frames: int) -> torch.Tensor:
        """Frames `[start, start + frames)` of item `entry` of `stream`: long `[K, frames]`."""
        dataset = self.datasets[stream]
        shard, offset, _ = dataset.entries[entry]
        codes = torch.from_numpy(np.array(dataset._array(shard)[:, offset + start:offset + start + frames])).long()
        if codes.numel() and (codes.min() < 0 or codes.max() >= dataset.meta.cardinality):
            raise ValueError(f"{dataset.shard_files[shard]}: item {dataset.sources[entry]} holds codes outside "
                             f"[0, cardinality={dataset.meta.cardinality}).")
        return codes

    def get(self, index: int) -> tp.Dict[str, tp.Any]:
        """Item `index` of the current epoch (what iteration yields for it)."""
        entry, position = self.plan.pick(index, self.epoch)
        duration = self.durations[entry]
        grid_total = int(np.floor(duration * self.grid_rate + 1e-6))  # whole grid frames in the item
        limited = self.segment_duration is None or self.segment_duration >= duration
        if limited:  # the whole usable span: no stream reads past the end of the shortest one
            t0 = 0.
        else:
            grid_crop = min(grid_total, max(1, round(self.segment_duration * self.grid_rate)))
            t0 = int(position * (grid_total - grid_crop + 1)) / self.grid_rate
        streams, lengths = {}, {}
        span = duration if limited else min(self.segment_duration, duration)  # type: ignore[type-var]
        for stream in self.stream_names:
            rate = self.rates[stream]
            length = self.datasets[stream].entries[entry][2]
            if stream in self.conditioning:  # the window holding the crop's middle
                column = min(int((t0 + span / 2) * rate), length - 1)
                streams[stream], lengths[stream] = self._read(stream, entry, column, 1), 1
                continue
            start = min(round(t0 * rate), length)
            want = int(np.floor(duration * rate + 1e-6)) if limited else self.segment_frames[stream]
            frames = max(0, min(want, length - start))
            codes = self._read(stream, entry, start, frames)
            if self.pad and self.segment_frames is not None and frames < self.segment_frames[stream]:
                codes = F.pad(codes, (0, self.segment_frames[stream] - frames))
            streams[stream], lengths[stream] = codes, frames
        return {'streams': streams, 'stream_lengths': lengths, 'length': lengths[self.timed_streams[0]],
                'path': self.datasets[self.stream_names[0]].sources[entry]}

    def __iter__(self) -> tp.Iterator[tp.Dict[str, tp.Any]]:
        for index in shard_indices(len(self.plan), self.block_size, self.rank, self.world_size):
            yield self.get(index)
