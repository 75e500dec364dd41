"""Dict batches: one collate function for every dataset kind.

Datasets return item dicts:
- at most one time-axis tensor: `audio` float `[C, T]`, `tokens` long `[K, T]` or `latents` float `[D, T]`;
- `length`: int, frames of real data in that tensor (the rest is padding);
- or / and named token streams at their own frame rates: `streams` `{name: long [K_name, T_name]}` with
  `stream_lengths` `{name: int}` (real frames of each stream); an item holds a time-axis tensor, streams,
  or both;
- `path`: str, the item's source file;
- optional `info` (SegmentInfo), `text` (str caption), `scale` (float).

`collate` stacks them into a batch dict: the tensor `[B, *, T]` zero-padded to the longest item,
`mask` bool `[B, T]` (True on real frames), `paths` list[str], and `info` / `text` lists and `scale`
float `[B]` when the items carry them. Streams become `streams` `{name: [B, K_name, T_max_name]}` zero-padded
per stream and `stream_masks` `{name: bool [B, T_max_name]}`.
"""
from dataclasses import replace
import typing as tp

import torch
import torch.nn.functional as F

TIME_KEYS = ('audio', 'tokens', 'latents')
LIST_KEYS = {'path': 'paths', 'info': 'info', 'text': 'text'}


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool mask `[B, max_len]`, True on the first `lengths[b]` frames of row `b`."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _pad_stack(tensors: tp.Sequence[torch.Tensor],
               lengths: tp.Sequence[int]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Tensors `[*, T_b]` -> zero-padded `[B, *, T_max]` and the bool mask `[B, T_max]` of their real frames."""
    max_len = max(t.shape[-1] for t in tensors)
    real = torch.tensor([min(int(length), t.shape[-1]) for length, t in zip(lengths, tensors)])
    stacked = torch.stack([F.pad(t, (0, max_len - t.shape[-1])) for t in tensors])
    return stacked, lengths_to_mask(real, max_len)


def _collate_streams(items: tp.Sequence[tp.Dict[str, tp.Any]]
                     ) -> tp.Tuple[tp.Dict[str, torch.Tensor], tp.Dict[str, torch.Tensor]]:
    """Per stream name, the padded `[B, K, T_max]` codes and their mask `[B, T_max]`."""
    names = list(items[0]['streams'])
    for item in items:
        if list(item['streams']) != names or set(item.get('stream_lengths') or {}) != set(names):
            raise ValueError(f"Items with streams must all hold the streams {names} and a `stream_lengths` entry "
                             f"for each; got {list(item['streams'])} / {sorted(item.get('stream_lengths') or {})} "
                             f"({item.get('path')}).")
    streams, masks = {}, {}
    for name in names:
        streams[name], masks[name] = _pad_stack([item['streams'][name] for item in items],
                                                [item['stream_lengths'][name] for item in items])
    return streams, masks


def collate(items: tp.Sequence[tp.Dict[str, tp.Any]]) -> tp.Dict[str, tp.Any]:
    """Batch item dicts (see the module docstring) into one dict batch."""
    if not items:
        raise ValueError("Cannot collate an empty list of items.")
    keys = set(items[0])
    for item in items[1:]:
        if set(item) != keys:
            raise ValueError(f"Items with different keys cannot be batched: {sorted(keys)} vs {sorted(item)} "
                             f"({item.get('path')}).")
    time_keys = [key for key in TIME_KEYS if key in keys]
    if len(time_keys) > 1 or (not time_keys and 'streams' not in keys):
        raise ValueError(f"An item holds exactly one of {TIME_KEYS}, or named token `streams` (or both), "
                         f"got {sorted(keys)}.")
    batch: tp.Dict[str, tp.Any] = {}
    max_len = None
    if time_keys:
        key = time_keys[0]
        batch[key], batch['mask'] = _pad_stack([item[key] for item in items], [item['length'] for item in items])
        max_len = batch[key].shape[-1]
    if 'streams' in keys:
        batch['streams'], batch['stream_masks'] = _collate_streams(items)
    for item_key, batch_key in LIST_KEYS.items():
        if item_key in keys:
            batch[batch_key] = [item[item_key] for item in items]
    if 'info' in batch and max_len is not None:
        batch['info'] = [replace(info, total_frames=max_len) for info in batch['info']]
    if 'scale' in keys:
        batch['scale'] = torch.tensor([float(item['scale']) for item in items])
    return batch
