"""Bad audio is caught and named: NaN / inf samples, truncated and too-short files, dangling links,
unreadable caption sidecars; in the manifest builder and when datasets read."""
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiogen_lab.data.audio import AudioReadError, audio_read, audio_write
from audiogen_lab.data.audio_dataset import AudioDataset, AudioMeta, find_audio_files, main
from audiogen_lab.data.manifest import save_audio_meta
from audiogen_lab.data.scan import BAD_SIDECAR, DANGLING, NONFINITE, TRUNCATED, scan_audio_files

SR = 8000


def good_file(path: Path, value: float, duration: float = 1.0) -> Path:
    return audio_write(path, torch.full((1, int(duration * SR)), value), SR, subtype='FLOAT')


def nonfinite_file(path: Path, bad: float = float('nan'), duration: float = 1.0) -> Path:
    """A float wav whose samples are 0.5 except a few NaN (or inf) in the middle."""
    data = np.full((int(duration * SR), 1), 0.5, dtype=np.float32)
    data[len(data) // 2: len(data) // 2 + 3] = bad
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, SR, subtype='FLOAT')
    return path


def tiny_file(path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.full((frames, 1), 0.25, dtype=np.float32), SR, subtype='FLOAT')
    return path


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_audio_read_rejects_nonfinite_samples(tmp_path, bad):
    path = nonfinite_file(tmp_path / 'bad.wav', bad)
    with pytest.raises(AudioReadError, match='NaN or infinite') as err:
        audio_read(path)
    assert str(path) in str(err.value)
    head, _ = audio_read(path, duration=0.25)  # the samples before the bad ones are fine
    assert torch.allclose(head, torch.tensor(0.5))


def test_nan_file_among_good_files_is_skipped_named_and_counted(tmp_path, caplog):
    root = tmp_path / 'data'
    for i in range(5):
        good_file(root / f'good{i}.wav', 0.1 * (i + 1))
    nonfinite_file(root / 'nan.wav')
    # A manifest built before the file went bad (headers only): the dataset must catch it when reading.
    metas = find_audio_files(root, check=False)
    assert any(Path(m.path).name == 'nan.wav' for m in metas)
    for meta in metas:
        meta.weight = 5.0 if Path(meta.path).name == 'nan.wav' else 1.0
    dataset = AudioDataset(metas, segment_duration=0.75, num_samples=30, sample_rate=SR, channels=1,
                           max_failure_ratio=0.5, name='train')
    with caplog.at_level(logging.WARNING):
        items = [dataset[i] for i in range(30)]
    assert {Path(p).name for p in dataset.failed_files} == {'nan.wav'}
    assert 'nan.wav' in caplog.text and 'NaN or infinite' in caplog.text
    for item in items:
        assert Path(item['path']).name != 'nan.wav'
        assert torch.isfinite(item['audio']).all()
        value = 0.1 * (int(Path(item['path']).stem[-1]) + 1)
        assert torch.allclose(item['audio'][:, :item['length']], torch.tensor(value))
    # Counted against max_failure_ratio: with a strict ratio the run stops naming the file.
    strict = AudioDataset(metas, segment_duration=0.75, num_samples=30, sample_rate=SR, channels=1,
                          max_failure_ratio=0.0, name='train')
    strict.min_files_for_failure_ratio = 1
    with pytest.raises(RuntimeError, match=r'max_failure_ratio=0\.0.*nan\.wav'):
        for i in range(30):
            strict[i]


@pytest.mark.parametrize('frames', [0, 1])
def test_too_short_file_is_skipped_and_named(tmp_path, caplog, frames):
    root = tmp_path / 'data'
    good_file(root / 'a.wav', 0.2)
    good_file(root / 'b.wav', 0.4)
    short = tiny_file(root / 'short.wav', frames)
    # From the manifest: dropped at construction with a warning naming it.
    metas = [AudioMeta(str(root / 'a.wav'), 1.0, SR, 1), AudioMeta(str(root / 'b.wav'), 1.0, SR, 1),
             AudioMeta(str(short), frames / SR, SR, 1)]
    with caplog.at_level(logging.WARNING):
        dataset = AudioDataset(metas, segment_duration=None, shuffle=False, sample_rate=SR, channels=1,
                               min_frames=64)
    assert str(short) in caplog.text and 'min_frames=64' in caplog.text
    assert [Path(m.path).name for m in dataset.meta] == ['a.wav', 'b.wav']
    # A stale manifest that claims a long file: caught when read, skipped, named and counted.
    stale = [AudioMeta(str(short), 1.0, SR, 1), *metas[:2]]
    dataset = AudioDataset(stale, segment_duration=None, shuffle=False, sample_rate=SR, channels=1,
                           min_frames=64, max_failure_ratio=0.5)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    assert dataset.failed_files == {str(short)} and 'short.wav' in caplog.text
    assert Path(item['path']).name == 'a.wav' and item['length'] == SR  # the next file, not zeros
    # The same with segments: the read reaches the end of the file and finds it too short.
    segments = AudioDataset(stale, segment_duration=0.5, num_samples=10, sample_rate=SR, channels=1,
                            min_frames=64, max_failure_ratio=0.5, sample_on_duration=False)
    assert all(Path(segments[i]['path']).name != 'short.wav' for i in range(10))


def test_default_min_frames_keeps_normal_files_and_drops_a_one_sample_file(tmp_path):
    root = tmp_path / 'data'
    good_file(root / 'a.wav', 0.2, duration=0.1)  # 800 samples: a short but normal file
    tiny_file(root / 'one.wav', 1)
    dataset = AudioDataset(find_audio_files(root), segment_duration=None, shuffle=False, sample_rate=SR,
                           channels=1)
    assert [Path(m.path).name for m in dataset.meta] == ['a.wav']


def test_segment_near_the_end_of_a_long_file_does_not_count_as_too_short(tmp_path):
    root = tmp_path / 'data'
    good_file(root / 'long.wav', 0.3, duration=2.0)
    dataset = AudioDataset(find_audio_files(root), segment_duration=1.0, num_samples=40, sample_rate=SR,
                           channels=1, min_segment_ratio=0.0, min_frames=4000)
    lengths = [dataset[i]['length'] for i in range(40)]
    assert not dataset.failed_files and min(lengths) < 4000  # short tails of a long file are fine


@pytest.fixture
def mixed(tmp_path) -> Path:
    """good (2 files, one captioned with two captions), NaN, truncated flac, dangling link, bad sidecar."""
    root = tmp_path / 'mixed'
    good_file(root / 'good1.wav', 0.3)
    good_file(root / 'good2.wav', 0.6)
    (root / 'good1.json').write_text(json.dumps({'description': ['one', 'two'], 'genre': 'drone'}))
    nonfinite_file(root / 'nan.wav')
    audio_write(root / 'cut.flac', 0.3 * torch.randn(1, SR).clamp(-1, 1), SR)
    data = (root / 'cut.flac').read_bytes()
    (root / 'cut.flac').write_bytes(data[:len(data) // 2])
    os.symlink(root / 'gone.wav', root / 'dangling.wav')
    good_file(root / 'captioned.wav', 0.5)
    (root / 'captioned.json').write_text('{"description": "unterminated')
    return root


def test_builder_reports_a_mixed_folder(mixed, caplog):
    result = scan_audio_files(mixed, complete=True)
    assert [Path(m.path).name for m in result.metas] == ['good1.wav', 'good2.wav']
    assert {Path(s.path).name: s.category for s in result.skipped} == {
        'nan.wav': NONFINITE, 'cut.flac': TRUNCATED, 'dangling.wav': DANGLING, 'captioned.wav': BAD_SIDECAR}
    assert result.reasons == {NONFINITE: 1, TRUNCATED: 1, DANGLING: 1, BAD_SIDECAR: 1}
    summary = result.summary()
    assert summary.startswith('Left out 4 files')
    for name in ('nan.wav', 'cut.flac', 'dangling.wav', 'captioned.json'):
        assert name in summary
    assert [m.amplitude for m in result.metas] == [pytest.approx(0.3), pytest.approx(0.6)]
    with caplog.at_level(logging.WARNING):
        metas = find_audio_files(mixed)
    assert len(metas) == 2 and 'nan.wav' in caplog.text and 'dangling.wav' in caplog.text


def test_cli_summary_and_complete_manifest_has_finite_amplitudes(mixed, tmp_path, capsys):
    out = tmp_path / 'manifest.jsonl'
    assert main([str(mixed), str(out), '--complete', '--quiet']) == 0
    stdout = capsys.readouterr().out
    assert 'Wrote' in stdout and '2 files' in stdout and 'Left out 4 files' in stdout
    text = out.read_text()
    assert 'NaN' not in text and 'Infinity' not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line['path'] for line in lines] == ['mixed/good1.wav', 'mixed/good2.wav']
    assert all(np.isfinite(line['amplitude']) for line in lines)


def test_manifest_writer_refuses_nonfinite_amplitudes(tmp_path):
    with pytest.raises(ValueError, match='a.wav'):
        save_audio_meta(tmp_path / 'data.jsonl', [AudioMeta('a.wav', 1.0, SR, 1, amplitude=float('nan'))])
    assert not (tmp_path / 'data.jsonl').exists()


def test_cli_on_a_missing_folder_prints_one_line_and_fails(tmp_path, capsys):
    code = main([str(tmp_path / 'nowhere'), str(tmp_path / 'out')])  # raises nothing: no traceback
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ''
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / 'nowhere') in lines[0]
    assert not (tmp_path / 'out').exists()
