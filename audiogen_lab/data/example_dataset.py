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

    from audiogen_lab.data.example_dataset import build_example_dataset
    summary = build_example_dataset('dataset/example', num_clips=150)
"""
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import typing as tp
import warnings

import numpy as np

PathLike = tp.Union[str, Path]

BUILD_VERSION = 1
INSTALL_HINT = "apt-get install fluidsynth timgm6mb-soundfont espeak-ng"
SOUNDFONT_ENV = 'AUDIOGEN_LAB_SOUNDFONT'
SOUNDFONT_CANDIDATES = ('/usr/share/sounds/sf2/TimGM6mb.sf2', '/usr/share/sounds/sf2/FluidR3_GM.sf2',
                        '/usr/share/sounds/sf2/default-GM.sf2')
DEFAULT_SPLITS = (('train', 0.8), ('valid', 0.1), ('evaluate', 0.05), ('generate', 0.05))
BACKENDS = ('auto', 'fluidsynth', 'synth')
PEAK = 0.7  # peak level of every clip after normalisation (about -3 dBFS)
MAX_ROUNDS = 8  # a music clip whose score fails gets fresh scores in the next round

# --------------------------------------------------------------------------------------------------
# Instruments and styles
# --------------------------------------------------------------------------------------------------

# Caption name -> General MIDI program (0-based).
GM_PROGRAMS: tp.Dict[str, int] = {
    'piano': 0, 'harpsichord': 6, 'celesta': 8, 'vibraphone': 11, 'marimba': 12, 'organ': 19,
    'reed organ': 20, 'accordion': 21, 'nylon guitar': 24, 'steel guitar': 25, 'violin': 40,
    'viola': 41, 'cello': 42, 'contrabass': 43, 'harp': 46, 'string ensemble': 48, 'choir': 52,
    'voices': 53, 'trumpet': 56, 'trombone': 57, 'french horn': 60, 'brass section': 61, 'oboe': 68,
    'bassoon': 70, 'clarinet': 71, 'piccolo': 72, 'flute': 73, 'recorder': 74, 'pan flute': 75,
    'banjo': 105, 'fiddle': 110,
}

# Caption name -> timbre of the built-in synthesiser that stands in for it.
SYNTH_TIMBRE_OF: tp.Dict[str, str] = {
    'organ': 'organ', 'reed organ': 'organ', 'accordion': 'organ', 'choir': 'organ', 'voices': 'organ',
    'piano': 'pluck', 'harpsichord': 'pluck', 'celesta': 'pluck', 'vibraphone': 'pluck',
    'marimba': 'pluck', 'nylon guitar': 'pluck', 'steel guitar': 'pluck', 'harp': 'pluck',
    'banjo': 'pluck', 'violin': 'bowed', 'viola': 'bowed', 'cello': 'bowed', 'contrabass': 'bowed',
    'string ensemble': 'bowed', 'fiddle': 'bowed', 'trumpet': 'brass', 'trombone': 'brass',
    'french horn': 'brass', 'brass section': 'brass', 'oboe': 'wind', 'bassoon': 'wind',
    'clarinet': 'wind', 'piccolo': 'wind', 'flute': 'wind', 'recorder': 'wind', 'pan flute': 'wind',
}


@dataclass(frozen=True)
class Style:
    """How a family of scores is orchestrated and how fast it is played when the score gives no tempo.

    For each excerpt, with probability `p_fixed` the parts take `fixed` in order (e.g. a string
    quartet), else with probability `p_uniform` every part plays one instrument drawn from `uniform`,
    else the first part plays an instrument from `lead` and the others from `accomp` (one shared
    instrument when `same_accomp`). A single-line score is doubled an octave below by an instrument
    of `double` with probability `p_double`.
    """
    uniform: tp.Tuple[str, ...]
    lead: tp.Tuple[str, ...] = ()
    accomp: tp.Tuple[str, ...] = ()
    fixed: tp.Tuple[str, ...] = ()
    p_fixed: float = 0.
    p_uniform: float = 1.
    same_accomp: bool = False
    double: tp.Tuple[str, ...] = ()
    p_double: float = 0.
    tempo: tp.Tuple[int, int] = (72, 120)


STYLES: tp.Dict[str, Style] = {
    'chorale': Style(
        uniform=('organ', 'choir', 'string ensemble', 'piano', 'brass section', 'harpsichord'),
        lead=('flute', 'oboe', 'violin', 'trumpet', 'clarinet', 'recorder'),
        accomp=('organ', 'cello', 'viola', 'bassoon', 'french horn', 'trombone', 'clarinet', 'choir'),
        p_uniform=0.55, tempo=(60, 96)),
    'renaissance': Style(
        uniform=('choir', 'voices', 'recorder', 'string ensemble', 'organ', 'reed organ'),
        lead=('recorder', 'flute', 'oboe', 'voices', 'violin'),
        accomp=('recorder', 'viola', 'cello', 'trombone', 'choir', 'voices', 'harp'),
        p_uniform=0.6, tempo=(56, 92)),
    'quartet': Style(
        fixed=('violin', 'violin', 'viola', 'cello'), p_fixed=0.5,
        uniform=('piano', 'string ensemble', 'harpsichord'),
        lead=('flute', 'oboe', 'clarinet', 'violin', 'trumpet'),
        accomp=('viola', 'cello', 'bassoon', 'french horn', 'clarinet', 'nylon guitar'),
        p_uniform=0.25, tempo=(72, 132)),
    'folk_dance': Style(
        uniform=('fiddle', 'flute', 'accordion', 'recorder', 'harp', 'piano', 'nylon guitar', 'banjo',
                 'marimba', 'vibraphone', 'clarinet', 'pan flute'),
        double=('nylon guitar', 'harp', 'piano', 'cello', 'accordion', 'steel guitar'), p_double=0.4,
        tempo=(96, 144)),
    'folk_song': Style(
        uniform=('flute', 'violin', 'clarinet', 'oboe', 'recorder', 'accordion', 'piano', 'harp',
                 'nylon guitar', 'vibraphone', 'celesta', 'voices'),
        double=('nylon guitar', 'harp', 'piano', 'cello', 'organ', 'bassoon'), p_double=0.4,
        tempo=(72, 116)),
    'keyboard': Style(
        uniform=('piano', 'harpsichord', 'vibraphone', 'marimba', 'harp', 'nylon guitar'),
        tempo=(70, 130)),
    'song': Style(
        uniform=('piano', 'string ensemble'),
        lead=('violin', 'flute', 'clarinet', 'oboe', 'trumpet', 'voices', 'cello'),
        accomp=('piano', 'harp', 'nylon guitar', 'string ensemble', 'organ'),
        p_uniform=0.2, same_accomp=True, tempo=(60, 100)),
}

# --------------------------------------------------------------------------------------------------
# Score collections of the music21 corpus
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collection:
    """A family of corpus files sharing composer, genre and style.

    Attributes:
        name: short identifier used in summaries.
        patterns: globs on corpus-relative paths (e.g. 'bach/bwv*.mxl').
        composer: full composer name ('traditional' for folk music).
        composer_short: the name used in captions ('Bach').
        genre: the default genre phrase ('chorale').
        style: key of `STYLES`.
        weight: relative probability of drawing from this collection.
        genres: (regex on the file name, genre) pairs overriding `genre`; the first match wins.
        exclude: globs of files to leave out.
        max_kib: larger files are left out (slow to parse).
        opus: files hold many numbered tunes (abc `X:` fields); each tune is one candidate.
    """
    name: str
    patterns: tp.Tuple[str, ...]
    composer: str
    composer_short: str
    genre: str
    style: str
    weight: float
    genres: tp.Tuple[tp.Tuple[str, str], ...] = ()
    exclude: tp.Tuple[str, ...] = ()
    max_kib: int = 64
    opus: bool = False

    def genre_of(self, rel_path: str) -> str:
        name = rel_path.rsplit('/', 1)[-1]
        for regex, genre in self.genres:
            if re.search(regex, name):
                return genre
        return self.genre


def _piece(name: str, path: str, composer: str, short: str, genre: str, style: str) -> Collection:
    return Collection(name, (path,), composer, short, genre, style, weight=0.006, max_kib=128)


COLLECTIONS: tp.Tuple[Collection, ...] = (
    Collection('bach_chorales', ('bach/bwv*.mxl',), 'Johann Sebastian Bach', 'Bach', 'chorale',
               'chorale', 0.20, max_kib=24),
    Collection('palestrina', ('palestrina/*.krn',), 'Giovanni Pierluigi da Palestrina', 'Palestrina',
               'mass movement', 'renaissance', 0.12,
               genres=(('^Agnus', 'Agnus Dei'), ('^Kyrie', 'Kyrie'), ('^Gloria', 'Gloria'),
                       ('^Credo', 'Credo'), ('^Sanctus', 'Sanctus'), ('^Benedictus', 'Benedictus'))),
    Collection('monteverdi', ('monteverdi/madrigal.*.mxl',), 'Claudio Monteverdi', 'Monteverdi',
               'madrigal', 'renaissance', 0.08),
    Collection('haydn_quartets', ('haydn/*/movement*.mxl',), 'Joseph Haydn', 'Haydn',
               'string quartet movement', 'quartet', 0.04),
    Collection('mozart_quartets', ('mozart/k80/*.mxl', 'mozart/k155/*.mxl', 'mozart/k156/*.mxl',
                                   'mozart/k458/*.mxl'), 'Wolfgang Amadeus Mozart', 'Mozart',
               'string quartet movement', 'quartet', 0.04),
    Collection('beethoven_quartets', ('beethoven/opus18no1/*.mxl', 'beethoven/opus59no*/*.mxl'),
               'Ludwig van Beethoven', 'Beethoven', 'string quartet movement', 'quartet', 0.04,
               max_kib=80),
    Collection('ryans_mammoth', ('ryansMammoth/*.abc',), 'traditional', 'traditional', 'dance tune',
               'folk_dance', 0.14,
               genres=(('Slipjig', 'slip jig'), ('Reel', 'reel'), ('Jig', 'jig'),
                       ('Hornpipe', 'hornpipe'), ('Strathspey', 'strathspey'), ('Clog', 'clog dance'),
                       ('Fling', 'Highland fling'), ('March', 'march'), ('Waltz', 'waltz'))),
    Collection('essen_folksongs', ('essenFolksong/*.abc',), 'traditional', 'traditional',
               'German folk song', 'folk_song', 0.10, opus=True, max_kib=1024,
               exclude=('essenFolksong/test*', 'essenFolksong/variant*', 'essenFolksong/folkHaydn*'),
               genres=(('^ballad', 'German folk ballad'), ('^kinder', "German children's song"),
                       ('^han', 'Chinese folk song'), ('^irl', 'Irish folk song'),
                       ('^lux', 'Luxembourgish folk song'), ('^lot', 'Lorraine folk song'))),
    Collection('oneills_1850', ('oneills1850/*.abc',), 'traditional', 'traditional', 'Irish folk tune',
               'folk_dance', 0.07, opus=True, max_kib=1024),
    Collection('airds_airs', ('airdsAirs/*.abc',), 'traditional', 'traditional', 'Scottish air',
               'folk_song', 0.03, opus=True, max_kib=1024),
    _piece('joplin', 'joplin/maple_leaf_rag.mxl', 'Scott Joplin', 'Joplin', 'ragtime', 'keyboard'),
    _piece('chopin', 'chopin/mazurka06-2.krn', 'Frederic Chopin', 'Chopin', 'mazurka', 'keyboard'),
    _piece('handel', 'handel/rinaldo/Lascia_chio_pianga.mxl', 'George Frideric Handel', 'Handel',
           'Baroque aria', 'song'),
    _piece('verdi', 'verdi/laDonnaEMobile.mxl', 'Giuseppe Verdi', 'Verdi', 'opera aria', 'song'),
    _piece('corelli', 'corelli/opus3no1/1grave.xml', 'Arcangelo Corelli', 'Corelli',
           'trio sonata movement', 'chorale'),
    _piece('cpebach', 'cpebach/h186.mxl', 'Carl Philipp Emanuel Bach', 'C. P. E. Bach',
           'keyboard piece', 'keyboard'),
    _piece('clara_schumann', 'schumann_clara/polonaise_op1n*.mxl', 'Clara Schumann', 'Clara Schumann',
           'polonaise', 'keyboard'),
    _piece('liliuokalani', 'liliuokalani/aloha_oe.mxl', 'Liliuokalani', 'Liliuokalani', 'Hawaiian song',
           'chorale'),
    _piece('johnson', 'johnson_j_r/lift_every_voice.mxl', 'J. Rosamond Johnson', 'Johnson', 'hymn',
           'chorale'),
    _piece('robert_schumann', 'schumann_robert/dichterliebe_no2.xml', 'Robert Schumann', 'Schumann',
           'art song', 'song'),
)


@dataclass(frozen=True)
class ScoreCandidate:
    """One corpus score that may become a music clip: collection name, corpus-relative path, tune number."""
    collection: str
    path: str
    number: tp.Optional[int] = None

    @property
    def source(self) -> str:
        suffix = f"#{self.number}" if self.number is not None else ''
        return f"music21:{self.path}{suffix}"


def _corpus_root() -> Path:
    from music21 import common
    return Path(common.getCorpusFilePath())


def corpus_catalogue(collections: tp.Sequence[Collection] = COLLECTIONS) -> tp.Dict[str, tp.List[ScoreCandidate]]:
    """List the candidate scores of each collection, in a stable order.

    Reads `music21.corpus.getPaths()` and, for files holding many tunes, their `X:` tune numbers.
    """
    from music21 import corpus
    root = _corpus_root()
    rel_paths = []
    for path in corpus.getPaths():
        try:
            rel_paths.append((Path(path).relative_to(root).as_posix(), Path(path)))
        except ValueError:  # a user corpus outside the core corpus
            continue
    rel_paths.sort()
    catalogue: tp.Dict[str, tp.List[ScoreCandidate]] = {}
    for coll in collections:
        items: tp.List[ScoreCandidate] = []
        for rel, full in rel_paths:
            if not any(fnmatch(rel, p) for p in coll.patterns) or any(fnmatch(rel, p) for p in coll.exclude):
                continue
            if full.stat().st_size > coll.max_kib * 1024:
                continue
            if coll.opus:
                text = full.read_text(encoding='latin-1')
                numbers = sorted({int(n) for n in re.findall(r'^X:\s*(\d+)', text, re.M)})
                items.extend(ScoreCandidate(coll.name, rel, n) for n in numbers)
            else:
                items.append(ScoreCandidate(coll.name, rel))
        if items:
            catalogue[coll.name] = items
    return catalogue


class CandidateDrawer:
    """Draw distinct score candidates: a collection by weight, then a score of it without replacement."""

    def __init__(self, catalogue: tp.Dict[str, tp.List[ScoreCandidate]], seed: int):
        self.rng = random.Random(f"example-dataset-scores-{seed}")
        self.remaining = {name: list(items) for name, items in catalogue.items()}
        self.weights = {c.name: c.weight for c in COLLECTIONS}

    def draw(self) -> ScoreCandidate:
        names = [n for n, items in self.remaining.items() if items]
        if not names:
            raise RuntimeError("The music21 corpus ran out of usable scores: ask for fewer clips.")
        name = self.rng.choices(names, weights=[self.weights.get(n, 0.01) for n in names])[0]
        items = self.remaining[name]
        idx = self.rng.randrange(len(items))
        items[idx], items[-1] = items[-1], items[idx]
        return items.pop()


# --------------------------------------------------------------------------------------------------
# External tools
# --------------------------------------------------------------------------------------------------


def find_soundfont(soundfont: tp.Optional[PathLike] = None) -> tp.Optional[Path]:
    """Find a General MIDI SoundFont.

    Looks at, in order: the `soundfont` argument, the `AUDIOGEN_LAB_SOUNDFONT` environment variable,
    /usr/share/sounds/sf2/{TimGM6mb,FluidR3_GM,default-GM}.sf2, /usr/share/soundfonts/*.sf2, then the
    TimGM6mb.sf2 file of the pretty_midi package when it is installed. Returns None when none exists.
    Raises FileNotFoundError when an explicitly given file (argument or variable) does not exist.
    """
    for given, what in ((soundfont, 'soundfont argument'), (os.environ.get(SOUNDFONT_ENV), SOUNDFONT_ENV)):
        if given:
            if not Path(given).is_file():
                raise FileNotFoundError(f"The SoundFont given by the {what} does not exist: {given}.")
            return Path(given)
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    shared = sorted(Path('/usr/share/soundfonts').glob('*.sf2')) if Path('/usr/share/soundfonts').is_dir() else []
    if shared:
        return shared[0]
    try:
        import pretty_midi  # type: ignore
    except ImportError:
        return None
    bundled = Path(pretty_midi.__file__).parent / 'TimGM6mb.sf2'
    return bundled if bundled.is_file() else None


def _resolve_backends(backend: str, soundfont: tp.Optional[PathLike], speech: bool,
                      say: tp.Callable[[str], None]) -> tp.Tuple[str, tp.Optional[Path], bool]:
    """Pick the music renderer ('fluidsynth' or 'synth'), the SoundFont and whether speech is made."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    font = find_soundfont(soundfont) if backend != 'synth' else None
    fluidsynth = shutil.which('fluidsynth') if backend != 'synth' else None
    music = 'synth'
    if backend != 'synth':
        missing = [what for what, ok in (('the fluidsynth program', fluidsynth),
                                          ('a General MIDI SoundFont (.sf2)', font)) if not ok]
        if not missing:
            music = 'fluidsynth'
        elif backend == 'fluidsynth':
            raise RuntimeError(f"backend='fluidsynth' needs {' and '.join(missing)}: install them with "
                               f"`{INSTALL_HINT}` or point {SOUNDFONT_ENV} at a SoundFont.")
        else:
            say(f"[example data] {' and '.join(missing)} not found: the scores are rendered with the "
                f"built-in additive synthesiser instead (captions say so). For realistic instruments, "
                f"install them with `{INSTALL_HINT}` or set {SOUNDFONT_ENV}=/path/to/font.sf2.")
    has_speech = speech and shutil.which('espeak-ng') is not None
    if speech and not has_speech:
        say(f"[example data] the espeak-ng program is not found: the dataset holds music only. "
            f"Install it with `{INSTALL_HINT}`.")
    return music, (font if music == 'fluidsynth' else None), has_speech


# --------------------------------------------------------------------------------------------------
# Scores -> notes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteEvent:
    """One note: onset and duration in quarter notes, MIDI pitch, MIDI velocity (1-127) and part index."""
    start: float
    duration: float
    pitch: int
    velocity: int
    part: int


def load_score(path: PathLike, number: tp.Optional[int] = None):
    """Parse a score file with music21 (tune `number` of a multi-tune abc file) into a `Score`."""
    from music21 import converter, stream
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        parsed = converter.parse(str(path), number=number) if number is not None else converter.parse(str(path))
    if isinstance(parsed, stream.Opus):
        scores = list(parsed.scores)
        if not scores:
            raise ValueError(f"{path} holds no score.")
        parsed = scores[0]
    if isinstance(parsed, stream.Part):
        parsed = stream.Score([parsed])
    return parsed


def score_to_events(score) -> tp.Tuple[tp.List[NoteEvent], tp.List[float], float]:
    """Read the notes of a music21 score, merging tied notes.

    Returns:
        `(events, measure_offsets, length)`: notes sorted by onset (velocity 80, part = part index),
        the offsets of the first part's measures and the score length, all in quarter notes.
    """
    from music21 import chord, harmony, note, stream
    parts = list(score.parts) or [score]
    events: tp.List[tp.List[float]] = []
    for part_idx, part in enumerate(parts):
        flat = part.flatten()
        open_ties: tp.Dict[int, int] = {}
        for element in flat.notes:
            if isinstance(element, harmony.Harmony) or not isinstance(element, (note.Note, chord.Chord)):
                continue
            if element.duration.isGrace or element.quarterLength <= 0:
                continue
            start, dur = float(flat.elementOffset(element)), float(element.quarterLength)
            components = element.notes if isinstance(element, chord.Chord) else [element]
            for comp in components:
                pitch = int(comp.pitch.midi)
                tie = comp.tie.type if comp.tie is not None else (element.tie.type if element.tie else None)
                if tie in ('stop', 'continue') and pitch in open_ties:
                    held = events[open_ties[pitch]]
                    held[1] = max(held[1], start + dur - held[0])
                    if tie == 'stop':
                        del open_ties[pitch]
                    continue
                events.append([start, dur, pitch, 80, part_idx])
                if tie in ('start', 'continue'):
                    open_ties[pitch] = len(events) - 1
                else:
                    open_ties.pop(pitch, None)
    notes = sorted((NoteEvent(s, d, p, v, i) for s, d, p, v, i in events),
                   key=lambda e: (e.start, e.part, e.pitch))
    first = parts[0]
    measure_offsets = [float(first.elementOffset(m)) for m in first.getElementsByClass(stream.Measure)]
    return notes, measure_offsets, float(score.highestTime)


def score_tempo(score) -> tp.Optional[float]:
    """The first metronome mark of a score in quarter notes per minute, or None."""
    from music21 import tempo
    for mark in score.recurse().getElementsByClass(tempo.MetronomeMark):
        bpm = mark.getQuarterBPM()
        if bpm:
            return float(bpm)
    return None


def select_excerpt(events: tp.Sequence[NoteEvent], measure_offsets: tp.Sequence[float], length: float,
                   window: float, rng: random.Random) -> tp.List[NoteEvent]:
    """Cut `window` quarter notes of music starting on a measure, looping short pieces.

    The excerpt starts at the first note (40% of the time, or when the piece is short) or at a
    measure drawn by `rng`; its notes are shifted to start at 0 and cut at `window`.
    """
    if not events:
        raise ValueError("The score holds no notes.")
    first = events[0].start
    end = max(max(e.start + e.duration for e in events), length)
    starts = sorted({max(m, first) for m in measure_offsets if max(m, first) + window <= end})
    start = first if (not starts or rng.random() < 0.4) else rng.choice(starts)
    start = min((e.start for e in events if e.start >= start - 1e-9), default=first)
    pool = list(events)
    period = end - first
    copies = 1
    while pool[-1].start < start + window and period > 0 and copies < 64:
        pool.extend(NoteEvent(e.start + copies * period, e.duration, e.pitch, e.velocity, e.part)
                    for e in events)
        copies += 1
    return [NoteEvent(e.start - start, min(e.duration, start + window - e.start), e.pitch, e.velocity, e.part)
            for e in pool if start - 1e-9 <= e.start < start + window]


def events_to_score(events: tp.Sequence[NoteEvent], programs: tp.Sequence[int], bpm: float):
    """Build a music21 `Score` with one part per program, a tempo mark and the given notes."""
    from music21 import instrument, note, stream, tempo
    score = stream.Score()
    parts = []
    for program in programs:
        part = stream.Part()
        inst = instrument.Instrument()
        inst.midiProgram = int(program)
        part.insert(0, inst)
        parts.append(part)
    parts[0].insert(0, tempo.MetronomeMark(number=float(bpm)))
    for event in events:
        n = note.Note(event.pitch, quarterLength=event.duration)
        n.volume.velocity = event.velocity
        parts[event.part].coreInsert(event.start, n)
    for part in parts:
        part.coreElementsChanged()
        score.insert(0, part)
    return score


def key_name(score) -> str:
    """The key of a score as heard ('G major', 'B-flat minor'), from music21's key analysis."""
    analysed = score.analyze('key')
    tonic = analysed.tonic.name.replace('-', '-flat').replace('#', '-sharp')
    return f"{tonic} {analysed.mode}"


def choose_instruments(style: Style, num_parts: int, rng: random.Random) -> tp.List[str]:
    """Instrument names for `num_parts` parts, drawn by `rng` according to `style`."""
    r = rng.random()
    if style.fixed and r < style.p_fixed:
        return [style.fixed[min(i, len(style.fixed) - 1)] for i in range(num_parts)]
    if not style.lead or r < style.p_fixed + style.p_uniform:
        return [rng.choice(style.uniform)] * num_parts
    names = [rng.choice(style.lead)]
    shared = rng.choice(style.accomp)
    names += [shared if style.same_accomp else rng.choice(style.accomp) for _ in range(num_parts - 1)]
    return names


def _join(names: tp.Sequence[str]) -> str:
    unique = list(dict.fromkeys(names))
    return unique[0] if len(unique) == 1 else ', '.join(unique[:-1]) + ' and ' + unique[-1]


def music_caption(composer_short: str, genre: str, key: str, bpm: int, instruments: tp.Sequence[str],
                  synth: bool = False) -> str:
    """E.g. 'A Bach chorale in G major at 92 BPM played by organ and flute.'"""
    subject = f"{composer_short} {genre}"
    article = 'An' if subject[0].lower() in 'aeiou' else 'A'
    if synth:
        timbres = _join([SYNTH_TIMBRE_OF.get(n, 'organ') for n in instruments])
        player = f"a built-in additive synthesiser ({timbres} timbre{'s' if ' and ' in timbres else ''})"
    else:
        player = _join(instruments)
    return f"{article} {subject} in {key} at {bpm} BPM played by {player}."


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timbre:
    """A harmonic timbre: relative harmonic amplitudes and an ADSR envelope (seconds, sustain level).

    `decay_time` > 0 makes the note fade exponentially (plucked and struck sounds), faster for higher
    harmonics, instead of holding the sustain level.
    """
    harmonics: tp.Tuple[float, ...]
    attack: float
    decay: float
    sustain: float
    release: float
    decay_time: float = 0.


TIMBRES: tp.Dict[str, Timbre] = {
    'organ': Timbre((1., .5, .35, .25, .15, .1), 0.01, 0.05, 0.9, 0.05),
    'pluck': Timbre((1., .6, .4, .25, .15, .1, .05), 0.005, 0.0, 1.0, 0.08, decay_time=0.7),
    'bowed': Timbre(tuple(0.8 / k if k > 1 else 1. for k in range(1, 9)), 0.08, 0.1, 0.8, 0.15),
    'wind': Timbre((1., .25, .1, .05), 0.04, 0.05, 0.85, 0.08),
    'brass': Timbre((1., .8, .6, .45, .3, .2, .1), 0.03, 0.1, 0.8, 0.1),
}


def synthesize_notes(events: tp.Sequence[NoteEvent], timbres: tp.Sequence[str], bpm: float,
                     sample_rate: int, duration: float) -> np.ndarray:
    """Render notes with additive harmonic synthesis and ADSR envelopes.

    Args:
        events: notes with onsets/durations in quarter notes; `event.part` indexes `timbres`.
        timbres: one name of `TIMBRES` per part.
        bpm: quarter notes per minute.
        sample_rate: in Hz.
        duration: output length in seconds.
    Returns:
        float32 waveform `[T]` with `T = round(duration * sample_rate)` (not normalised).
    """
    unknown = sorted(set(timbres) - set(TIMBRES))
    if unknown:
        raise ValueError(f"Unknown timbre(s) {unknown}: choose from {sorted(TIMBRES)}.")
    total = int(round(duration * sample_rate))
    out = np.zeros(total, dtype=np.float64)
    seconds_per_quarter = 60. / bpm
    for event in events:
        timbre = TIMBRES[timbres[event.part]]
        begin = int(round(event.start * seconds_per_quarter * sample_rate))
        if begin >= total:
            continue
        hold = event.duration * seconds_per_quarter
        length = min(int((hold + timbre.release) * sample_rate), total - begin)
        if length <= 0:
            continue
        t = np.arange(length) / sample_rate
        freq = 440. * 2 ** ((event.pitch - 69) / 12)
        wave = np.zeros(length)
        for k, amp in enumerate(timbre.harmonics, start=1):
            if k * freq >= 0.45 * sample_rate:
                break
            partial = amp * np.sin(2 * np.pi * k * freq * t)
            if timbre.decay_time > 0:
                partial *= np.exp(-t * math.sqrt(k) / timbre.decay_time)
            wave += partial
        env = np.interp(t, [0., timbre.attack, timbre.attack + timbre.decay], [0., 1., timbre.sustain])
        env[t > timbre.attack + timbre.decay] = timbre.sustain
        release = np.clip((t - hold) / max(timbre.release, 1e-3), 0., 1.)
        env *= 1. - release
        out[begin:begin + length] += (event.velocity / 127.) * 0.25 * env * wave
    return out.astype(np.float32)


def render_fluidsynth(score, soundfont: PathLike, sample_rate: int, workdir: PathLike) -> np.ndarray:
    """Write `score` to MIDI with music21 and render it with FluidSynth. Returns mono float32 `[T]`."""
    import soundfile as sf
    from music21 import midi
    workdir = Path(workdir)
    mid, wav = workdir / 'excerpt.mid', workdir / 'excerpt.wav'
    midi_file = midi.translate.streamToMidiFile(score)
    midi_file.open(str(mid), 'wb')
    try:
        midi_file.write()
    finally:
        midi_file.close()
    cmd = ['fluidsynth', '-ni', '-q', '-g', '0.5', '-r', str(sample_rate), '-O', 'float', '-F', str(wav),
           str(soundfont), str(mid)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not wav.is_file():
        raise RuntimeError(f"fluidsynth failed ({' '.join(cmd)}): {proc.stderr.strip()[:300]}")
    data, rate = sf.read(str(wav), dtype='float32', always_2d=True)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz instead of {sample_rate} Hz.")
    return data.mean(axis=1)


def fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad a waveform `[T]` to exactly `length` samples."""
    if wav.shape[0] >= length:
        return wav[:length]
    return np.concatenate([wav, np.zeros(length - wav.shape[0], dtype=wav.dtype)])


def silence_reason(wav: np.ndarray, sample_rate: int) -> tp.Optional[str]:
    """Why a clip is too quiet to keep (None when it is fine): near-silent overall or mostly silent."""
    if not np.isfinite(wav).all():
        return "non-finite samples"
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    if rms < 1e-4:
        return f"near-silent render (RMS {rms:.1e})"
    hop = max(1, sample_rate // 20)
    frames = wav[:len(wav) // hop * hop].reshape(-1, hop)
    frame_rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    active = float(np.mean(frame_rms > frame_rms.max() * 10 ** (-40 / 20)))
    if active < 0.5:
        return f"mostly silent render ({100 * active:.0f}% of the clip sounds)"
    return None


def normalize_peak(wav: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale a waveform so that its peak absolute value is `peak`."""
    top = float(np.abs(wav).max())
    return (wav * (peak / top)).astype(np.float32) if top > 0 else wav


# --------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------


class SkipCandidate(Exception):
    """A score or sentence that cannot make a clip; the reason is the message."""


def _collection(name: str) -> Collection:
    for coll in COLLECTIONS:
        if coll.name == name:
            return coll
    raise KeyError(f"Unknown score collection {name!r}.")


def make_music_clip(candidate: ScoreCandidate, clip_duration: float, sample_rate: int, seed: int,
                    music_backend: str, soundfont: tp.Optional[PathLike] = None,
                    ) -> tp.Tuple[np.ndarray, tp.Dict[str, tp.Any]]:
    """Render one music clip from a corpus score.

    Returns:
        `(wav, info)`: mono float32 waveform `[T]` (T = clip_duration * sample_rate, peak `PEAK`) and
        the caption sidecar fields. Raises `SkipCandidate` when the score cannot make a clip.
    """
    coll = _collection(candidate.collection)
    style = STYLES[coll.style]
    rng = random.Random(f"{seed}:{candidate.source}")
    try:
        score = load_score(_corpus_root() / candidate.path, candidate.number)
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
        instrument = _join(names)
        backend = f"fluidsynth:{Path(soundfont).name}"
    else:
        timbres = [SYNTH_TIMBRE_OF.get(n, 'organ') for n in names]
        wav = synthesize_notes(excerpt, timbres, bpm, sample_rate, clip_duration)
        instrument = _join([f"synth {t}" for t in timbres])
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


# Words for the generated sentences.
_NAMES = ('Anna', 'Ben', 'Clara', 'David', 'Elena', 'Felix', 'Grace', 'Hugo', 'Iris', 'James', 'Laura',
          'Marco', 'Nina', 'Oscar', 'Paula', 'Sam')
_NOUNS = ('garden', 'letter', 'kitchen', 'window', 'river', 'bicycle', 'library', 'violin', 'market',
          'lantern', 'harbour', 'notebook', 'mountain', 'bakery', 'station', 'painting', 'teapot', 'bridge')
_ADJECTIVES = ('quiet', 'bright', 'old', 'tiny', 'busy', 'golden', 'narrow', 'warm', 'gentle', 'broken',
               'famous', 'empty', 'crowded', 'green')
_VERBS = ('painted', 'visited', 'found', 'cleaned', 'opened', 'described', 'repaired', 'carried',
          'photographed', 'admired')
_TIMES = ('this morning', 'yesterday', 'on Sunday', 'last winter', 'at noon', 'after dinner', 'tonight',
          'every spring')
_NUMBERS = ('two', 'three', 'four', 'five', 'seven', 'twelve', 'twenty')
_TEMPLATES = (
    "{Name} {verb} the {adj} {noun} {time}.",
    "The {adj} {noun} is next to the {noun2}.",
    "Good {daypart}, {Name}.",
    "Please bring the {noun} to the {noun2}.",
    "Is the {noun} still {adj}?",
    "{Name} and {Name2} {verb} {number} {noun}s {time}.",
    "We {verb} a {adj} {noun} near the {noun2}.",
    "Thank you, {Name}.",
    "The {noun} opens at {number} o'clock.",
    "{Name} thinks the {noun} looks {adj} {time}.",
    "Where did you leave the {adj} {noun}?",
    "It was a {adj} day at the {noun}.",
)
SPEECH_VOICES = ('en-us', 'en-gb', 'en-gb-scotland', 'en-gb-x-rp', 'en-gb-x-gbclan', 'en-gb-x-gbcwmd',
                 'en-029', 'en-us-nyc')
SPEECH_VARIANTS = ('m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'f1', 'f2', 'f3', 'f4', 'f5')


def make_sentence(rng: random.Random) -> str:
    """One English sentence drawn from built-in templates and word lists."""
    template = rng.choice(_TEMPLATES)
    name, name2 = rng.sample(_NAMES, 2)
    noun, noun2 = rng.sample(_NOUNS, 2)
    return template.format(Name=name, Name2=name2, noun=noun, noun2=noun2, adj=rng.choice(_ADJECTIVES),
                           verb=rng.choice(_VERBS), time=rng.choice(_TIMES), number=rng.choice(_NUMBERS),
                           daypart=rng.choice(('morning', 'afternoon', 'evening')))


def speak(text: str, voice: str, wpm: int, pitch: int, workdir: PathLike) -> tp.Tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng. Returns `(wav [T] float32 trimmed of silent ends, sample_rate)`."""
    import soundfile as sf
    out = Path(workdir) / 'speech.wav'
    cmd = ['espeak-ng', '-v', voice, '-s', str(wpm), '-p', str(pitch), '-w', str(out), text]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"espeak-ng failed ({' '.join(cmd)}): {proc.stderr.strip()[:300]}")
    data, rate = sf.read(str(out), dtype='float32', always_2d=True)
    wav = data.mean(axis=1)
    loud = np.flatnonzero(np.abs(wav) > 1e-3)
    return (wav[loud[0]:loud[-1] + 1] if loud.size else wav[:0]), int(rate)


def make_speech_clip(index: int, clip_duration: float, sample_rate: int, seed: int,
                     ) -> tp.Tuple[np.ndarray, tp.Dict[str, tp.Any]]:
    """Speak generated sentences to fill about `clip_duration` seconds.

    Sentences are spoken one by one with 0.3 s pauses and kept while they fit in the clip; the rest is
    silence. When no sentence fits at all (very short clips) the shortest one is cut at the clip end.
    Returns `(wav [T] float32 at sample_rate, peak PEAK; caption sidecar fields)`.
    """
    import julius
    import torch
    rng = random.Random(f"{seed}:speech:{index}")
    voice = f"{rng.choice(SPEECH_VOICES)}+{rng.choice(SPEECH_VARIANTS)}"
    wpm = rng.randrange(130, 200, 10)
    pitch = rng.randint(30, 70)
    pieces: tp.List[np.ndarray] = []
    texts: tp.List[str] = []
    rate = 22050
    used = 0.
    misses = 0
    shortest: tp.Optional[tp.Tuple[np.ndarray, str]] = None
    with tempfile.TemporaryDirectory(prefix='example_dataset_') as tmp:
        while misses < 4:
            text = make_sentence(rng)
            wav, rate = speak(text, voice, wpm, pitch, tmp)
            if wav.size == 0:
                misses += 1
                continue
            need = wav.size / rate + (0.3 if pieces else 0.)
            if used + need <= clip_duration:
                if pieces:
                    pieces.append(np.zeros(int(0.3 * rate), dtype=np.float32))
                pieces.append(wav)
                texts.append(text)
                used += need
                misses = 0
            else:
                misses += 1
                if shortest is None or wav.size < shortest[0].size:
                    shortest = (wav, text)
    cropped = not pieces
    if cropped:
        if shortest is None:
            raise SkipCandidate(f"espeak-ng produced no audio for voice {voice}")
        pieces, texts = [shortest[0]], [shortest[1]]
    speech = torch.from_numpy(np.concatenate(pieces).astype(np.float32))
    if rate != sample_rate:
        speech = julius.resample_frac(speech, rate, sample_rate)
    wav = fit_length(speech.numpy().astype(np.float32), int(round(clip_duration * sample_rate)))
    text = ' '.join(texts)
    info = {
        'description': f"Speech (voice {voice}, {wpm} wpm): {text}",
        'composer': None, 'instrument': 'voice', 'key': None, 'tempo': None, 'genre': 'speech',
        'source': f"espeak-ng:{voice}", 'text': text, 'voice': voice, 'speed_wpm': wpm, 'pitch': pitch,
        'cropped': cropped, 'backend': 'espeak-ng',
    }
    return normalize_peak(wav), info


def _init_worker() -> None:
    """Set up a rendering process: one thread each, no music21 notation warnings."""
    warnings.filterwarnings('ignore', module=r'music21(\.|$)')
    import torch
    torch.set_num_threads(1)


def _run_job(job: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Make one clip (trying the job's candidates in order), write its audio and sidecar."""
    import torch
    from .audio import audio_write
    from .info_dataset import write_sidecar
    skipped: tp.List[tp.Tuple[str, str]] = []
    result: tp.Optional[tp.Tuple[np.ndarray, tp.Dict[str, tp.Any]]] = None
    if job['kind'] == 'speech':
        try:
            result = make_speech_clip(job['index'], job['clip_duration'], job['sample_rate'], job['seed'])
        except SkipCandidate as exc:
            skipped.append((f"speech:{job['index']}", str(exc)))
    else:
        for fields in job['candidates']:
            candidate = ScoreCandidate(*fields)
            try:
                result = make_music_clip(candidate, job['clip_duration'], job['sample_rate'], job['seed'],
                                         job['music_backend'], job['soundfont'])
                break
            except SkipCandidate as exc:
                skipped.append((candidate.source, str(exc)))
    out: tp.Dict[str, tp.Any] = {'index': job['index'], 'kind': job['kind'], 'skipped': skipped, 'ok': False}
    if result is None:
        return out
    wav, info = result
    path = audio_write(job['path'], torch.from_numpy(wav)[None], job['sample_rate'])
    write_sidecar(path, **info)
    out.update(ok=True, path=str(path), frames=int(wav.shape[0]), collection=info.get('collection', 'speech'))
    return out


# --------------------------------------------------------------------------------------------------
# Planning and building
# --------------------------------------------------------------------------------------------------


def split_counts(num_clips: int, splits: tp.Sequence[tp.Tuple[str, float]]) -> tp.Dict[str, int]:
    """Clips per split: proportional to the fractions, at least one per split when there are enough clips."""
    total = sum(f for _, f in splits)
    if total <= 0 or any(f < 0 for _, f in splits):
        raise ValueError(f"Split fractions must be >= 0 with a positive sum, got {list(splits)}.")
    wanted = {name: num_clips * f / total for name, f in splits}
    floor = 1 if num_clips >= len(splits) else 0
    counts = {name: max(floor if w > 0 else 0, int(w)) for name, w in wanted.items()}
    while sum(counts.values()) > num_clips:
        name = max((n for n in counts if counts[n] > floor), key=lambda n: (counts[n] - wanted[n], counts[n]))
        counts[name] -= 1
    while sum(counts.values()) < num_clips:
        name = max(counts, key=lambda n: wanted[n] - counts[n])
        counts[name] += 1
    return counts


def _say(verbose: bool) -> tp.Callable[[str], None]:
    return (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)


def _clean(out_dir: Path, split_names: tp.Iterable[str]) -> None:
    """Remove the files of a previous build (clips, sidecars, manifests, build info)."""
    (out_dir / 'build_info.json').unlink(missing_ok=True)
    for name in split_names:
        folder = out_dir / name
        if folder.is_dir():
            for pattern in ('clip_*.wav', 'clip_*.json', 'data.jsonl'):
                for path in folder.glob(pattern):
                    path.unlink()


def _run_jobs(jobs: tp.List[tp.Dict[str, tp.Any]], workers: int, say: tp.Callable[[str], None],
              done_before: int, total: int, start_time: float) -> tp.List[tp.Dict[str, tp.Any]]:
    results = []
    every = max(1, total // 10)

    def report(res):
        results.append(res)
        done = done_before + sum(r['ok'] for r in results)
        if res['ok'] and (done % every == 0 or done == total):
            say(f"[example data] {done}/{total} clips ({time.time() - start_time:.1f}s)")

    if workers <= 1 or len(jobs) <= 1:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', module=r'music21(\.|$)')
            for job in jobs:
                report(_run_job(job))
    else:
        context = multiprocessing.get_context('spawn')
        with context.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
            for res in pool.imap_unordered(_run_job, jobs):
                report(res)
    return results


def build_example_dataset(out_dir: PathLike, num_clips: int = 150, clip_duration: float = 8.0,
                          sample_rate: int = 32000, seed: int = 0, speech_fraction: float = 0.2,
                          soundfont: tp.Optional[PathLike] = None,
                          splits: tp.Sequence[tp.Tuple[str, float]] = DEFAULT_SPLITS, workers: int = 2,
                          force: bool = False, backend: str = 'auto', verbose: bool = True) -> tp.Dict[str, tp.Any]:
    """Build the example dataset of music and speech clips with captions.

    Writes `out_dir/<split>/clip_NNNN.{wav,json}` (mono wav at `sample_rate`, caption sidecar),
    `out_dir/<split>/data.jsonl` manifests and `out_dir/build_info.json`.

    Args:
        out_dir: output folder.
        num_clips: total number of clips over all splits.
        clip_duration: seconds per clip.
        sample_rate: in Hz.
        seed: the dataset is a deterministic function of the seed and the other parameters.
        speech_fraction: fraction of speech clips (0 when espeak-ng is missing).
        soundfont: General MIDI SoundFont for FluidSynth (see `find_soundfont`).
        splits: `(name, fraction)` pairs.
        workers: processes rendering clips in parallel (1 renders in this process).
        force: rebuild even when `out_dir` already holds a build with the same parameters.
        backend: music renderer, 'auto' (FluidSynth when available, else the built-in synthesiser),
            'fluidsynth' (fail when missing) or 'synth' (always the built-in synthesiser).
        verbose: print progress lines and the summary.
    Returns:
        A summary: clips per split, per source and per collection, seconds taken, backends used,
        skipped scores, and `reused=True` when an existing build was kept.
    """
    from .audio_dataset import AudioMeta, save_audio_meta
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}.")
    if clip_duration <= 0 or sample_rate <= 0:
        raise ValueError(f"clip_duration and sample_rate must be > 0, got {clip_duration} and {sample_rate}.")
    if not 0 <= speech_fraction <= 1:
        raise ValueError(f"speech_fraction must be in [0, 1], got {speech_fraction}.")
    splits = [(str(name), float(fraction)) for name, fraction in splits]
    if len({name for name, _ in splits}) != len(splits):
        raise ValueError(f"Split names must be unique, got {[n for n, _ in splits]}.")
    say = _say(verbose)
    start_time = time.time()
    out_dir = Path(out_dir)
    music_backend, font, has_speech = _resolve_backends(backend, soundfont, speech_fraction > 0, say)
    params = {
        'version': BUILD_VERSION, 'num_clips': num_clips, 'clip_duration': float(clip_duration),
        'sample_rate': sample_rate, 'seed': seed, 'speech_fraction': float(speech_fraction),
        'splits': [list(s) for s in splits], 'music_backend': music_backend,
        'soundfont': None if font is None else {'name': font.name, 'bytes': font.stat().st_size},
        'speech_backend': 'espeak-ng' if has_speech else None,
    }
    info_path = out_dir / 'build_info.json'
    previous = json.loads(info_path.read_text()) if info_path.is_file() else None
    if previous is not None and not force and previous.get('params') == params and all(
            (out_dir / name / 'data.jsonl').is_file() for name, _ in splits):
        summary = dict(previous['summary'], reused=True)
        say(f"[example data] {out_dir} already holds this build: kept it (pass force=True / --force "
            f"to rebuild).\n{format_summary(summary)}")
        return summary
    old_splits = [s[0] for s in previous['params']['splits']] if previous else []
    _clean(out_dir, set(old_splits) | {name for name, _ in splits})

    # Plan: which clips are speech, which split each clip goes to, which scores the music clips try.
    plan_rng = random.Random(f"example-dataset-plan-{seed}")
    num_speech = int(round(num_clips * speech_fraction)) if has_speech else 0
    kinds = ['speech'] * num_speech + ['music'] * (num_clips - num_speech)
    plan_rng.shuffle(kinds)
    split_of = [name for name, count in split_counts(num_clips, splits).items() for _ in range(count)]
    plan_rng.shuffle(split_of)
    drawer = CandidateDrawer(corpus_catalogue(), seed) if num_speech < num_clips else None
    say(f"[example data] building {num_clips} clips of {clip_duration:g}s at {sample_rate} Hz in {out_dir} "
        f"({num_clips - num_speech} music via {music_backend}, {num_speech} speech via espeak-ng, "
        f"{workers} worker(s))")
    base = {'clip_duration': float(clip_duration), 'sample_rate': sample_rate, 'seed': seed,
            'music_backend': music_backend, 'soundfont': None if font is None else str(font)}
    pending = list(range(num_clips))
    results: tp.Dict[int, tp.Dict[str, tp.Any]] = {}
    skipped: tp.List[tp.Tuple[str, str]] = []
    for round_idx in range(MAX_ROUNDS):
        jobs = []
        for index in pending:
            job = dict(base, index=index, kind=kinds[index],
                       path=str(out_dir / split_of[index] / f"clip_{index + 1:04d}.wav"))
            if kinds[index] == 'music':
                assert drawer is not None
                # One score per clip first; clips whose score failed get two fresh ones per round.
                draws = 1 if round_idx == 0 else 2
                job['candidates'] = [(c.collection, c.path, c.number) for c in
                                     (drawer.draw() for _ in range(draws))]
            jobs.append(job)
        for res in _run_jobs(jobs, workers, say, len(results), num_clips, start_time):
            skipped.extend(res['skipped'])
            if res['ok']:
                results[res['index']] = res
        pending = [i for i in pending if i not in results]
        if not pending:
            break
        tried = len(skipped) + len(results)
        if len(skipped) > max(20, tried // 2):
            reasons = '; '.join(f"{src}: {why}" for src, why in skipped[:8])
            raise RuntimeError(f"Too many clips failed ({len(skipped)} of {tried} attempts), e.g. {reasons}")
    if pending:
        raise RuntimeError(f"Could not make clips {pending} after {MAX_ROUNDS} rounds; skipped: {skipped[:8]}")

    # Manifests: paths relative to each split folder.
    for name, _ in splits:
        metas = []
        for index in sorted(i for i in results if split_of[i] == name):
            res = results[index]
            audio = Path(res['path'])
            metas.append(AudioMeta(path=audio.name, duration=res['frames'] / sample_rate,
                                   sample_rate=sample_rate, channels=1,
                                   info_path=audio.with_suffix('.json').name))
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        save_audio_meta(out_dir / name / 'data.jsonl', metas)
    collections: tp.Dict[str, int] = {}
    for res in results.values():
        collections[res['collection']] = collections.get(res['collection'], 0) + 1
    summary = {
        'out_dir': str(out_dir), 'num_clips': num_clips, 'clip_duration': float(clip_duration),
        'sample_rate': sample_rate,
        'splits': {name: sum(1 for i in results if split_of[i] == name) for name, _ in splits},
        'sources': {'music': num_clips - num_speech, 'speech': num_speech},
        'collections': dict(sorted(collections.items())),
        'backends': {'music': music_backend if font is None else f"fluidsynth ({font.name})",
                     'speech': 'espeak-ng' if has_speech else None},
        'skipped': len(skipped), 'skip_examples': [f"{src}: {why}" for src, why in skipped[:5]],
        'seconds': round(time.time() - start_time, 1), 'reused': False,
    }
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps({'params': params, 'summary': summary}, indent=1) + '\n')
    say(format_summary(summary))
    return summary


def format_summary(summary: tp.Dict[str, tp.Any]) -> str:
    """One readable paragraph describing a build summary."""
    splits = ', '.join(f"{k} {v}" for k, v in summary['splits'].items())
    sources = ', '.join(f"{k} {v}" for k, v in summary['sources'].items())
    colls = ', '.join(f"{k} {v}" for k, v in summary['collections'].items())
    backends = ', '.join(f"{k}: {v}" for k, v in summary['backends'].items() if v)
    lines = [f"[example data] {summary['num_clips']} clips of {summary['clip_duration']:g}s at "
             f"{summary['sample_rate']} Hz in {summary['out_dir']} ({summary['seconds']}s"
             f"{', reused' if summary.get('reused') else ''})",
             f"  splits: {splits}", f"  sources: {sources}", f"  collections: {colls}",
             f"  backends: {backends}", f"  skipped scores: {summary['skipped']}"]
    lines += [f"    {example}" for example in summary.get('skip_examples', [])]
    return '\n'.join(lines)
