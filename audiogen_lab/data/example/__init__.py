"""The built-in example dataset: real music and speech made offline.

Music comes from scores of the music21 corpus (Bach chorales, Palestrina masses, Monteverdi madrigals,
Haydn/Mozart/Beethoven string quartets, folk tunes...). A short excerpt of each score is given a
General MIDI instrument per part and a tempo, written to MIDI with music21 and rendered with FluidSynth
and a GM SoundFont. When FluidSynth or a SoundFont is missing, the same notes are rendered by a built-in
additive synthesiser instead. Speech is spoken by espeak-ng from sentences generated from templates.

Each clip is a mono wav file `<out>/<split>/clip_NNNN.wav` with a caption sidecar `clip_NNNN.json`
(`description`, `composer`, `instrument`, `key`, `tempo`, `genre`, `source`...), listed in the split's
manifest `<out>/<split>/data.jsonl`. Everything is a deterministic function of the build parameters:
the same seed gives the same clips, captions and audio.

    from audiogen_lab.data.example import build_example_dataset
    summary = build_example_dataset('dataset/example', num_clips=150)

Modules: `corpus` (score collections, catalogue, candidate drawing), `scores` (parsing, notes,
excerpts, keys), `orchestration` (instruments and styles), `captions`, `synth` (built-in synthesiser),
`fluidsynth` (SoundFont lookup and rendering), `speech` (espeak-ng sentences and clips), `music` (music
clips), `clips` (length, silence and level of every clip), `backends` (renderer choice), `jobs`
(rendering in worker processes) and `builder` (planning, splits, manifests, summary).
"""
from .backends import BACKENDS, INSTALL_HINT, resolve_backends
from .builder import BUILD_VERSION, DEFAULT_SPLITS, MAX_ROUNDS, build_example_dataset, format_summary, split_counts
from .captions import join_names, music_caption
from .clips import PEAK, SkipCandidate, fit_length, normalize_peak, silence_reason
from .corpus import (COLLECTIONS, CandidateDrawer, Collection, ScoreCandidate, collection_by_name, corpus_catalogue,
                     corpus_root)
from .fluidsynth import SOUNDFONT_CANDIDATES, SOUNDFONT_ENV, find_soundfont, render_fluidsynth
from .music import make_music_clip
from .orchestration import GM_PROGRAMS, STYLES, Style, choose_instruments
from .scores import NoteEvent, events_to_score, key_name, load_score, score_tempo, score_to_events, select_excerpt
from .speech import SPEECH_VARIANTS, SPEECH_VOICES, make_sentence, make_speech_clip, speak
from .synth import SYNTH_TIMBRE_OF, TIMBRES, Timbre, synthesize_notes

__all__ = [
    'BACKENDS', 'BUILD_VERSION', 'COLLECTIONS', 'DEFAULT_SPLITS', 'GM_PROGRAMS', 'INSTALL_HINT', 'MAX_ROUNDS',
    'PEAK', 'SOUNDFONT_CANDIDATES', 'SOUNDFONT_ENV', 'SPEECH_VARIANTS', 'SPEECH_VOICES', 'STYLES',
    'SYNTH_TIMBRE_OF', 'TIMBRES', 'CandidateDrawer', 'Collection', 'NoteEvent', 'ScoreCandidate',
    'SkipCandidate', 'Style', 'Timbre', 'build_example_dataset', 'choose_instruments', 'collection_by_name',
    'corpus_catalogue', 'corpus_root', 'events_to_score', 'find_soundfont', 'fit_length', 'format_summary',
    'join_names', 'key_name', 'load_score', 'make_music_clip', 'make_sentence', 'make_speech_clip',
    'music_caption', 'normalize_peak', 'render_fluidsynth', 'resolve_backends', 'score_tempo',
    'score_to_events', 'select_excerpt', 'silence_reason', 'speak', 'split_counts', 'synthesize_notes',
]
