import random
from collections import Counter

import pytest

from audiogen_lab.data.caption_augment import CaptionAugment, compose_caption

MUSIC = {'genre': 'chorale', 'composer': 'J. S. Bach', 'instrument': ['organ', 'flute'], 'key': 'G major',
         'tempo': 92}
SPEECH = {'genre': 'speech', 'instrument': 'voice', 'composer': None, 'key': None, 'tempo': None}
VALUES = {'genre': 'chorale', 'composer': 'J. S. Bach', 'instrument': 'organ and flute', 'key': 'G major',
          'tempo': '92 BPM'}


def test_compose_caption_reads_as_a_sentence():
    assert compose_caption(MUSIC) == 'chorale by J. S. Bach, played by organ and flute, in G major, at 92 BPM'
    assert compose_caption(SPEECH) == 'speech, played by voice'
    assert compose_caption({'instrument': ['violin', 'viola', 'cello'], 'tempo': 120.0}) == (
        'played by violin, viola and cello, at 120 BPM')


def test_keys_choose_and_order_the_attributes_and_unknown_keys_read_name_value():
    attributes = dict(MUSIC, mood='calm')
    assert compose_caption(attributes, keys=('tempo', 'mood', 'genre')) == 'at 92 BPM, mood: calm, chorale'
    assert compose_caption(attributes, keys=('genre',)) == 'chorale'


def test_missing_or_none_attributes_never_appear():
    for seed in range(20):
        text = compose_caption(SPEECH, drop_prob=0.5, rng=random.Random(seed))
        assert 'None' not in text and 'BPM' not in text and 'by None' not in text
        assert text in ('speech, played by voice', 'speech', 'played by voice')
    assert compose_caption({}) == ''
    assert compose_caption({'composer': None, 'genre': '', 'instrument': []}, drop_prob=1.0) == ''


def test_drop_prob_zero_keeps_every_present_value():
    for seed in range(5):
        text = compose_caption(MUSIC, drop_prob=0.0, rng=random.Random(seed))
        assert all(value in text for value in VALUES.values())


def test_drop_prob_one_keeps_exactly_one_attribute_each_chosen_sometimes():
    kept = Counter()
    for seed in range(200):
        text = compose_caption(MUSIC, drop_prob=1.0, rng=random.Random(seed))
        present = [key for key, value in VALUES.items() if value in text]
        assert len(present) == 1 and ', ' not in text and ' by J. S.' not in text
        kept[present[0]] += 1
    assert set(kept) == set(VALUES)


def test_partial_drop_is_deterministic_for_a_seeded_rng_and_varies_across_seeds():
    texts = [compose_caption(MUSIC, drop_prob=0.5, rng=random.Random(seed)) for seed in range(30)]
    assert texts == [compose_caption(MUSIC, drop_prob=0.5, rng=random.Random(seed)) for seed in range(30)]
    assert len(set(texts)) > 5
    assert all(text for text in texts)


def test_choose_picks_among_all_captions_and_is_deterministic():
    captions = ['a slow organ chorale', 'Bach on a church organ', 'baroque hymn with flute']
    augment = CaptionAugment()
    counts = Counter(augment.choose(captions, MUSIC, random.Random(seed)) for seed in range(300))
    assert set(counts) == set(captions)
    assert min(counts.values()) > 60
    assert augment.choose(captions, MUSIC, random.Random(4)) == augment.choose(captions, MUSIC, random.Random(4))


def test_attribute_prob_one_always_composes_and_half_mixes():
    captions = ['a slow organ chorale']
    always = CaptionAugment(attribute_prob=1.0)
    composed = compose_caption(MUSIC)
    assert all(always.choose(captions, MUSIC, random.Random(seed)) == composed for seed in range(50))
    half = CaptionAugment(attribute_prob=0.5, drop_prob=0.3)
    texts = [half.choose(captions, MUSIC, random.Random(seed)) for seed in range(200)]
    from_captions = sum(text == captions[0] for text in texts)
    assert 60 < from_captions < 140
    keys = list(MUSIC)
    subsets = {compose_caption({key: MUSIC[key] for i, key in enumerate(keys) if mask >> i & 1})
               for mask in range(1, 2 ** len(keys))}
    assert all(text == captions[0] or text in subsets for text in texts)
    assert len(set(texts)) > 5


def test_choose_falls_back_on_captions_or_attributes():
    augment = CaptionAugment(attribute_prob=1.0)
    assert augment.choose(['only caption'], {'composer': None}, random.Random(0)) == 'only caption'
    assert CaptionAugment().choose([], SPEECH, random.Random(0)) == 'speech, played by voice'
    with pytest.raises(ValueError, match="description"):
        augment.choose([], {'key': None}, random.Random(0))
    with pytest.raises(ValueError, match="attribute_prob"):
        CaptionAugment(attribute_prob=2.0)
    with pytest.raises(ValueError, match="drop_prob"):
        compose_caption(MUSIC, drop_prob=-0.1)
