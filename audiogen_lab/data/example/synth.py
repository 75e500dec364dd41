"""The built-in additive synthesiser: harmonic timbres with ADSR envelopes, used when FluidSynth is missing."""
from dataclasses import dataclass
import math
import typing as tp

import numpy as np

from .scores import NoteEvent

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
