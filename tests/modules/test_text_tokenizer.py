"""Text tokenizers: exact ids, padding and truncation, deterministic vocabularies, state round trips."""
from __future__ import annotations

import io

import pytest
import torch

from audiogen_lab.modules.text_tokenizer import (ByteTokenizer, WordTokenizer, get_tokenizer,
                                                 tokenizer_from_state)

CAPTIONS = ["A calm piano melody.", "Upbeat rock, drums and piano!", "calm ambient pads at 80 bpm", "Piano solo"]


def _reload(state):
    buffer = io.BytesIO()
    torch.save({"tokenizer": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["tokenizer"]


def test_byte_tokenizer_exact_ids_non_ascii_padding_and_mask():
    tokenizer = ByteTokenizer()
    assert tokenizer.vocab_size == 257
    tokens, mask = tokenizer.encode(["hé", "a"], max_length=16)
    # "é" is two UTF-8 bytes (0xC3 0xA9); ids are 1 + byte.
    assert tokens.tolist() == [[1 + 104, 1 + 0xC3, 1 + 0xA9], [1 + 97, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    chinese, _ = tokenizer.encode(["音乐"], max_length=16)
    assert bytes(i - 1 for i in chinese[0].tolist()).decode("utf-8") == "音乐"
    assert int(chinese.max()) < tokenizer.vocab_size


def test_truncation_keeps_first_tokens_and_length_is_longest_text():
    tokenizer = ByteTokenizer()
    tokens, mask = tokenizer.encode(["abcdef", "xy"], max_length=4)
    assert tokens.tolist() == [[98, 99, 100, 101], [121, 122, 0, 0]]
    assert mask.sum(dim=1).tolist() == [4, 2]
    tokens, mask = tokenizer.encode(["ab", "x"], max_length=100)
    assert tokens.shape == (2, 2)
    tokens, mask = tokenizer.encode(["", ""], max_length=8)
    assert tokens.shape == (2, 0) and mask.shape == (2, 0)
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode(["a"], max_length=0)


def test_word_tokenizer_deterministic_order_and_splitting():
    tokenizer = WordTokenizer.fit(CAPTIONS)
    # piano x3, calm x2, then every count-1 token alphabetically ("!" < "," < "." < "80" < "a" < ...).
    assert tokenizer.vocab[:9] == ["<pad>", "<unk>", "piano", "calm", "!", ",", ".", "80", "a"]
    assert WordTokenizer.fit(list(reversed(CAPTIONS))).vocab == tokenizer.vocab
    assert WordTokenizer.split("Don't stop: 120 BPM, mp3") == ["don't", "stop", ":", "120", "bpm", ",", "mp3"]
    tokens, mask = tokenizer.encode(["Calm PIANO."], max_length=8)
    assert tokens.tolist() == [[3, 2, 6]] and mask.all()


def test_word_tokenizer_unknown_words_max_size_and_min_count():
    tokenizer = WordTokenizer.fit(CAPTIONS)
    tokens, _ = tokenizer.encode(["piano violin calm"], max_length=8)
    assert tokens.tolist() == [[2, 1, 3]]
    small = WordTokenizer.fit(CAPTIONS, max_size=4)
    assert small.vocab == ["<pad>", "<unk>", "piano", "calm"] and small.vocab_size == 4
    frequent = WordTokenizer.fit(CAPTIONS, min_count=2)
    assert frequent.vocab == ["<pad>", "<unk>", "piano", "calm"]
    tokens, mask = frequent.encode(["calm rock piano", "drums"], max_length=2)
    assert tokens.tolist() == [[3, 1], [1, 0]]
    assert mask.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("name", ["bytes", "words"])
def test_state_round_trip_through_weights_only_checkpoint(name):
    tokenizer = get_tokenizer(name, texts=CAPTIONS)
    state = _reload(tokenizer.state())
    assert state == tokenizer.state()
    rebuilt = tokenizer_from_state(state)
    assert type(rebuilt) is type(tokenizer) and rebuilt.vocab_size == tokenizer.vocab_size
    texts = CAPTIONS + ["unseen words: théâtre 42"]
    for expected, got in zip(tokenizer.encode(texts, 12), rebuilt.encode(texts, 12)):
        assert torch.equal(expected, got)


def test_factory_errors_name_the_config_key():
    with pytest.raises(ValueError, match="mulan.tokenizer"):
        get_tokenizer("words")
    with pytest.raises(ValueError, match="mulan.tokenizer"):
        get_tokenizer("sentencepiece", texts=CAPTIONS)
    with pytest.raises(ValueError, match="kind"):
        tokenizer_from_state({"kind": "bpe"})
    with pytest.raises(ValueError, match="words"):
        WordTokenizer.from_state(ByteTokenizer().state())
    assert get_tokenizer("words", texts=CAPTIONS, max_size=3).vocab == ["<pad>", "<unk>", "piano"]
