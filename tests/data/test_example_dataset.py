"""Tests of the example dataset builder: manifests, captions, audio, determinism, fallbacks."""
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiogen_lab.data import example as ed
from audiogen_lab.data.audio import audio_info
from audiogen_lab.data.audio_dataset import load_audio_meta
from audiogen_lab.data.info_dataset import read_sidecar

pytest.importorskip('music21')

SR = 16000
DURATION = 2.0
SPLITS = (('train', 0.8), ('valid', 0.1), ('evaluate', 0.05), ('generate', 0.05))
HAS_TOOLS = bool(shutil.which('fluidsynth') and shutil.which('espeak-ng') and ed.find_soundfont())
needs_tools = pytest.mark.skipif(not HAS_TOOLS, reason="needs fluidsynth, a GM SoundFont and espeak-ng")


def _build(out: Path, seed: int = 0, workers: int = 1, **kwargs) -> dict:
    return ed.build_example_dataset(out, num_clips=6, clip_duration=DURATION, sample_rate=SR, seed=seed,
                                    workers=workers, verbose=False, **kwargs)


def _clips(out: Path) -> dict:
    """{split/file name: (caption sidecar dict, audio array)} for every clip of a build."""
    clips = {}
    for name, _ in SPLITS:
        for meta in load_audio_meta(out / name / 'data.jsonl'):
            key = f"{name}/{Path(meta.path).name}"
            clips[key] = (json.loads(Path(meta.info_path).read_text()), sf.read(meta.path, dtype='float32')[0])
    return clips


def _peak_frequencies(wav: np.ndarray, sample_rate: int, count: int) -> list:
    """The `count` strongest spectral peaks (Hz), at least 30 Hz apart."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    freqs = np.fft.rfftfreq(len(wav), 1 / sample_rate)
    peaks = []
    for idx in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[idx] - p) > 30 for p in peaks):
            peaks.append(float(freqs[idx]))
        if len(peaks) == count:
            break
    return sorted(peaks)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    if not HAS_TOOLS:
        pytest.skip("needs fluidsynth, a GM SoundFont and espeak-ng")
    out = tmp_path_factory.mktemp('example') / 'ds'
    return out, _build(out)


@needs_tools
def test_manifests_audio_and_captions(built):
    out, summary = built
    assert summary['num_clips'] == 6 and sum(summary['splits'].values()) == 6
    assert summary['sources'] == {'music': 5, 'speech': 1}
    assert all(summary['splits'][name] >= 1 for name, _ in SPLITS), summary['splits']
    assert summary['backends']['music'].startswith('fluidsynth')
    for name, _ in SPLITS:
        metas = load_audio_meta(out / name / 'data.jsonl')
        assert len(metas) == summary['splits'][name]
        for meta in metas:
            info = audio_info(meta.path)
            assert (meta.sample_rate, meta.channels) == (SR, 1)
            assert info.sample_rate == SR and info.channels == 1
            assert meta.duration == pytest.approx(DURATION) and info.duration == pytest.approx(DURATION)
            wav, _ = sf.read(meta.path, dtype='float32')
            assert np.isfinite(wav).all()
            assert np.sqrt(np.mean(wav ** 2)) > 0.01, f"{meta.path} is nearly silent"
            assert np.abs(wav).max() == pytest.approx(ed.PEAK, abs=1e-3)
            description, attributes = read_sidecar(meta.info_path)
            assert description
            if attributes['genre'] == 'speech':
                assert attributes['text'] and attributes['text'] in description
                assert description.startswith(f"Speech (voice {attributes['voice']}, {attributes['speed_wpm']} wpm)")
            else:
                assert attributes['composer'].split()[-1] in description
                assert attributes['key'] in description and f"{attributes['tempo']} BPM" in description
                assert attributes['genre'] in description and attributes['source'].startswith('music21:')
                assert attributes['key'].split()[-1] in ('major', 'minor')


@needs_tools
def test_same_seed_same_dataset_across_worker_counts(built, tmp_path):
    out, _ = built
    again = tmp_path / 'again'
    _build(again, workers=2)
    first, second = _clips(out), _clips(again)
    assert first.keys() == second.keys()
    for key in first:
        assert first[key][0] == second[key][0], key
        np.testing.assert_array_equal(first[key][1], second[key][1], err_msg=key)


@needs_tools
def test_other_seed_other_dataset(built, tmp_path):
    out, _ = built
    other = tmp_path / 'other'
    _build(other, seed=1)
    first = {c['description'] for c, _ in _clips(out).values()}
    second = {c['description'] for c, _ in _clips(other).values()}
    assert first != second


@needs_tools
def test_existing_build_is_kept_unless_forced(built, capsys):
    out, summary = built
    manifest = out / 'train' / 'data.jsonl'
    stamp = manifest.stat().st_mtime_ns
    again = ed.build_example_dataset(out, num_clips=6, clip_duration=DURATION, sample_rate=SR, seed=0,
                                     workers=1)
    assert again['reused'] is True and again['splits'] == summary['splits']
    assert manifest.stat().st_mtime_ns == stamp
    assert 'already holds this build' in capsys.readouterr().out
    # Different parameters rebuild, and leave no clip of the previous build behind.
    rebuilt = ed.build_example_dataset(out, num_clips=4, clip_duration=DURATION, sample_rate=SR, seed=0,
                                       workers=1, speech_fraction=0., verbose=False)
    assert rebuilt['reused'] is False and sum(rebuilt['splits'].values()) == 4
    assert len(list(out.glob('*/clip_*.wav'))) == 4
    params = json.loads((out / 'build_info.json').read_text())['params']
    assert params['num_clips'] == 4
    forced = ed.build_example_dataset(out, num_clips=4, clip_duration=DURATION, sample_rate=SR, seed=0,
                                      workers=1, speech_fraction=0., verbose=False, force=True)
    assert forced['reused'] is False


def test_synth_backend_builds_music_with_synth_captions(tmp_path):
    summary = _build(tmp_path / 'synth', backend='synth', speech_fraction=0.)
    assert summary['backends']['music'] == 'synth' and summary['sources']['speech'] == 0
    for caption, wav in _clips(tmp_path / 'synth').values():
        assert 'built-in additive synthesiser' in caption['description']
        assert caption['backend'] == 'synth' and caption['instrument'].startswith('synth ')
        assert np.isfinite(wav).all() and np.sqrt(np.mean(wav ** 2)) > 0.01


def test_synthesiser_plays_the_note_frequency():
    note = ed.NoteEvent(start=0., duration=2., pitch=69, velocity=100, part=0)  # A4, 2 beats at 60 BPM
    for timbre in ed.TIMBRES:
        wav = ed.synthesize_notes([note], [timbre], bpm=60., sample_rate=SR, duration=2.5)
        assert wav.shape == (int(2.5 * SR),) and wav.dtype == np.float32
        assert _peak_frequencies(wav, SR, 1)[0] == pytest.approx(440., abs=1.), timbre
        # Silence after the release: the note lasts 2 s plus its release time.
        assert np.abs(wav[int(2.3 * SR):]).max() < 1e-6


def test_synthesiser_renders_a_music21_stream_at_its_pitches():
    from music21 import chord, stream
    part = stream.Part()
    part.append(chord.Chord(['C4', 'E4', 'G4'], quarterLength=2))
    score = stream.Score([part])
    events, _, length = ed.score_to_events(score)
    assert [e.pitch for e in events] == [60, 64, 67] and length == 2.
    wav = ed.synthesize_notes(events, ['organ'], bpm=120., sample_rate=SR, duration=1.)
    expected = [261.63, 329.63, 392.0]
    for got, want in zip(_peak_frequencies(wav[:int(0.9 * SR)], SR, 3), expected, strict=True):
        assert got == pytest.approx(want, abs=3.)


def test_tied_notes_are_merged():
    from music21 import note, stream, tie
    part = stream.Part()
    first, second = note.Note('D5', quarterLength=1), note.Note('D5', quarterLength=1.5)
    first.tie, second.tie = tie.Tie('start'), tie.Tie('stop')
    part.append([first, second, note.Note('E5', quarterLength=1)])
    events, _, _ = ed.score_to_events(stream.Score([part]))
    assert [(e.start, e.duration, e.pitch) for e in events] == [(0., 2.5, 74), (2.5, 1., 76)]


def test_excerpt_loops_short_pieces_and_starts_on_measures():
    events = [ed.NoteEvent(float(i), 1., 60 + i, 80, 0) for i in range(4)]  # one 4/4 measure
    excerpt = ed.select_excerpt(events, [0.], 4., window=10., rng=random.Random(0))
    assert [e.start for e in excerpt] == [float(i) for i in range(10)]
    assert [e.pitch for e in excerpt[4:8]] == [60, 61, 62, 63]
    long_piece = [ed.NoteEvent(float(i), 1., 60 + i % 12, 80, 0) for i in range(64)]
    starts = {ed.select_excerpt(long_piece, [4. * m for m in range(16)], 64., 8., random.Random(s))[0].pitch
              for s in range(20)}
    assert len(starts) > 1 and all((p - 60) % 4 == 0 for p in starts)  # notes that begin a measure
    cut = ed.select_excerpt([ed.NoteEvent(0., 20., 60, 80, 0)], [0.], 20., 8., random.Random(0))
    assert cut[0].duration == 8.


def test_split_counts():
    assert ed.split_counts(150, SPLITS) == {'train': 120, 'valid': 15, 'evaluate': 8, 'generate': 7}
    assert ed.split_counts(6, SPLITS) == {'train': 3, 'valid': 1, 'evaluate': 1, 'generate': 1}
    assert sum(ed.split_counts(3, SPLITS).values()) == 3
    with pytest.raises(ValueError, match='fractions'):
        ed.split_counts(10, (('train', -1.),))


def test_catalogue_draws_are_distinct_and_seeded():
    catalogue = ed.corpus_catalogue()
    assert {'bach_chorales', 'palestrina', 'monteverdi', 'ryans_mammoth', 'essen_folksongs'} <= set(catalogue)
    draws = [ed.CandidateDrawer(catalogue, seed).draw() for seed in (0, 0, 1)]
    assert draws[0] == draws[1]
    drawer = ed.CandidateDrawer(catalogue, 3)
    many = [drawer.draw() for _ in range(200)]
    assert len(set(many)) == 200 and len({c.collection for c in many}) >= 6


def test_missing_tools_fall_back_with_one_message(tmp_path, monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(shutil, 'which',
                        lambda name: None if name in ('fluidsynth', 'espeak-ng') else real_which(name))
    summary = ed.build_example_dataset(tmp_path / 'fallback', num_clips=2, clip_duration=1., sample_rate=SR,
                                       workers=1, splits=(('train', 1.),))
    out = capsys.readouterr().out
    assert out.count(ed.INSTALL_HINT) == 2  # one message for fluidsynth, one for espeak-ng
    assert 'fluidsynth program' in out and 'espeak-ng program' in out
    assert summary['backends'] == {'music': 'synth', 'speech': None}
    assert summary['sources'] == {'music': 2, 'speech': 0}
    with pytest.raises(RuntimeError, match='apt-get install'):
        ed.build_example_dataset(tmp_path / 'strict', num_clips=1, backend='fluidsynth', verbose=False)


def test_soundfont_lookup(tmp_path, monkeypatch):
    font = tmp_path / 'font.sf2'
    font.write_bytes(b'RIFF')
    assert ed.find_soundfont(font) == font
    monkeypatch.setenv(ed.SOUNDFONT_ENV, str(font))
    assert ed.find_soundfont() == font
    monkeypatch.setenv(ed.SOUNDFONT_ENV, str(tmp_path / 'missing.sf2'))
    with pytest.raises(FileNotFoundError, match=ed.SOUNDFONT_ENV):
        ed.find_soundfont()


def test_speech_sentences_are_deterministic():
    first = [ed.make_sentence(random.Random(5)) for _ in range(3)]
    assert len(set(first)) == 1 and first[0].endswith(('.', '?'))
    assert len({ed.make_sentence(random.Random(s)) for s in range(20)}) > 10
