"""Tokenizers for the text tower: captions -> padded ids `[B, L]` and a mask `[B, L]`.

Two tokenizers, both with padding id 0:
- :class:`ByteTokenizer`: the UTF-8 bytes of the text, byte `b` -> id `1 + b` (vocab_size 257). Needs no
  training and knows every text, in any script.
- :class:`WordTokenizer`: a word vocabulary fitted on the training captions. Texts are lowercased and
  split into words (runs of letters, digits and underscores, with inner apostrophes: "don't", "80s",
  "120") and single punctuation marks. Ids: pad 0, unk 1, then the words by decreasing count, ties
  broken alphabetically, so that fitting the same captions always gives the same ids.

A tokenizer's `state()` holds only str, int, list and dict values, so that it can be stored in a
checkpoint read with ``torch.load(weights_only=True)``; `tokenizer_from_state` rebuilds it.
"""
from __future__ import annotations

import abc
import re
import typing as tp
from collections import Counter

import torch

PAD_ID = 0


class TextTokenizer(abc.ABC):
    """Maps texts to padded token ids. Subclasses define `vocab_size`, `ids`, `state` and `from_state`."""

    kind: tp.ClassVar[str]

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, padding included: every id lies in ``[0, vocab_size)``."""

    @abc.abstractmethod
    def ids(self, text: str) -> tp.List[int]:
        """Token ids of one text, without padding or truncation."""

    @abc.abstractmethod
    def state(self) -> tp.Dict[str, tp.Any]:
        """Plain JSON-able description (str, int, list, dict) with a 'kind' entry, enough to rebuild it."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: tp.Dict[str, tp.Any]) -> "TextTokenizer":
        """Rebuild a tokenizer from `state()`."""

    def encode(self, texts: tp.Sequence[str], max_length: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Token ids `[B, L]` (long, padded with 0) and mask `[B, L]` (bool, True on real tokens).

        `L = min(max_length, longest text)`; longer texts keep their first `max_length` tokens.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}.")
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of texts, got a single str; wrap it in a list.")
        sequences = [self.ids(text)[:max_length] for text in texts]
        length = max((len(seq) for seq in sequences), default=0)
        tokens = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros(len(sequences), length, dtype=torch.bool)
        for row, seq in enumerate(sequences):
            tokens[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = True
        return tokens, mask

    @classmethod
    def _check_kind(cls, state: tp.Dict[str, tp.Any]) -> None:
        if state.get("kind") != cls.kind:
            raise ValueError(f"{cls.__name__} expects a state of kind '{cls.kind}', got '{state.get('kind')}'.")


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes: byte `b` -> id `1 + b`, padding 0, `vocab_size = 257`."""

    kind = "bytes"
    offset = 1

    @property
    def vocab_size(self) -> int:
        return 256 + self.offset

    def ids(self, text: str) -> tp.List[int]:
        return [self.offset + b for b in text.encode("utf-8")]

    def state(self) -> tp.Dict[str, tp.Any]:
        return {"kind": self.kind}

    @classmethod
    def from_state(cls, state: tp.Dict[str, tp.Any]) -> "ByteTokenizer":
        cls._check_kind(state)
        return cls()


class WordTokenizer(TextTokenizer):
    """Word vocabulary fitted on captions: pad 0, unk 1, then words by decreasing count (ties alphabetical).

    Args:
        vocab: the token of each id, specials first (``vocab[0]`` is padding, ``vocab[1]`` unknown).
    """

    kind = "words"
    unk_id = 1
    specials: tp.ClassVar[tp.Tuple[str, str]] = ("<pad>", "<unk>")
    pattern = re.compile(r"\w+(?:'\w+)*|[^\w\s]")

    def __init__(self, vocab: tp.Sequence[str]) -> None:
        if tuple(vocab[:2]) != self.specials:
            raise ValueError(f"vocab must start with the specials {self.specials}, got {tuple(vocab[:2])}.")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab holds duplicate tokens.")
        self.vocab = list(vocab)
        self.index = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def split(cls, text: str) -> tp.List[str]:
        """Lowercased words and punctuation marks of `text`, in order."""
        return cls.pattern.findall(text.lower())

    @classmethod
    def fit(cls, texts: tp.Iterable[str], max_size: int = 8192, min_count: int = 1) -> "WordTokenizer":
        """Vocabulary of the `max_size - 2` most frequent words seen at least `min_count` times in `texts`.

        `max_size` counts the two specials, so `vocab_size <= max_size`.
        """
        if max_size < len(cls.specials) + 1:
            raise ValueError(f"max_size must leave room for at least one word besides the specials, got {max_size}.")
        counts = Counter(word for text in texts for word in cls.split(text))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(cls.specials) + words[:max_size - len(cls.specials)])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> tp.List[int]:
        return [self.index.get(word, self.unk_id) for word in self.split(text)]

    def state(self) -> tp.Dict[str, tp.Any]:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_state(cls, state: tp.Dict[str, tp.Any]) -> "WordTokenizer":
        cls._check_kind(state)
        return cls(state["vocab"])


TOKENIZERS: tp.Dict[str, tp.Type[TextTokenizer]] = {"bytes": ByteTokenizer, "words": WordTokenizer}


def check_token_batch(tokens: torch.Tensor, mask: torch.Tensor, max_length: int, key: str = "max_length") -> None:
    """Refuse what a text tower cannot take: ids and mask of different shapes or not ``[B, L]``, a mask that is
    not bool (True on real tokens), or more than `max_length` tokens (`key` names the setting to raise)."""
    if tokens.dim() != 2 or mask.shape != tokens.shape:
        raise ValueError(f"Expected tokens and mask of the same shape [B, L], got {tuple(tokens.shape)} "
                         f"and {tuple(mask.shape)}.")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True on real tokens), got dtype {mask.dtype}.")
    if tokens.shape[1] > max_length:
        raise ValueError(f"Got {tokens.shape[1]} tokens but {key}={max_length}: raise {key} or encode the texts "
                         f"with a smaller max_length.")


def get_tokenizer(name: str, texts: tp.Optional[tp.Iterable[str]] = None, **kwargs: tp.Any) -> TextTokenizer:
    """Tokenizer `name` ('bytes' or 'words'); 'words' is fitted on `texts` with `kwargs` (see `WordTokenizer.fit`)."""
    if name == "bytes":
        if kwargs:
            raise ValueError(f"mulan.tokenizer='bytes' takes no options, got {sorted(kwargs)}.")
        return ByteTokenizer()
    if name == "pretrained":  # kwargs: path (text_pretrained.path), see PretrainedTokenizer
        return _tokenizer_class(name)(**kwargs)
    if name == "words":
        if texts is None:
            raise ValueError("mulan.tokenizer='words' is fitted on the training captions, but no texts were given; "
                             "pass the captions or use mulan.tokenizer='bytes'.")
        return WordTokenizer.fit(texts, **kwargs)
    raise ValueError(f"Unknown mulan.tokenizer '{name}'; choose one of {sorted((*TOKENIZERS, 'pretrained'))}.")


def tokenizer_from_state(state: tp.Dict[str, tp.Any]) -> TextTokenizer:
    """Rebuild the tokenizer saved by `TextTokenizer.state()`, whatever its kind."""
    kind = state.get("kind")
    if kind not in (*TOKENIZERS, "pretrained"):
        raise ValueError(f"Unknown tokenizer kind '{kind}' in the saved state; expected one of "
                         f"{sorted((*TOKENIZERS, 'pretrained'))}.")
    return _tokenizer_class(kind).from_state(state)


def _tokenizer_class(kind: str) -> tp.Type[TextTokenizer]:
    if kind == "pretrained":  # imported on demand: its dependencies are an optional extra
        from .pretrained_text import PretrainedTokenizer
        return PretrainedTokenizer
    return TOKENIZERS[kind]

