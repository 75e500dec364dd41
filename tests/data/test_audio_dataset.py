"""Manifests, the manifest builder CLI and the segment dataset (sampling, captions, bad input)."""
import json
import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiogen_lab.data.audio import audio_write
from audiogen_lab.data.audio_dataset import (AudioDataset, AudioMeta, SegmentInfo, find_audio_files,
                                             load_audio_meta, main, resolve_manifest, save_audio_meta)
from audiogen_lab.data.info_dataset import sidecar_path, write_sidecar

SR = 8000
REPO = Path(__file__).resolve().parents[2]


def constant_file(path: Path, value: float, duration: float, sample_rate: int = SR, channels: int = 1) -> Path:
    """A file whose every sample is `value`: items drawn from it are easy to recognise."""
    subtype = 'FLOAT' if path.suffix == '.wav' else None
    return audio_write(path, torch.full((channels, int(duration * sample_rate)), value), sample_rate,
                       subtype=subtype)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four mono files of 1-4 s, each a constant 0.1 * (i + 1); a caption on the first."""
    root = tmp_path / 'dataset'
    for i in range(4):
        constant_file(root / f'sub{i % 2}' / f'f{i}.wav', 0.1 * (i + 1), duration=i + 1)
    write_sidecar(root / 'sub0' / 'f0.wav', 'a quiet drone', genre='ambient', tempo=60)
    return root


def test_audio_meta_dict_round_trip():
    meta = AudioMeta('a.wav', 1.5, 16000, 2, weight=2.0)
    assert meta.to_dict() == {'path': 'a.wav', 'duration': 1.5, 'sample_rate': 16000, 'channels': 2, 'weight': 2.0}
    assert AudioMeta.from_dict({**meta.to_dict(), 'unknown': 1}) == meta
    with pytest.raises(ValueError, match='duration'):
        AudioMeta.from_dict({'path': 'a.wav', 'sample_rate': 1, 'channels': 1})


def test_find_audio_files_reads_headers_sidecars_and_skips_bad_files(folder, caplog):
    (folder / 'broken.flac').write_bytes(b'fLaC' + b'\0' * 100)
    (folder / 'notes.txt').write_text('not audio')
    constant_file(folder / 'stereo.FLAC', 0.5, 0.5, sample_rate=16000, channels=2)
    with caplog.at_level(logging.WARNING):
        metas = find_audio_files(folder, workers=2, complete=True)
    assert 'broken.flac' in caplog.text
    names = [Path(m.path).name for m in metas]
    assert names == ['stereo.FLAC', 'f0.wav', 'f2.wav', 'f1.wav', 'f3.wav']
    assert all(Path(m.path).is_absolute() for m in metas)
    by_name = {Path(m.path).name: m for m in metas}
    assert by_name['stereo.FLAC'] == AudioMeta(str(folder.resolve() / 'stereo.FLAC'), 0.5, 16000, 2, amplitude=0.5)
    assert by_name['f2.wav'].duration == 3.0 and by_name['f2.wav'].amplitude == pytest.approx(0.3)
    assert by_name['f0.wav'].info_path == str(sidecar_path(by_name['f0.wav'].path))
    assert by_name['f1.wav'].info_path is None


@pytest.mark.parametrize('name', ['data.jsonl', 'data.jsonl.gz'])
def test_manifest_round_trip_and_relative_paths(folder, tmp_path, name):
    metas = find_audio_files(folder)
    manifest = save_audio_meta(folder / name, metas, relative=True)
    stored = load_audio_meta(manifest, resolve=False)
    assert [m.path for m in stored] == [str(Path(m.path).relative_to(folder.resolve())) for m in metas]
    assert load_audio_meta(folder) == metas  # a folder resolves to its manifest
    moved = tmp_path / 'elsewhere'
    shutil.move(str(folder), str(moved))
    loaded = load_audio_meta(moved / name)
    assert [Path(m.path).name for m in loaded] == [Path(m.path).name for m in metas]
    assert all(Path(m.path).is_file() for m in loaded)
    assert Path(loaded[0].info_path).is_file()


def test_missing_or_ambiguous_manifest(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_audio_meta(tmp_path / 'nowhere' / 'train')
    assert str(tmp_path / 'nowhere' / 'train') in str(err.value)
    assert 'python -m audiogen_lab.data.audio_dataset' in str(err.value)
    (tmp_path / 'data.jsonl').write_text('')
    (tmp_path / 'data.jsonl.gz').write_text('')
    with pytest.raises(ValueError, match='remove one'):
        resolve_manifest(tmp_path)


def test_cli_builds_a_portable_manifest(folder, tmp_path, capsys):
    assert main([str(folder), str(folder)]) == 0
    assert 'Wrote' in capsys.readouterr().out
    lines = [json.loads(line) for line in (folder / 'data.jsonl').read_text().splitlines()]
    assert sorted(line['path'] for line in lines) == ['sub0/f0.wav', 'sub0/f2.wav', 'sub1/f1.wav', 'sub1/f3.wav']
    assert sum(line['duration'] for line in lines) == 10.0
    assert lines[0]['info_path'] == 'sub0/f0.json'
    dataset = AudioDataset.from_meta(folder, segment_duration=0.5, sample_rate=SR, channels=1, num_samples=4)
    assert len(dataset.meta) == 4 and dataset[0]['audio'].shape == (1, 4000)
    # As a module, with --resolve (absolute paths) and a gzipped output.
    out = tmp_path / 'manifests' / 'train.jsonl.gz'
    proc = subprocess.run([sys.executable, '-m', 'audiogen_lab.data.audio_dataset', str(folder), str(out),
                           '--resolve', '--quiet'], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '4 files' in proc.stdout
    assert all(Path(m.path).is_absolute() for m in load_audio_meta(out, resolve=False))


def make_dataset(folder: Path, **kwargs) -> AudioDataset:
    defaults = {'segment_duration': 0.5, 'sample_rate': SR, 'channels': 1}
    if kwargs.get('shuffle', True):
        defaults['num_samples'] = 50
    return AudioDataset(find_audio_files(folder), **{**defaults, **kwargs})


def pair(item: dict) -> tuple:
    """`(audio, info)` of an item dict."""
    return item['audio'], item['info']


def test_sampling_is_a_pure_function_of_seed_epoch_index(folder):
    dataset = make_dataset(folder, return_info=True)
    first = [pair(dataset[i]) for i in range(10)]
    other = pickle.loads(pickle.dumps(make_dataset(folder, return_info=True)))
    backwards = {i: pair(other[i]) for i in reversed(range(10))}  # access order does not matter
    for (wav, info), (wav2, info2) in zip(first, [backwards[i] for i in range(10)]):
        assert torch.equal(wav, wav2) and info.seek_time == info2.seek_time and info.meta == info2.meta
    seeks = [info.seek_time for _, info in first]
    assert len(set(seeks)) == 10  # different indices, different segments
    dataset.set_epoch(1)
    assert all(dataset[i]['info'].seek_time != seeks[i] for i in range(10))
    dataset.set_epoch(0)
    assert [dataset[i]['info'].seek_time for i in range(10)] == seeks
    assert [make_dataset(folder, return_info=True, seed=1)[i]['info'].seek_time for i in range(10)] != seeks


def test_dataloader_workers_yield_the_same_items(folder):
    dataset = make_dataset(folder, num_samples=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=dataset.collater)
    batches = list(loader)
    audio = torch.cat([batch['audio'] for batch in batches])
    assert audio.shape == (8, 1, 4000)
    assert torch.equal(audio, torch.stack([dataset[i]['audio'] for i in range(8)]))
    assert sum((batch['paths'] for batch in batches), []) == [dataset[i]['path'] for i in range(8)]


def test_segments_hold_the_file_audio_at_the_seek_time(tmp_path):
    root = tmp_path / 'ramp'
    ramp = torch.linspace(-0.5, 0.5, 2 * SR)[None]
    audio_write(root / 'ramp.wav', ramp, SR, subtype='FLOAT')
    dataset = make_dataset(root, return_info=True, num_samples=5)
    for i in range(5):
        wav, info = pair(dataset[i])
        start = round(info.seek_time * SR)
        assert 0 <= info.seek_time <= 1.75
        assert info.n_frames == min(4000, 2 * SR - start) and info.total_frames == 4000
        assert torch.equal(wav[:, :info.n_frames], ramp[:, start:start + info.n_frames])
        assert wav[:, info.n_frames:].abs().sum() == 0


def test_resampling_channels_and_padding(tmp_path):
    root = tmp_path / 'stereo'
    t = torch.arange(SR) / SR
    left, right = 0.4 * torch.sin(2 * torch.pi * 500 * t), 0.2 * torch.sin(2 * torch.pi * 500 * t)
    audio_write(root / 'st.wav', torch.stack([left, right]), SR, subtype='FLOAT')
    dataset = make_dataset(root, shuffle=False, segment_duration=1.5, sample_rate=16000, return_info=True)
    assert len(dataset) == 1
    wav, info = pair(dataset[0])
    assert wav.shape == (1, 24000) and info.seek_time == 0
    assert info.n_frames == 16000 and info.sample_rate == 16000
    spectrum = torch.fft.rfft(wav[0, :16000]).abs()
    assert spectrum.argmax().item() == 500  # 1 Hz bins: the pitch survives resampling
    assert wav[0, 4000:12000].abs().max().item() == pytest.approx(0.3, abs=0.01)  # mean of 0.4 and 0.2
    assert wav[0, 16000:].abs().max() == 0
    unpadded = make_dataset(root, shuffle=False, segment_duration=1.5, pad=False)
    assert unpadded[0]['audio'].shape == (1, SR) and unpadded[0]['length'] == SR


def test_duration_and_weight_drive_sampling(tmp_path):
    root = tmp_path / 'two'
    short = constant_file(root / 'short.wav', 0.1, 1.0)
    constant_file(root / 'long.wav', 0.3, 3.0)
    metas = find_audio_files(root)
    by_duration = AudioDataset(metas, segment_duration=0.25, num_samples=400, sample_rate=SR, channels=1)
    long_share = sum(by_duration[i]['audio'][0, 0].item() > 0.2 for i in range(400)) / 400
    assert long_share == pytest.approx(0.75, abs=0.07)
    for meta in metas:
        meta.weight = 3.0 if meta.path == str(short.resolve()) else 1.0
    weighted = AudioDataset(metas, segment_duration=0.25, num_samples=400, sample_rate=SR, channels=1)
    assert sum(weighted[i]['audio'][0, 0].item() > 0.2 for i in range(400)) / 400 == pytest.approx(0.5, abs=0.07)
    uniform = AudioDataset(metas, segment_duration=0.25, num_samples=400, sample_rate=SR, channels=1,
                           sample_on_duration=False, sample_on_weight=False)
    assert sum(uniform[i]['audio'][0, 0].item() > 0.2 for i in range(400)) / 400 == pytest.approx(0.5, abs=0.07)


def test_segment_info_carries_captions(folder):
    metas = find_audio_files(folder)
    dataset = AudioDataset(metas, segment_duration=0.5, shuffle=False, sample_rate=SR, channels=1, return_info=True)
    items = [dataset[i] for i in range(len(dataset))]
    captioned = [item['info'] for item in items if item['info'].meta.info_path is not None]
    assert len(captioned) == 1
    assert captioned[0].description == 'a quiet drone'
    assert captioned[0].attributes == {'genre': 'ambient', 'tempo': 60}
    assert all(info.description is None and info.attributes == {}
               for info in (item['info'] for item in items) if info.meta.info_path is None)
    batch = dataset.collater(items)
    wav, infos = batch['audio'], batch['info']
    assert wav.shape == (4, 1, 4000) and all(isinstance(info, SegmentInfo) for info in infos)
    assert [info.meta.path for info in infos] == [m.path for m in metas] == batch['paths']
    assert batch['mask'].all()  # every segment is real audio (files of 1 s or more)


def test_whole_files_and_collater(folder):
    dataset = make_dataset(folder, segment_duration=None, shuffle=False, return_info=True)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item['audio'].shape[-1] for item in items] == [int(m.duration * SR) for m in dataset.meta]
    batch = dataset.collater(items[:2])
    lengths = [item['length'] for item in items[:2]]
    assert batch['audio'].shape == (2, 1, max(lengths))
    assert all(info.total_frames == max(lengths) for info in batch['info'])
    assert batch['info'][0].n_frames == items[0]['info'].n_frames
    assert batch['mask'].sum(-1).tolist() == lengths
    for row, item in enumerate(items[:2]):  # real audio where the mask is True, zeros elsewhere
        assert torch.equal(batch['audio'][row, :, :item['length']], item['audio'])
        assert batch['audio'][row, :, item['length']:].abs().sum() == 0


def test_bad_files_are_skipped_warned_and_counted(folder, make_truncated, caplog):
    for i in range(4, 8):
        constant_file(folder / f'g{i}.wav', 0.1 * (i + 1), duration=2)
    constant_file(folder / 'corrupt.wav', 0.9, duration=2)
    constant_file(folder / 'truncated.wav', 0.9, duration=2)
    metas = find_audio_files(folder)
    for meta in metas:  # the bad files are drawn often
        meta.weight = 2.0 if Path(meta.path).stem in ('corrupt', 'truncated') else 1.0
    (folder / 'corrupt.wav').write_bytes(b'RIFF\x00\x00' + b'garbage' * 500)
    make_truncated(folder / 'truncated.wav', 0.1)
    dataset = AudioDataset(metas, segment_duration=0.5, num_samples=40, sample_rate=SR, channels=1,
                           return_info=True, max_failure_ratio=0.5, name='unit')
    with caplog.at_level(logging.WARNING):
        items = [pair(dataset[i]) for i in range(40)]
    assert {Path(p).name for p in dataset.failed_files} == {'corrupt.wav', 'truncated.wav'}
    assert 'corrupt.wav' in caplog.text and 'truncated.wav' in caplog.text
    for wav, info in items:  # real audio from a good file, never zeros
        stem = Path(info.meta.path).stem
        assert stem not in ('corrupt', 'truncated')
        value = torch.tensor(0.1 * (int(stem[1:]) + 1))
        assert info.n_frames > 0 and torch.allclose(wav[:, :info.n_frames], value)
    # The same items with a fresh dataset: failures do not change what is drawn.
    again = AudioDataset(metas, segment_duration=0.5, num_samples=40, sample_rate=SR, channels=1,
                         return_info=True, max_failure_ratio=0.5)
    assert all(torch.equal(again[i]['audio'], items[i][0]) for i in reversed(range(40)))


def test_sequential_dataset_skips_a_bad_file(folder):
    metas = find_audio_files(folder)
    Path(metas[1].path).write_bytes(b'nothing')
    dataset = AudioDataset(metas, segment_duration=0.5, shuffle=False, sample_rate=SR, channels=1,
                           return_info=True, max_failure_ratio=0.5)
    assert dataset[1]['info'].meta == metas[2]
    assert dataset.failed_files == {metas[1].path}


def test_file_shorter_than_its_manifest_entry_is_truncated(folder, make_truncated, caplog):
    metas = find_audio_files(folder)
    assert [Path(m.path).name for m in metas] == ['f0.wav', 'f2.wav', 'f1.wav', 'f3.wav']
    make_truncated(Path(metas[1].path), 0.1)  # 3 s file, 0.3 s left: the first segment straddles the cut
    dataset = AudioDataset(metas, segment_duration=0.5, shuffle=False, sample_rate=SR, channels=1,
                           max_failure_ratio=0.5)
    with caplog.at_level(logging.WARNING):
        wav = dataset[1]['audio']
    assert 'the manifest says 3.000s' in caplog.text
    assert dataset.failed_files == {metas[1].path}
    assert torch.allclose(wav, torch.tensor(0.2))  # the next file, f1, not zero padding


def test_too_many_failures_stop_with_the_file_names(folder):
    metas = find_audio_files(folder)
    for meta in metas[:3]:
        Path(meta.path).write_bytes(b'broken')
    dataset = AudioDataset(metas, segment_duration=0.5, num_samples=50, sample_rate=SR, channels=1,
                           name='train', manifest='/data/train/data.jsonl')
    with pytest.raises(RuntimeError) as err:
        for i in range(50):
            dataset[i]
    message = str(err.value)
    assert 'train' in message and '/data/train/data.jsonl' in message and 'max_failure_ratio' in message
    assert all(meta.path in message for meta in metas[:3] if meta.path in dataset.failed_files)
    assert len(dataset.failed_files) >= 2


def test_no_readable_file_after_retries(tmp_path):
    bad = tmp_path / 'bad.wav'
    bad.write_bytes(b'broken')
    dataset = AudioDataset([AudioMeta(str(bad), 1.0, SR, 1)], segment_duration=0.5, sample_rate=SR,
                           channels=1, max_read_retry=3, max_failure_ratio=1.0, name='lonely')
    with pytest.raises(RuntimeError, match=r'lonely.*after 4 attempts.*bad\.wav'):
        dataset[0]


def test_empty_and_filtered_datasets(folder, tmp_path):
    with pytest.raises(ValueError, match='valid_set'):
        AudioDataset([], name='valid_set')
    (tmp_path / 'empty').mkdir()
    save_audio_meta(tmp_path / 'empty' / 'data.jsonl', [])
    with pytest.raises(ValueError, match='empty/data.jsonl'):
        AudioDataset.from_meta(tmp_path / 'empty')
    metas = find_audio_files(folder)
    dataset = AudioDataset(metas, min_audio_duration=1.5, max_audio_duration=3.5, shuffle=False)
    assert sorted(m.duration for m in dataset.meta) == [2.0, 3.0]
    with pytest.raises(ValueError, match='min_audio_duration'):
        AudioDataset(metas, min_audio_duration=10)
