"""MuLaN (Huang et al., 2022): music audio and free text embedded into one L2-normalised space.

An audio tower (spectrogram transformer or CNN over a log-mel frontend) and a text tower (a transformer
over a tokenizer's ids) each end in a linear projection to ``dim`` channels, normalised to unit length.
The contrastive loss, with its learned temperature (and bias), is part of the model so that it is
checkpointed with it. The tokenizer (a fitted vocabulary, or fixed bytes) is stored inside the weights as
a byte buffer, so every checkpoint, EMA copy, best state and export carries the vocabulary it was trained
with.
"""
from __future__ import annotations

import json
import typing as tp

import julius
import torch
import torch.nn.functional as F
from torch import nn

from ..modules.log_mel import LogMelFrontend
from ..modules.text_tokenizer import TextTokenizer, tokenizer_from_state

Texts = tp.Union[tp.Sequence[str], tp.Tuple[torch.Tensor, torch.Tensor], torch.Tensor]


class MuLaN(nn.Module):
    """Audio-text embedding model.

    Args:
        frontend: waveform -> normalised log-mel with frame lengths.
        audio_tower: ``(spec [B, n_mels, F], frames [B]) -> [B, audio_tower.dim]``.
        text_tower: ``(tokens [B, L], mask [B, L]) -> [B, text_tower.dim]``.
        contrastive: ``(audio [B, dim], text [B, dim]) -> (loss, info)``.
        tokenizer: texts -> ids; may be set later with :meth:`set_tokenizer` (e.g. fitted on captions).
        dim: size of the shared embedding space.
        max_text_length: texts are cut to this many tokens.
        spec_augment: ``(spec, frames) -> spec``, applied in training mode only.
        time_stretch: ``(spec, frames) -> (spec, frames)``, applied in training mode only.
    """

    family = "mulan"

    def __init__(self, frontend: LogMelFrontend, audio_tower: nn.Module, text_tower: nn.Module,
                 contrastive: nn.Module, tokenizer: tp.Optional[TextTokenizer] = None, dim: int = 128,
                 max_text_length: int = 64, spec_augment: tp.Optional[nn.Module] = None,
                 time_stretch: tp.Optional[nn.Module] = None) -> None:
        super().__init__()
        self.frontend = frontend
        self.audio_tower = audio_tower
        self.text_tower = text_tower
        self.contrastive = contrastive
        self.spec_augment = spec_augment
        self.time_stretch = time_stretch
        self.dim = dim
        self.max_text_length = max_text_length
        self.audio_proj = nn.Linear(audio_tower.dim, dim)
        self.text_proj = nn.Linear(text_tower.dim, dim)
        self.register_buffer("tokenizer_state", torch.zeros(0, dtype=torch.uint8))
        self.tokenizer: tp.Optional[TextTokenizer] = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    # ------------------------------------------------------------------ tokenizer
    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        """Use `tokenizer` from now on and store it in the weights."""
        vocab = getattr(self.text_tower, "vocab_size", None)
        if vocab is not None and tokenizer.vocab_size > vocab:
            raise ValueError(f"The tokenizer has {tokenizer.vocab_size} ids but the text tower embeds {vocab}: "
                             "raise mulan.text_vocab_size or lower the tokenizer size.")
        data = json.dumps(tokenizer.state(), sort_keys=True).encode("utf-8")
        self.tokenizer_state = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.tokenizer_state.device)
        self.tokenizer = tokenizer

    def _load_from_state_dict(self, state_dict: tp.Dict[str, tp.Any], prefix: str, *args: tp.Any) -> None:
        stored = state_dict.get(prefix + "tokenizer_state")
        if isinstance(stored, torch.Tensor) and stored.shape != self.tokenizer_state.shape:
            self.tokenizer_state = torch.empty_like(stored, device=self.tokenizer_state.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
        if isinstance(stored, torch.Tensor) and stored.numel():
            self.tokenizer = tokenizer_from_state(json.loads(bytes(stored.cpu().tolist()).decode("utf-8")))

    def tokenize(self, texts: tp.Sequence[str]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Texts -> ids ``[B, L]`` and mask ``[B, L]`` on the model's device."""
        if self.tokenizer is None:
            raise RuntimeError("This MuLaN has no tokenizer: fit one on the captions and call set_tokenizer.")
        tokens, mask = self.tokenizer.encode(list(texts), self.max_text_length)
        device = self.audio_proj.weight.device
        return tokens.to(device), mask.to(device)

    # ------------------------------------------------------------------ embeddings
    def embed_audio(self, wav: torch.Tensor, lengths: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Audio ``[B, C, T]`` or ``[B, T]`` at :attr:`sample_rate` (mono; channels are averaged), with real
        samples per item `lengths` ``[B]`` -> unit-norm embeddings ``[B, dim]``. In training mode the
        spectrogram augmentations are applied."""
        if wav.dim() == 3:
            wav = wav.mean(dim=1)
        spec, frames = self.frontend(wav, lengths)
        if self.training and self.time_stretch is not None:
            spec, frames = self.time_stretch(spec, frames)
        if self.training and self.spec_augment is not None:
            spec = self.spec_augment(spec, frames)
        return F.normalize(self.audio_proj(self.audio_tower(spec, frames)).float(), dim=-1)

    def embed_text(self, texts: Texts, mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Texts (strings, or ids ``[B, L]`` with an optional mask ``[B, L]``) -> unit-norm ``[B, dim]``."""
        if isinstance(texts, torch.Tensor):
            tokens = texts
            mask = tokens != 0 if mask is None else mask
        else:
            tokens, mask = self.tokenize(texts)
        return F.normalize(self.text_proj(self.text_tower(tokens, mask)).float(), dim=-1)

    def forward(self, wav: torch.Tensor, texts: Texts, lengths: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings ``([B, dim], [B, dim])`` of paired audio and texts."""
        return self.embed_audio(wav, lengths), self.embed_text(texts)

    def loss(self, audio: torch.Tensor, text: torch.Tensor) -> tp.Tuple[torch.Tensor, tp.Dict[str, torch.Tensor]]:
        """The contrastive loss of paired embeddings (negatives from every rank) and its logged values."""
        return self.contrastive(audio, text)

    # ------------------------------------------------------------------ inference helpers
    @torch.no_grad()
    def get_audio_embeddings(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio ``[T]``, ``[B, T]`` or ``[B, C, T]`` at any rate -> ``[B, dim]`` (eval, no gradients)."""
        wav = wav.to(self.audio_proj.weight.device, torch.float32)
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() == 3:
            wav = wav.mean(dim=1)
        if sample_rate != self.sample_rate:
            wav = julius.resample_frac(wav, sample_rate, self.sample_rate)
        return self._eval(lambda: self.embed_audio(wav))

    @torch.no_grad()
    def get_text_embeddings(self, texts: tp.Union[str, tp.Sequence[str]]) -> torch.Tensor:
        """Texts -> ``[B, dim]`` (eval, no gradients)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._eval(lambda: self.embed_text(texts))

    def _eval(self, fn: tp.Callable[[], torch.Tensor]) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return fn()
        finally:
            self.train(was_training)
