"""Music clips: a corpus score excerpt, orchestrated and rendered with FluidSynth or the built-in synthesiser."""
from pathlib import Path
import random
import tempfile
import typing as tp

import numpy as np

from .captions import join_names, music_caption
from .clips import SkipCandidate, fit_length, normalize_peak, silence_reason
from .corpus import ScoreCandidate, collection_by_name, corpus_root
from .fluidsynth import render_fluidsynth
from .orchestration import GM_PROGRAMS, STYLES, choose_instruments
from .scores import NoteEvent, events_to_score, key_name, load_score, score_tempo, score_to_events, select_excerpt
from .synth import SYNTH_TIMBRE_OF, synthesize_notes

PathLike = tp.Union[str, Path]


def make_music_clip(candidate: ScoreCandidate, clip_duration: float, sample_rate: int, seed: int,
                    music_backend: str, soundfont: tp.Optional[PathLike] = None,
                    ) -> tp.Tuple[np.ndarray, tp.Dict[str, tp.Any]]:
    """Render one music clip from a corpus score.

    Returns:
        `(wav, info)`: mono float32 waveform `[T]` (T = clip_duration * sample_rate, peak `PEAK`) and
        the caption sidecar fields. Raises `SkipCandidate` when the score cannot make a clip.
    """
    coll = collection_by_name(candidate.collection)
    style = STYLES[coll.style]
    rng = random.Random(f"{seed}:{candidate.source}")
    try:
        score = load_score(corpus_root() / candidate.path, candidate.number)
        events, measures, length = score_to_events(score)
    except Exception as exc:  # music21 raises many exception types on malformed files
        raise SkipCandidate(f"cannot parse ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if len(events) < 4:
        raise SkipCandidate(f"only {len(events)} notes")
    given = score_tempo(score)
    bpm = int(round(given)) if given and 40 <= given <= 220 else rng.randint(*style.tempo)
    window = (clip_duration + 1.0) * bpm / 60.
    excerpt = select_excerpt(events, measures, length, window, rng)
    num_parts = max(e.part for e in events) + 1
    names = choose_instruments(style, num_parts, rng)
    if num_parts == 1 and style.double and rng.random() < style.p_double:
        names.append(rng.choice(style.double))
        excerpt += [NoteEvent(e.start, e.duration, e.pitch - 12, e.velocity, 1)
                    for e in excerpt if e.pitch - 12 >= 28]
        num_parts = 2
    levels = [min(110, rng.randint(70, 96) + (8 if i == 0 else 0)) for i in range(num_parts)]
    excerpt = [NoteEvent(e.start, e.duration, e.pitch, levels[e.part], e.part) for e in excerpt]
    excerpt_score = events_to_score(excerpt, [GM_PROGRAMS[n] for n in names], bpm)
    try:
        key = key_name(excerpt_score)
    except Exception as exc:
        raise SkipCandidate(f"key analysis failed ({type(exc).__name__})") from exc
    total = int(round(clip_duration * sample_rate))
    if music_backend == 'fluidsynth':
        assert soundfont is not None, "The fluidsynth backend needs a SoundFont."
        with tempfile.TemporaryDirectory(prefix='example_dataset_') as tmp:
            wav = render_fluidsynth(excerpt_score, soundfont, sample_rate, tmp)
        instrument = join_names(names)
        backend = f"fluidsynth:{Path(soundfont).name}"
    else:
        timbres = [SYNTH_TIMBRE_OF.get(n, 'organ') for n in names]
        wav = synthesize_notes(excerpt, timbres, bpm, sample_rate, clip_duration)
        instrument = join_names([f"synth {t}" for t in timbres])
        backend = 'synth'
    wav = fit_length(wav, total)
    reason = silence_reason(wav, sample_rate)
    if reason:
        raise SkipCandidate(reason)
    genre = coll.genre_of(candidate.path)
    title = score.metadata.title if score.metadata is not None and score.metadata.title else None
    info = {
        'description': music_caption(coll.composer_short, genre, key, bpm, names,
                                     synth=music_backend != 'fluidsynth'),
        'composer': coll.composer, 'instrument': instrument, 'key': key, 'tempo': bpm, 'genre': genre,
        'source': candidate.source, 'title': title, 'collection': coll.name, 'backend': backend,
        'programs': [GM_PROGRAMS[n] for n in names],
    }
    return normalize_peak(wav), info
