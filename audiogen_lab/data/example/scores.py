"""Scores to notes and back: parse with music21, read notes, cut excerpts, rebuild scores, analyse keys.

Onsets and durations are in quarter notes throughout; tempo turns them into seconds only at rendering.
"""
from dataclasses import dataclass
from pathlib import Path
import random
import typing as tp
import warnings

PathLike = tp.Union[str, Path]


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
