"""Token shards: write -> memory-mapped read round trip, metadata, crops, and iteration split across
ranks and DataLoader workers without duplicates."""
import json

import numpy as np
import pytest
import torch

from audiogen_lab.data.batch import collate
from audiogen_lab.data.token_dataset import (TokenShardDataset, TokenShardMeta, load_token_meta,
                                             write_token_shards)

META = TokenShardMeta(model='//sig/abc123', frame_rate=50.0, cardinality=1024, num_codebooks=4, sample_rate=16000)


def make_codes(n: int = 12, seed: int = 0) -> list:
    """`n` items [4, T] with T from 20 to 130 frames; item i's first code of codebook 0 is i (traceable)."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        codes = torch.randint(0, META.cardinality, (META.num_codebooks, 20 + 10 * i), generator=gen)
        codes[0, 0] = i
        items.append(codes)
    return items


@pytest.fixture
def shards(tmp_path):
    codes = make_codes()
    folder = tmp_path / 'tokens'
    write_token_shards(folder, ((c, f'/audio/clip_{i}.wav') for i, c in enumerate(codes)), META, shard_frames=300)
    return folder, codes


def test_round_trip_through_memory_mapped_shards(shards):
    folder, codes = shards
    meta, shard_list = load_token_meta(folder)
    assert meta == META and len(shard_list) > 1  # several shards were written
    assert sum(s['items'] for s in shard_list) == len(codes)
    raw = np.load(folder / shard_list[0]['file'], mmap_mode='r')
    assert isinstance(raw, np.memmap) and raw.dtype == np.int16  # a cardinality of 1024 fits in int16
    dataset = TokenShardDataset(folder, shuffle=False)  # whole items, in order
    items = list(dataset)
    assert len(items) == len(codes)
    for i, (item, original) in enumerate(zip(items, codes)):
        assert item['tokens'].dtype == torch.long and torch.equal(item['tokens'], original)
        assert item['length'] == original.shape[-1] and item['path'] == f'/audio/clip_{i}.wav'


def test_crops_are_slices_of_the_items_and_batches_carry_masks(shards):
    folder, codes = shards
    dataset = TokenShardDataset(folder, segment_duration=1.0, num_samples=40, seed=3)  # 50 frames
    assert dataset.segment_frames == 50
    items = list(dataset)
    assert len(items) == 40
    for item in items:
        source = codes[int(item['path'].split('_')[-1][:-4])]
        length = item['length']
        assert item['tokens'].shape == (4, 50) and length == min(50, source.shape[-1])
        window = item['tokens'][:, :length]
        starts = [s for s in range(source.shape[-1] - length + 1) if torch.equal(source[:, s:s + length], window)]
        assert starts, "a crop must be a contiguous slice of its item"
        assert item['tokens'][:, length:].abs().sum() == 0
    batch = collate(items[:8])
    assert batch['tokens'].shape == (8, 4, 50) and batch['mask'].shape == (8, 50)
    assert batch['mask'].sum(-1).tolist() == [item['length'] for item in items[:8]]
    assert batch['paths'] == [item['path'] for item in items[:8]]
    assert any(item['length'] < 50 for item in items)  # the short items were drawn and padded


def test_draws_depend_on_seed_epoch_index_only(shards):
    folder, _ = shards
    first = TokenShardDataset(folder, segment_duration=0.5, num_samples=20, seed=1)
    again = TokenShardDataset(folder, segment_duration=0.5, num_samples=20, seed=1)
    a, b = list(first), list(again)
    assert all(torch.equal(x['tokens'], y['tokens']) for x, y in zip(a, b))
    first.set_epoch(1)
    c = list(first)
    assert sum(torch.equal(x['tokens'], y['tokens']) for x, y in zip(a, c)) < 5
    first.set_epoch(0)
    assert all(torch.equal(x['tokens'], y['tokens']) for x, y in zip(a, first))


def test_two_dataloader_workers_and_two_ranks_split_without_duplicates(shards):
    folder, _ = shards
    reference = list(TokenShardDataset(folder, segment_duration=0.5, num_samples=24, seed=5))
    key = lambda item: (item['path'], item['tokens'].numpy().tobytes())  # noqa: E731
    expected = sorted(key(item) for item in reference)
    # Two DataLoader worker processes on one rank.
    dataset = TokenShardDataset(folder, segment_duration=0.5, num_samples=24, seed=5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    seen = []
    for batch in loader:
        seen += [(path, tokens.numpy().tobytes()) for path, tokens in zip(batch['paths'], batch['tokens'])]
    assert len(seen) == 24 and sorted(seen) == expected
    # Two simulated ranks, each with two workers: disjoint halves that cover every item.
    per_rank = []
    for rank in range(2):
        shard = TokenShardDataset(folder, segment_duration=0.5, num_samples=24, seed=5, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(shard, batch_size=3, num_workers=2, collate_fn=collate)
        per_rank.append([(p, t.numpy().tobytes()) for batch in loader for p, t in zip(batch['paths'], batch['tokens'])])
    assert [len(items) for items in per_rank] == [12, 12]
    assert sorted(per_rank[0] + per_rank[1]) == expected
    indices = [{i for i in range(24) if key(reference[i]) in per_rank[r]} for r in range(2)]
    assert not indices[0] & indices[1]


def test_writer_and_reader_reject_bad_input(tmp_path, shards):
    folder, codes = shards
    with pytest.raises(FileExistsError, match='overwrite'):
        write_token_shards(folder, codes, META)
    with pytest.raises(ValueError, match='cardinality=1024'):
        write_token_shards(tmp_path / 'bad', [torch.full((4, 10), 1024)], META)
    with pytest.raises(ValueError, match=r'num_codebooks=4'):
        write_token_shards(tmp_path / 'bad', [torch.zeros(3, 10, dtype=torch.long)], META)
    with pytest.raises(FileNotFoundError, match='meta.json'):
        TokenShardDataset(tmp_path / 'nowhere', shuffle=False)
    meta = json.loads((folder / 'meta.json').read_text())
    del meta['frame_rate']
    (folder / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='frame_rate'):
        TokenShardDataset(folder, shuffle=False)


def test_large_cardinality_uses_int32(tmp_path):
    meta = TokenShardMeta(model='export:big', frame_rate=25.0, cardinality=70000, num_codebooks=1)
    codes = torch.tensor([[0, 69999, 40000]])
    write_token_shards(tmp_path / 't', [codes], meta)
    assert np.load(tmp_path / 't' / 'shard_00000.npy', mmap_mode='r').dtype == np.int32
    assert torch.equal(next(iter(TokenShardDataset(tmp_path / 't', shuffle=False)))['tokens'], codes)


def test_blocks_keep_batches_whole_and_in_order_whatever_the_workers(shards):
    folder, _ = shards
    updates, batch_size, world = 3, 4, 2
    num_samples = updates * batch_size * world

    def batches(rank: int, workers: int) -> list:
        dataset = TokenShardDataset(folder, segment_duration=0.5, num_samples=num_samples, seed=2,
                                    block_size=batch_size, rank=rank, world_size=world)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=collate, drop_last=True)
        return [batch['tokens'] for batch in loader]

    reference = list(TokenShardDataset(folder, segment_duration=0.5, num_samples=num_samples, seed=2))
    for rank in range(world):
        in_process, two_workers = batches(rank, 0), batches(rank, 2)
        assert len(in_process) == len(two_workers) == updates  # every rank: one epoch of whole batches
        assert all(torch.equal(a, b) for a, b in zip(in_process, two_workers))
        # Rank r reads blocks r, r + world, ... of the global item order.
        for j, batch in enumerate(in_process):
            block = rank + j * world
            expected = torch.stack([item['tokens'] for item in reference[block * batch_size:(block + 1) * batch_size]])
            assert torch.equal(batch, expected)
