"""Caption augmentation: captions composed from sidecar attributes, and the choice of a training caption.

A clip's sidecar (see `info_dataset`) holds one or more free-text captions and attributes such as
`{"genre": "chorale", "composer": "J. S. Bach", "instrument": ["organ", "flute"], "key": "G major",
"tempo": 92}`. `compose_caption` turns the attributes into a phrase,
`"chorale by J. S. Bach, played by organ and flute, in G major, at 92 BPM"`, optionally dropping some of
them at random; `CaptionAugment` picks, per training item, either such a composed caption or one of the
clip's captions, so that a text encoder sees both free text and attribute lists.
"""
from __future__ import annotations

from dataclasses import dataclass
import random
import typing as tp

DEFAULT_KEYS: tp.Tuple[str, ...] = ('genre', 'composer', 'instrument', 'key', 'tempo')

# Phrase of each known attribute, `{}` standing for its rendered value. Other keys read 'name: value'.
PHRASES: tp.Dict[str, str] = {
    'genre': '{}',
    'composer': 'by {}',
    'instrument': 'played by {}',
    'key': 'in {}',
    'tempo': 'at {} BPM',
}
# Consecutive attributes joined by a space instead of ', ' ('chorale by J. S. Bach').
JOINED: tp.FrozenSet[tp.Tuple[str, str]] = frozenset({('genre', 'composer')})


def _is_present(value: tp.Any) -> bool:
    """False for None, empty strings and empty lists: such attributes are skipped."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return any(_is_present(item) for item in value)
    return True


def _render(value: tp.Any) -> str:
    """Text of an attribute value: numbers without a needless '.0', lists as 'a, b and c'."""
    if isinstance(value, (list, tuple)):
        parts = [_render(item) for item in value if _is_present(item)]
        return parts[0] if len(parts) == 1 else ', '.join(parts[:-1]) + ' and ' + parts[-1]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _phrase(key: str, value: tp.Any) -> str:
    template = PHRASES.get(key)
    return f'{key}: {_render(value)}' if template is None else template.format(_render(value))


def present_keys(attributes: tp.Mapping[str, tp.Any], keys: tp.Sequence[str] = DEFAULT_KEYS) -> tp.List[str]:
    """The keys of `keys`, in order, whose attribute is present (not missing, None or empty)."""
    return [key for key in keys if _is_present(attributes.get(key))]


def compose_caption(attributes: tp.Mapping[str, tp.Any], keys: tp.Sequence[str] = DEFAULT_KEYS,
                    drop_prob: float = 0.0, rng: tp.Optional[random.Random] = None) -> str:
    """A caption made of the attributes named by `keys`, in that order, joined by ', ' (see `JOINED`).

    Known keys get a phrase (`PHRASES`: 'by J. S. Bach', 'in G major', 'at 92 BPM'...), others read
    'name: value'; missing, None and empty attributes are skipped. Each present attribute is dropped with
    probability `drop_prob`; if all would be, one of them, chosen uniformly, is kept.

    Args:
        attributes: the sidecar attributes.
        keys: the attributes to use, in caption order.
        drop_prob: probability of dropping each attribute, in [0, 1].
        rng: random generator of the drops; Python's global one when None.
    Returns:
        The caption; '' only when none of `keys` is present.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"compose_caption: drop_prob must lie in [0, 1], got {drop_prob}.")
    draw: tp.Any = rng if rng is not None else random
    present = present_keys(attributes, keys)
    kept = present
    if drop_prob > 0 and present:
        kept = [key for key in present if draw.random() >= drop_prob]
        if not kept:
            kept = [draw.choice(present)]
    text = ''
    for previous, key in zip([None] + kept[:-1], kept):
        separator = '' if previous is None else ' ' if (previous, key) in JOINED else ', '
        text += separator + _phrase(key, attributes[key])
    return text


@dataclass
class CaptionAugment:
    """Choice of a training caption among a clip's captions and a caption composed from its attributes.

    Args:
        attribute_prob: probability of composing the caption from the attributes (when any is present).
        drop_prob: probability of dropping each attribute from a composed caption (see `compose_caption`).
        keys: attributes used in composed captions, in order.
    """
    attribute_prob: float = 0.0
    drop_prob: float = 0.0
    keys: tp.Sequence[str] = DEFAULT_KEYS

    def __post_init__(self) -> None:
        for name in ('attribute_prob', 'drop_prob'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CaptionAugment: {name} must lie in [0, 1], got {value}.")
        self.keys = tuple(self.keys)

    def choose(self, captions: tp.Sequence[str], attributes: tp.Mapping[str, tp.Any], rng: random.Random) -> str:
        """A caption for one training item: composed from `attributes` with probability `attribute_prob`
        (always when there is no caption), else one of `captions` chosen uniformly."""
        composable = bool(present_keys(attributes, self.keys))
        if composable and (not captions or rng.random() < self.attribute_prob):
            return compose_caption(attributes, self.keys, drop_prob=self.drop_prob, rng=rng)
        if not captions:
            raise ValueError(f"CaptionAugment.choose: no caption and none of the attributes {list(self.keys)} "
                             f"is present in {dict(attributes)}; give the clip a 'description' or attributes.")
        return rng.choice(list(captions))
