"""Latent files: write -> memory-mapped read, fixed-length crops with masks, scale and metadata."""
import numpy as np
import pytest
import torch

from audiogen_lab.data.batch import collate
from audiogen_lab.data.latent_dataset import LatentDataset, LatentMeta, load_latent_meta, write_latent_files

META = LatentMeta(model='//sig/cae42', frame_rate=40.0, dim=8, sample_rate=32000)


@pytest.fixture
def latents(tmp_path):
    gen = torch.Generator().manual_seed(0)
    items = [torch.randn(8, frames, generator=gen) for frames in (30, 100, 250)]
    folder = tmp_path / 'latents'
    write_latent_files(folder, [(x, 0.5 * (i + 1) if i else None, f'/audio/{i}.wav') for i, x in enumerate(items)],
                       META)
    return folder, items


def test_metadata_and_whole_files(latents):
    folder, items = latents
    meta, files = load_latent_meta(folder)
    assert meta == META and [f['frames'] for f in files] == [30, 100, 250]
    assert isinstance(np.load(folder / files[0]['file'], mmap_mode='r'), np.memmap)
    dataset = LatentDataset(folder, shuffle=False)
    assert len(dataset) == 3
    for i, original in enumerate(items):
        item = dataset[i]
        assert torch.equal(item['latents'], original) and item['length'] == original.shape[-1]
        assert item['path'] == f'/audio/{i}.wav'
    assert [dataset[i]['scale'] for i in range(3)] == [1.0, 1.0, 1.5]  # no scale recorded -> 1.0


def test_crops_with_masks(latents):
    folder, items = latents
    dataset = LatentDataset(folder, segment_duration=1.0, num_samples=30, seed=2)  # 40 frames
    by_path = {f'/audio/{i}.wav': x for i, x in enumerate(items)}
    offsets = set()
    for i in range(30):
        item = dataset[i]
        source, length = by_path[item['path']], item['length']
        assert item['latents'].shape == (8, 40) and length == min(40, source.shape[-1])
        matches = [s for s in range(source.shape[-1] - length + 1)
                   if torch.equal(source[:, s:s + length], item['latents'][:, :length])]
        assert matches
        offsets.add((item['path'], matches[0]))
        assert item['latents'][:, length:].abs().sum() == 0
    assert len(offsets) > 10  # crops move around the files
    batch = collate([dataset[i] for i in range(6)])
    assert batch['latents'].shape == (6, 8, 40) and batch['scale'].shape == (6,)
    assert batch['mask'].sum(-1).tolist() == [dataset[i]['length'] for i in range(6)]
    # Longer files are drawn more often (weighted by length).
    counts = {path: sum(dataset[i]['path'] == path for i in range(30)) for path in by_path}
    assert counts['/audio/2.wav'] > counts['/audio/0.wav']


def test_deterministic_per_seed_epoch_index(latents):
    folder, _ = latents
    a = LatentDataset(folder, segment_duration=0.5, num_samples=10, seed=4)
    b = LatentDataset(folder, segment_duration=0.5, num_samples=10, seed=4)
    assert all(torch.equal(a[i]['latents'], b[i]['latents']) for i in reversed(range(10)))
    first = [a[i]['latents'] for i in range(10)]
    a.set_epoch(3)
    assert sum(torch.equal(first[i], a[i]['latents']) for i in range(10)) < 5
    # Not shuffled with num_samples: fixed items whatever the epoch.
    fixed = LatentDataset(folder, segment_duration=0.5, shuffle=False, num_samples=5, seed=4)
    before = [fixed[i]['latents'] for i in range(5)]
    fixed.set_epoch(7)
    assert all(torch.equal(before[i], fixed[i]['latents']) for i in range(5))


def test_bad_latents_are_refused(tmp_path, latents):
    with pytest.raises(ValueError, match='NaN'):
        write_latent_files(tmp_path / 'bad', [torch.full((8, 4), float('nan'))], META)
    with pytest.raises(ValueError, match='dim=8'):
        write_latent_files(tmp_path / 'bad', [torch.zeros(7, 4)], META)
    folder, _ = latents
    np.save(folder / 'latent_00001.npy', np.zeros((8, 99), dtype=np.float32))  # does not match meta.json
    dataset = LatentDataset(folder, shuffle=False)
    with pytest.raises(ValueError, match='latent_00001.npy'):
        dataset[1]
