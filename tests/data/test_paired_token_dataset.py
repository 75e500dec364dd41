"""Paired token folders: crops of a 50 Hz semantic stream and a 100 Hz acoustic stream that cover the
same seconds, batches with per-stream masks, deterministic draws, aligned-folder checks, rank splitting
and the `paired_tokens` builder kind."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.batch import collate
from audiogen_lab.data.builders import get_dataloaders
from audiogen_lab.data.paired_token_dataset import PairedTokenDataset
from audiogen_lab.data.token_dataset import TokenShardMeta, write_token_shards

REPO = Path(__file__).resolve().parents[2]
SEMANTIC = TokenShardMeta(model='semantic:test', frame_rate=50., cardinality=500, num_codebooks=1)
ACOUSTIC = TokenShardMeta(model='//sig/codec', frame_rate=100., cardinality=1024, num_codebooks=4)
NUM_ITEMS = 8
ACOUSTIC_OFFSET = 250  # codebook k of the acoustic stream holds `semantic frame + 250 * k`


def semantic_frames(i: int) -> int:
    return 20 + 12 * i


def acoustic_frames(i: int) -> int:
    """Two acoustic frames per semantic frame, plus 3 (even items) or minus 3 (odd: acoustic is shorter)."""
    return 2 * semantic_frames(i) + (3 if i % 2 == 0 else -3)


def write_pair(root: Path, sources=None) -> Path:
    """`root/semantic` ids [1, Ts] = semantic frame index; `root/acoustic` codes [4, Ta] = its frame index // 2
    (+ 250 k on codebook k): acoustic frames 2j and 2j + 1 carry semantic frame j's value."""
    sources = sources or [f'/audio/clip_{i}.wav' for i in range(NUM_ITEMS)]
    semantic = [torch.arange(semantic_frames(i))[None] for i in range(NUM_ITEMS)]
    acoustic = [torch.arange(acoustic_frames(i))[None] // 2 + ACOUSTIC_OFFSET * torch.arange(4)[:, None]
                for i in range(NUM_ITEMS)]
    write_token_shards(root / 'semantic', list(zip(semantic, sources)), SEMANTIC, shard_frames=200)
    write_token_shards(root / 'acoustic', list(zip(acoustic, sources)), ACOUSTIC, shard_frames=300)
    return root


def folders(root: Path) -> dict:
    return {'semantic': root / 'semantic', 'acoustic': root / 'acoustic'}


@pytest.fixture
def pair(tmp_path) -> Path:
    return write_pair(tmp_path / 'out')


def index_of(item) -> int:
    return int(item['path'].split('_')[-1][:-4])


def check_aligned(item) -> int:
    """Assert the two crops cover the same seconds of item `index_of(item)`; return the semantic start frame."""
    i = index_of(item)
    semantic, acoustic = item['streams']['semantic'], item['streams']['acoustic']
    ls, la = item['stream_lengths']['semantic'], item['stream_lengths']['acoustic']
    start = int(semantic[0, 0])
    assert torch.equal(semantic[0, :ls], torch.arange(start, start + ls))
    expected = (torch.arange(2 * start, 2 * start + la) // 2)[None] + ACOUSTIC_OFFSET * torch.arange(4)[:, None]
    assert torch.equal(acoustic[:, :la], expected)  # acoustic frames 2j, 2j + 1 <-> semantic frame j
    assert start + ls <= semantic_frames(i) and 2 * start + la <= acoustic_frames(i)
    assert semantic[:, ls:].abs().sum() == 0 and acoustic[:, la:].abs().sum() == 0
    assert item['length'] == ls
    return start


def test_crops_cover_the_same_seconds_and_batch_with_stream_masks(pair):
    dataset = PairedTokenDataset(folders(pair), segment_duration=0.5, num_samples=40, seed=3)
    assert dataset.segment_frames == {'semantic': 25, 'acoustic': 50} and dataset.num_items() == 40
    assert dataset.meta('acoustic') == ACOUSTIC and dataset.meta('semantic') == SEMANTIC
    items = list(dataset)
    assert len(items) == 40
    starts = set()
    for item in items:
        assert item['streams']['semantic'].shape == (1, 25) and item['streams']['acoustic'].shape == (4, 50)
        assert item['streams']['acoustic'].dtype == torch.long
        starts.add(check_aligned(item))
        # Item 0 (0.40 s of semantic, 0.43 s of acoustic) is shorter than the segment: cut to 0.40 s.
        expected = (20, 40) if index_of(item) == 0 else (25, 50)
        assert (item['stream_lengths']['semantic'], item['stream_lengths']['acoustic']) == expected
    assert len(starts) > 5  # starts vary along the items
    assert any(index_of(item) == 0 for item in items)
    batch = collate(items[:6])
    assert set(batch) == {'streams', 'stream_masks', 'paths'}
    assert batch['streams']['semantic'].shape == (6, 1, 25) and batch['streams']['acoustic'].shape == (6, 4, 50)
    for name in ('semantic', 'acoustic'):
        assert batch['stream_masks'][name].dtype == torch.bool
        assert batch['stream_masks'][name].sum(-1).tolist() == [item['stream_lengths'][name] for item in items[:6]]
    assert batch['paths'] == [item['path'] for item in items[:6]]
    with pytest.raises(KeyError, match='semantic'):
        dataset.meta('coarse')


def test_whole_items_are_cut_to_the_shortest_stream(pair):
    dataset = PairedTokenDataset(folders(pair), shuffle=False)
    items = list(dataset)
    assert [index_of(item) for item in items] == list(range(NUM_ITEMS))  # one whole item per entry, in order
    for i, item in enumerate(items):
        assert check_aligned(item) == 0
        ts = semantic_frames(i)
        # Even items: acoustic has 3 extra frames, cut to the semantic 2 * ts; odd items: acoustic is the
        # shortest (2 ts - 3 frames), the semantic crop floor(ts - 1.5) = ts - 2 frames.
        expected = (ts, 2 * ts) if i % 2 == 0 else (ts - 2, 2 * ts - 3)
        assert (item['stream_lengths']['semantic'], item['stream_lengths']['acoustic']) == expected
        assert item['streams']['acoustic'].shape == (4, expected[1])  # whole items are not padded
    batch = collate(items[:3])
    assert batch['streams']['semantic'].shape == (3, 1, 44) and batch['streams']['acoustic'].shape == (3, 4, 88)
    assert batch['stream_masks']['acoustic'].sum(-1).tolist() == [40, 61, 88]
    assert batch['stream_masks']['semantic'].sum(-1).tolist() == [20, 30, 44]
    assert batch['streams']['acoustic'][0, :, 40:].abs().sum() == 0


def test_draws_depend_on_seed_epoch_index_only(pair):
    first = PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=20, seed=1)
    again = PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=20, seed=1)
    key = lambda item: (item['path'], item['streams']['semantic'].tolist(),  # noqa: E731
                        item['streams']['acoustic'].tolist())
    a, b = [key(x) for x in first], [key(x) for x in again]
    assert a == b
    assert [key(first.get(i)) for i in (7, 3)] == [a[7], a[3]]  # get(index) is what iteration yields
    first.set_epoch(1)
    c = [key(x) for x in first]
    assert sum(x == y for x, y in zip(a, c)) < 5
    first.set_epoch(0)
    assert [key(x) for x in first] == a
    other = [key(x) for x in PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=20, seed=2)]
    assert sum(x == y for x, y in zip(a, other)) < 5


def test_folders_that_are_not_aligned_are_refused(tmp_path, pair):
    shuffled = [f'/audio/clip_{i}.wav' for i in (1, 0, *range(2, NUM_ITEMS))]
    other = write_pair(tmp_path / 'other', shuffled)
    with pytest.raises(ValueError, match=r'(?s)out/semantic.*other/acoustic.*not aligned'):
        PairedTokenDataset({'semantic': pair / 'semantic', 'acoustic': other / 'acoustic'}, shuffle=False)
    write_token_shards(tmp_path / 'fewer', [torch.zeros(1, 10, dtype=torch.long)], SEMANTIC)
    with pytest.raises(ValueError, match=r'(?s)out/acoustic \(8 items\).*fewer \(1 items\)'):
        PairedTokenDataset({'acoustic': pair / 'acoustic', 'semantic': tmp_path / 'fewer'}, shuffle=False)
    with pytest.raises(ValueError, match='num_samples'):
        PairedTokenDataset(folders(pair), segment_duration=0.5)


def test_two_ranks_read_every_index_once(pair):
    num_samples, block = 24, 3
    reference = PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=num_samples, seed=5)
    key = lambda item: (item['path'], item['streams']['semantic'].numpy().tobytes(),  # noqa: E731
                        item['streams']['acoustic'].numpy().tobytes())
    expected = [key(reference.get(i)) for i in range(num_samples)]
    per_rank = []
    for rank in range(2):
        dataset = PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=num_samples, seed=5,
                                     block_size=block, rank=rank, world_size=2)
        per_rank.append([key(item) for item in dataset])
    assert [len(keys) for keys in per_rank] == [12, 12]
    # Rank r reads blocks r, r + 2, ... of the global order: together every index exactly once.
    for rank, keys in enumerate(per_rank):
        indices = [i for b in range(rank, num_samples // block, 2) for i in range(b * block, (b + 1) * block)]
        assert keys == [expected[i] for i in indices]
    # Two DataLoader worker processes on rank 1 read the same batches.
    dataset = PairedTokenDataset(folders(pair), segment_duration=0.3, num_samples=num_samples, seed=5,
                                 block_size=block, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=block, num_workers=2, collate_fn=collate)
    seen = [(p, s.numpy().tobytes(), a.numpy().tobytes()) for batch in loader
            for p, s, a in zip(batch['paths'], batch['streams']['semantic'], batch['streams']['acoustic'])]
    assert seen == per_rank[1]


def make_cfg(datasource: dict, *overrides: str):
    """The solver defaults with a datasource and dotlist overrides."""
    cfg = OmegaConf.load(REPO / 'config' / 'solver' / 'default.yaml')
    base = {'solver': 'test', 'sample_rate': 16000, 'channels': 1, 'seed': 0, 'datasource': datasource,
            'dataset': {'batch_size': 2, 'num_workers': 0}}
    return OmegaConf.merge(cfg, base, OmegaConf.from_dotlist(list(overrides)))


def test_paired_tokens_builder_kind(tmp_path):
    splits = ('train', 'evaluate')
    for split in splits:
        write_pair(tmp_path / split)
    datasource = {split: str(tmp_path / split) for split in splits}
    cfg = make_cfg(datasource, 'dataset.kind=paired_tokens', 'dataset.streams=[semantic,acoustic]',
                   'dataset.segment_duration=0.5')
    loaders = get_dataloaders(cfg, updates_per_epoch=3)
    assert set(loaders) == set(splits)
    train = list(loaders['train'])
    assert len(train) == 3
    for batch in train:
        assert list(batch['streams']) == ['semantic', 'acoustic']
        assert batch['streams']['semantic'].shape == (2, 1, 25) and batch['streams']['acoustic'].shape == (2, 4, 50)
        for row in range(2):
            item = {'path': batch['paths'][row],
                    'streams': {name: codes[row] for name, codes in batch['streams'].items()},
                    'stream_lengths': {name: int(mask[row].sum()) for name, mask in batch['stream_masks'].items()}}
            item['length'] = item['stream_lengths']['semantic']
            check_aligned(item)
    evaluate = list(loaders['evaluate'])  # one crop per item, from its start, in order
    assert [p for batch in evaluate for p in batch['paths']] == [f'/audio/clip_{i}.wav' for i in range(NUM_ITEMS)]
    assert all(int(batch['streams']['semantic'][:, 0, 0].abs().sum()) == 0 for batch in evaluate)
    assert [m for b in evaluate for m in b['stream_masks']['acoustic'].sum(-1).tolist()] == [40] + [50] * 7
    missing = make_cfg(datasource, 'dataset.kind=paired_tokens', 'dataset.segment_duration=0.5')
    with pytest.raises(ValueError, match='dataset.streams'):
        get_dataloaders(missing, updates_per_epoch=1)
