"""Speech clips: sentences generated from templates, spoken by espeak-ng with seeded voices and speeds."""
from pathlib import Path
import random
import subprocess
import tempfile
import typing as tp

import numpy as np

from .clips import SkipCandidate, fit_length, normalize_peak

PathLike = tp.Union[str, Path]


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
