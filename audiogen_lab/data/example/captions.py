"""Caption text of the music clips, derived from score metadata and orchestration."""
import typing as tp

from .synth import SYNTH_TIMBRE_OF


def join_names(names: tp.Sequence[str]) -> str:
    """Names without repeats, in order, joined as in a sentence ('organ, flute and cello')."""
    unique = list(dict.fromkeys(names))
    return unique[0] if len(unique) == 1 else ', '.join(unique[:-1]) + ' and ' + unique[-1]


def music_caption(composer_short: str, genre: str, key: str, bpm: int, instruments: tp.Sequence[str],
                  synth: bool = False) -> str:
    """E.g. 'A Bach chorale in G major at 92 BPM played by organ and flute.'"""
    subject = f"{composer_short} {genre}"
    article = 'An' if subject[0].lower() in 'aeiou' else 'A'
    if synth:
        timbres = join_names([SYNTH_TIMBRE_OF.get(n, 'organ') for n in instruments])
        player = f"a built-in additive synthesiser ({timbres} timbre{'s' if ' and ' in timbres else ''})"
    else:
        player = join_names(instruments)
    return f"{article} {subject} in {key} at {bpm} BPM played by {player}."
