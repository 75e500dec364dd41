"""Build a :class:`~audiogen_lab.models.mulan.MuLaN` from the Hydra config (``config/model/mulan/*.yaml``)::

    mulan: {dim, audio_tower: ast | conv, text_tower: transformer | pretrained,
            tokenizer: words | bytes | pretrained, text_vocab_size, max_text_length}
    mulan_frontend: {...LogMelFrontend kwargs but sample_rate (the top-level sample_rate)...}
    ast: {...AudioSpectrogramTransformer kwargs but n_mels...}
    audio_conv: {...ConvAudioTower kwargs but n_mels...}
    text_transformer: {...TextTransformer kwargs but vocab_size...}
    text_pretrained: {path, pooling, freeze}    (mulan.text_tower: pretrained; needs the `text` extra)
    contrastive: {loss: softmax | sigmoid | decoupled, <loss>: {...its kwargs...}}
    spec_augment: {use, ...SpecAugment kwargs...}
    time_stretch: {use, ...RandomTimeStretch kwargs...}
"""
from __future__ import annotations

import typing as tp

import omegaconf
from torch import nn

from ..losses.contrastive import get_contrastive_loss
from ..modules.audio_conv_tower import ConvAudioTower
from ..modules.audio_transformer import AudioSpectrogramTransformer
from ..modules.log_mel import LogMelFrontend
from ..modules.spec_augment import RandomTimeStretch, SpecAugment
from ..modules.text_tokenizer import TextTokenizer
from ..modules.text_transformer import TextTransformer
from .builders import _instantiate, _kwargs, _pick
from .mulan import MuLaN

AUDIO_TOWERS: tp.Dict[str, tp.Tuple[str, tp.Type[nn.Module]]] = {
    "ast": ("ast", AudioSpectrogramTransformer),
    "conv": ("audio_conv", ConvAudioTower),
}


def _optional(cfg: omegaconf.DictConfig, key: str, klass: tp.Type[nn.Module]) -> tp.Optional[nn.Module]:
    kwargs = _kwargs(cfg, key) if key in cfg else {}
    if not kwargs.pop("use", False):
        return None
    return _instantiate(klass, kwargs, key)


def get_text_tower(cfg: omegaconf.DictConfig) -> nn.Module:
    """The text tower of ``mulan.text_tower``: a transformer trained from scratch, or a pretrained encoder read
    from ``text_pretrained.path`` (a folder, a cached Hugging Face name or ``package:<module>``; never downloaded)."""
    options = _kwargs(cfg, "mulan")
    kind = options.get("text_tower") or "transformer"
    if kind == "transformer":
        return _instantiate(TextTransformer, dict(vocab_size=int(options["text_vocab_size"]),
                                                  **_kwargs(cfg, "text_transformer")), "text_transformer")
    if kind == "pretrained":
        from ..modules.pretrained_text import PretrainedTextEncoder
        kwargs = _kwargs(cfg, "text_pretrained")
        kwargs.setdefault("max_length", int(options["max_text_length"]))
        return _instantiate(PretrainedTextEncoder, kwargs, "text_pretrained")
    raise KeyError(f"config key 'mulan.text_tower': unknown value {kind!r}, choose 'transformer' or 'pretrained'.")


def get_mulan_model(cfg: omegaconf.DictConfig, tokenizer: tp.Optional[TextTokenizer] = None) -> MuLaN:
    """The MuLaN of `cfg` (untrained). `tokenizer` may be given now or set later (fitted on captions)."""
    options = _kwargs(cfg, "mulan")
    frontend = _instantiate(LogMelFrontend, dict(sample_rate=int(cfg.sample_rate), **_kwargs(cfg, "mulan_frontend")),
                            "mulan_frontend")
    tower_key, tower_class = _pick(AUDIO_TOWERS, options.get("audio_tower", "ast"), "mulan.audio_tower")
    audio_tower = _instantiate(tower_class, dict(n_mels=frontend.n_mels, **_kwargs(cfg, tower_key)), tower_key)
    text_tower = get_text_tower(cfg)
    contrastive_cfg = _kwargs(cfg, "contrastive")
    name = contrastive_cfg.get("loss", "softmax")
    contrastive = get_contrastive_loss(name, **(contrastive_cfg.get(name) or {}))
    return MuLaN(frontend, audio_tower, text_tower, contrastive, tokenizer=tokenizer, dim=int(options["dim"]),
                 max_text_length=int(options["max_text_length"]),
                 spec_augment=_optional(cfg, "spec_augment", SpecAugment),
                 time_stretch=_optional(cfg, "time_stretch", RandomTimeStretch))
