"""FluidSynth rendering: find a General MIDI SoundFont, write a score to MIDI and render it to audio."""
from pathlib import Path
import os
import subprocess
import typing as tp

import numpy as np

PathLike = tp.Union[str, Path]

SOUNDFONT_ENV = 'AUDIOGEN_LAB_SOUNDFONT'
SOUNDFONT_CANDIDATES = ('/usr/share/sounds/sf2/TimGM6mb.sf2', '/usr/share/sounds/sf2/FluidR3_GM.sf2',
                        '/usr/share/sounds/sf2/default-GM.sf2')


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
