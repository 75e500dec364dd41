"""Choice of the renderers: FluidSynth or the built-in synthesiser for music, espeak-ng for speech."""
from pathlib import Path
import shutil
import typing as tp

from .fluidsynth import SOUNDFONT_ENV, find_soundfont

PathLike = tp.Union[str, Path]

BACKENDS = ('auto', 'fluidsynth', 'synth')
INSTALL_HINT = "apt-get install fluidsynth timgm6mb-soundfont espeak-ng"


def resolve_backends(backend: str, soundfont: tp.Optional[PathLike], speech: bool,
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
