"""Dict batches: one collate function for every dataset kind.

Datasets return item dicts:
- exactly one time-axis tensor: `audio` float `[C, T]`, `tokens` long `[K, T]` or `latents` float `[D, T]`;
- `length`: int, frames of real data in that tensor (the rest is padding);
- `path`: str, the item's source file;
- optional `info` (SegmentInfo), `text` (str caption), `scale` (float).

`collate` stacks them into a batch dict: the tensor `[B, *, T]` zero-padded to the longest item,
`mask` bool `[B, T]` (True on real frames), `paths` list[str], and `info` / `text` lists and `scale`
float `[B]` when the items carry them.
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
    if len(time_keys) != 1:
        raise ValueError(f"An item holds exactly one of {TIME_KEYS}, got {sorted(keys)}.")
    key = time_keys[0]
    tensors = [item[key] for item in items]
    max_len = max(t.shape[-1] for t in tensors)
    lengths = torch.tensor([min(int(item['length']), t.shape[-1]) for item, t in zip(items, tensors)])
    batch: tp.Dict[str, tp.Any] = {
        key: torch.stack([F.pad(t, (0, max_len - t.shape[-1])) for t in tensors]),
        'mask': lengths_to_mask(lengths, max_len),
    }
    for item_key, batch_key in LIST_KEYS.items():
        if item_key in keys:
            batch[batch_key] = [item[item_key] for item in items]
    if 'info' in batch:
        batch['info'] = [replace(info, total_frames=max_len) for info in batch['info']]
    if 'scale' in keys:
        batch['scale'] = torch.tensor([float(item['scale']) for item in items])
    return batch
