"""Instruments and styles: which General MIDI instruments play the parts of a score, and how fast."""
from dataclasses import dataclass
import random
import typing as tp

# Caption name -> General MIDI program (0-based).
GM_PROGRAMS: tp.Dict[str, int] = {
    'piano': 0, 'harpsichord': 6, 'celesta': 8, 'vibraphone': 11, 'marimba': 12, 'organ': 19,
    'reed organ': 20, 'accordion': 21, 'nylon guitar': 24, 'steel guitar': 25, 'violin': 40,
    'viola': 41, 'cello': 42, 'contrabass': 43, 'harp': 46, 'string ensemble': 48, 'choir': 52,
    'voices': 53, 'trumpet': 56, 'trombone': 57, 'french horn': 60, 'brass section': 61, 'oboe': 68,
    'bassoon': 70, 'clarinet': 71, 'piccolo': 72, 'flute': 73, 'recorder': 74, 'pan flute': 75,
    'banjo': 105, 'fiddle': 110,
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
