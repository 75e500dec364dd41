"""Audio with captions: one caption per item, chosen from several by (seed, epoch, index)."""
import json
import logging
from pathlib import Path

import torch

from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import AudioDataset, find_audio_files
from audiogen_lab.data.audio_text_dataset import AudioTextDataset
from audiogen_lab.data.batch import collate
from audiogen_lab.data.info_dataset import read_captions, write_sidecar

SR = 8000
CAPTIONS = ['a slow organ chorale', 'church organ, four voices', 'Bach on a pipe organ']


def make_folder(root: Path) -> Path:
    for i, value in enumerate((0.2, 0.4, 0.6)):
        audio_write(root / f'c{i}.wav', torch.full((1, SR), value), SR, subtype='FLOAT')
    write_sidecar(root / 'c0.wav', CAPTIONS, genre='classical')
    write_sidecar(root / 'c1.wav', 'a single caption')
    return root


def test_sidecar_with_several_captions_round_trips(tmp_path):
    path = write_sidecar(tmp_path / 'x.wav', CAPTIONS, key='G major')
    assert read_captions(path) == (CAPTIONS, {'key': 'G major'})
    assert read_captions(write_sidecar(tmp_path / 'y.wav', 'one')) == (['one'], {})


def test_captions_are_chosen_per_seed_epoch_and_index(tmp_path, caplog):
    root = make_folder(tmp_path / 'data')
    metas = find_audio_files(root)
    with caplog.at_level(logging.WARNING):
        dataset = AudioTextDataset(metas, segment_duration=0.5, num_samples=60, sample_rate=SR, channels=1, seed=7)
    assert 'c2.wav' in caplog.text  # no sidecar: left out, named
    assert sorted(Path(m.path).name for m in dataset.meta) == ['c0.wav', 'c1.wav']
    items = [dataset[i] for i in range(60)]
    texts = {i: item['text'] for i, item in enumerate(items) if item['path'].endswith('c0.wav')}
    assert set(texts.values()) == set(CAPTIONS)  # every caption is used...
    assert all(item['text'] == 'a single caption' for item in items if item['path'].endswith('c1.wav'))
    again = AudioTextDataset(metas, segment_duration=0.5, num_samples=60, sample_rate=SR, channels=1, seed=7)
    assert all(again[i]['text'] == text for i, text in reversed(list(texts.items())))  # ...deterministically
    dataset.set_epoch(1)
    changed = [i for i in range(60) if dataset[i]['path'].endswith('c0.wav')]
    other_epoch = [dataset[i]['text'] for i in changed]
    dataset.set_epoch(0)
    assert other_epoch != [dataset[i]['text'] for i in changed]
    batch = collate(items[:5])
    assert batch['text'] == [item['text'] for item in items[:5]] and batch['audio'].shape == (5, 1, 4000)
    assert batch['mask'].sum(-1).tolist() == [item['length'] for item in items[:5]]


def test_info_description_uses_the_same_choice(tmp_path):
    root = make_folder(tmp_path / 'data')
    dataset = AudioTextDataset(find_audio_files(root), segment_duration=0.5, num_samples=20, sample_rate=SR,
                               channels=1, return_info=True, seed=1)
    for i in range(20):
        item = dataset[i]
        assert item['info'].description == item['text']
    plain = AudioDataset(find_audio_files(root), segment_duration=0.5, shuffle=False, sample_rate=SR, channels=1,
                         return_info=True)
    assert plain[0]['info'].description in CAPTIONS and 'text' not in plain[0]


def test_sidecar_without_description_is_skipped_and_named(tmp_path, caplog):
    root = make_folder(tmp_path / 'data')
    (root / 'c1.json').write_text(json.dumps({'genre': 'noise'}))
    dataset = AudioTextDataset(find_audio_files(root), segment_duration=0.5, shuffle=False, sample_rate=SR,
                               channels=1, max_failure_ratio=0.5)
    with caplog.at_level(logging.WARNING):
        texts = [dataset[i]['text'] for i in range(len(dataset))]
    assert 'c1.json' in caplog.text and "no 'description'" in caplog.text
    assert all(text in CAPTIONS for text in texts)
    assert dataset.failed_files == {str((root / 'c1.wav').resolve())}
