"""Semantic tokens for AudioLM-style language models: k-means ids of self-supervised audio features.

A feature extractor maps a waveform [B, T] to frames [B, T', D] at `frame_rate` Hz; a frozen k-means
codebook (centroids [K, D], fitted with :func:`audiogen_lab.quantization.kmeans.minibatch_kmeans`)
turns every frame into the id of its nearest centroid, giving tokens [B, T'] with K values.

Extractors (each an ``nn.Module`` with ``sample_rate``, ``frame_rate``, ``dim`` and
``forward(wav [B, T]) -> [B, T', D]``):

- :class:`LogMelFeatures`: log mel spectrogram frames, no weights (for tests and CPU runs).
  T' = floor(T * frame_rate / sample_rate).
- :class:`HuBERTFeatures`: the output of one transformer layer of a HuBERT model (torchaudio's
  architecture) loaded from a local weights file, never downloaded. HuBERT's convolutional front end
  has a stride of 320 samples at 16 kHz, hence 50 Hz frames, T' = floor((T - 80) / 320) for the base
  model (the convolutions are not padded).
- :class:`~audiogen_lab.models.semantic_features.MuLaNFeatures` and
  :class:`~audiogen_lab.models.semantic_features.ConsistencyAEFeatures`: frames of this project's own MuLaN
  audio tower or consistency autoencoder encoder, loaded from ``//sig/SIG`` or a checkpoint.

Frame rate reduction: ``HuBERTFeatures(frame_rate=25)`` averages each pair of consecutive 50 Hz frames
(more generally, groups of ``native_rate / frame_rate`` frames, which must be an integer); an incomplete
last group is dropped. :class:`LogMelFeatures` gets any frame rate dividing the sample rate directly
through its hop length.

Tokenizer files (:func:`save_semantic_tokenizer`) are named by a path, an XP folder or ``//sig/SIG`` of a
``solver=semantic/kmeans`` XP, which writes :data:`TOKENIZER_FILE` into its folder
(:func:`resolve_semantic_tokenizer_path`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import typing as tp
from pathlib import Path

import julius
import torch
import torchaudio
from einops import rearrange, reduce
from torch import nn

from ..quantization.kmeans import assign, cluster_usage, minibatch_kmeans
from ..utils.checkpoint import SIG_PREFIX, load_checkpoint, resolve_checkpoint_path, save_checkpoint

logger = logging.getLogger(__name__)

_HUBERT_VARIANTS: tp.Dict[str, tp.Callable[..., nn.Module]] = {
    "base": torchaudio.models.hubert_base,
    "large": torchaudio.models.hubert_large,
    "xlarge": torchaudio.models.hubert_xlarge,
}
_VARIANT_SHAPES = {(768, 12): "base", (1024, 24): "large", (1280, 48): "xlarge"}  # (dim, layers) -> variant


def _pool_frames(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Average groups of `factor` consecutive frames of `features` [B, T, D] -> [B, T // factor, D]."""
    if factor == 1:
        return features
    usable = features.shape[1] // factor * factor
    return reduce(features[:, :usable], "b (t f) d -> b t d", "mean", f=factor)


def _pooling_factor(native_rate: float, frame_rate: tp.Optional[float]) -> int:
    if frame_rate is None:
        return 1
    factor = native_rate / frame_rate if frame_rate > 0 else 0.0
    if abs(factor - round(factor)) > 1e-9 or round(factor) < 1:
        raise ValueError(f"frame_rate={frame_rate} must be the native frame rate {native_rate} Hz divided by an "
                         f"integer (e.g. {native_rate / 2} to average pairs of frames).")
    return int(round(factor))


def _check_wav(wav: torch.Tensor) -> None:
    if wav.dim() != 2:
        raise ValueError(f"Expected a mono waveform batch [B, T], got shape {tuple(wav.shape)}.")


class LogMelFeatures(nn.Module):
    """Log mel spectrogram frames [B, T', n_mels] of a waveform [B, T], T' = floor(T * frame_rate / sample_rate).

    Hop length ``sample_rate / frame_rate`` (must be an integer), window and FFT size the next power of two
    at or above twice the hop length, features ``log(max(mel power, 1e-5))``. Frame t is centred on sample
    ``t * hop``.
    """

    def __init__(self, sample_rate: int = 16000, frame_rate: int = 50, n_mels: int = 64) -> None:
        super().__init__()
        if frame_rate <= 0 or sample_rate % frame_rate != 0:
            raise ValueError(f"frame_rate={frame_rate} must divide sample_rate={sample_rate} (the hop length "
                             "sample_rate / frame_rate is a whole number of samples).")
        self.sample_rate = sample_rate
        self.frame_rate = frame_rate
        self.dim = n_mels
        self.hop_length = sample_rate // frame_rate
        n_fft = 1 << math.ceil(math.log2(2 * self.hop_length))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=self.hop_length, n_mels=n_mels, center=True,
            pad_mode="constant")  # zero padding at the edges: works for clips shorter than a window

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        _check_wav(wav)
        frames = wav.shape[-1] // self.hop_length
        mel = self.mel(wav)[..., :frames]  # [B, M, T'] (centring adds one frame, dropped here)
        return rearrange(mel.clamp(min=1e-5).log(), "b m t -> b t m")


# -- HuBERT ------------------------------------------------------------------------------------------


def _load_state_dict(path: Path) -> tp.Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return state


def _resolve_weights(checkpoint: tp.Union[str, Path]) -> Path:
    path = Path(checkpoint)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"checkpoint={path} is a folder without model.safetensors or pytorch_model.bin.")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint={path} does not exist (HuBERT weights are never downloaded: pass "
                                "a local state dict file or a Hugging Face save_pretrained folder).")
    return path


def _is_huggingface(state: tp.Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(("feature_projection.", "hubert.feature_projection.")) for key in state)


def huggingface_to_torchaudio(state: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
    """Rename the keys of a Hugging Face ``HubertModel`` (or ``HubertFor*``) state dict to torchaudio's.

    ``feature_extractor.*`` keeps its name, ``feature_projection.*`` becomes ``encoder.feature_projection.*``
    and ``encoder.*`` becomes ``encoder.transformer.*``; ``weight_g`` / ``weight_v`` of the positional
    convolution become the parametrized weight norm's ``original0`` / ``original1``. Heads, the mask
    embedding and other keys are dropped.
    """
    out: tp.Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("hubert."):
            key = key[len("hubert."):]
        if key.startswith("feature_extractor."):
            new = key
        elif key.startswith("feature_projection."):
            new = "encoder." + key
        elif key.startswith("encoder."):
            new = "encoder.transformer." + key[len("encoder."):]
        else:
            continue
        new = new.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        new = new.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        out[new] = value
    return out


def huggingface_config_to_kwargs(config: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Keyword arguments of ``torchaudio.models.wav2vec2_model`` for a Hugging Face ``HubertConfig`` (config.json).

    Missing entries take ``HubertConfig``'s defaults. Dropouts are set to 0 (features are extracted in eval).
    """
    cfg = dict(config)
    if not cfg.get("feat_proj_layer_norm", True) or cfg.get("conv_pos_batch_norm", False):
        raise ValueError("This HuBERT config (feat_proj_layer_norm=False or conv_pos_batch_norm=True) has no "
                         "torchaudio equivalent; use a standard HuBERT checkpoint.")
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("layer_norm_eps", 1e-5) != 1e-5:
        raise ValueError("torchaudio's HuBERT needs hidden_act='gelu' and layer_norm_eps=1e-5, got "
                         f"{cfg.get('hidden_act')!r} and {cfg.get('layer_norm_eps')}.")
    conv_dim = cfg.get("conv_dim", [512] * 7)
    conv_kernel = cfg.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])
    conv_stride = cfg.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])
    return {
        "extractor_mode": f"{cfg.get('feat_extract_norm', 'group')}_norm",
        "extractor_conv_layer_config": [list(v) for v in zip(conv_dim, conv_kernel, conv_stride)],
        "extractor_conv_bias": cfg.get("conv_bias", False),
        "encoder_embed_dim": cfg.get("hidden_size", 768),
        "encoder_projection_dropout": 0.0,
        "encoder_pos_conv_kernel": cfg.get("num_conv_pos_embeddings", 128),
        "encoder_pos_conv_groups": cfg.get("num_conv_pos_embedding_groups", 16),
        "encoder_num_layers": cfg.get("num_hidden_layers", 12),
        "encoder_num_heads": cfg.get("num_attention_heads", 12),
        "encoder_attention_dropout": 0.0,
        "encoder_ff_interm_features": cfg.get("intermediate_size", 3072),
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.0,
        "encoder_layer_norm_first": cfg.get("do_stable_layer_norm", False),
        "encoder_layer_drop": 0.0,
        "aux_num_out": None,
    }


def _torchaudio_state(state: tp.Mapping[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
    """Keep the ``Wav2Vec2Model`` part of a torchaudio state dict (strips ``HuBERTPretrainModel``'s prefix)."""
    if any(key.startswith("wav2vec2.") for key in state):
        state = {key[len("wav2vec2."):]: value for key, value in state.items() if key.startswith("wav2vec2.")}
    return {key: value for key, value in state.items() if not key.startswith("aux.")}


def _infer_variant(state: tp.Mapping[str, torch.Tensor]) -> str:
    key = "encoder.feature_projection.projection.weight"
    if key not in state:
        raise ValueError(f"Cannot recognise the HuBERT weights: no {key!r} key; pass architecture=... "
                         "(wav2vec2_model keyword arguments) or variant=...")
    dim = state[key].shape[0]
    layers = 1 + max((int(k.split(".")[3]) for k in state if k.startswith("encoder.transformer.layers.")),
                     default=-1)
    if (dim, layers) not in _VARIANT_SHAPES:
        raise ValueError(f"HuBERT weights with dim={dim} and {layers} layers match no known variant "
                         f"{sorted(_HUBERT_VARIANTS)}: pass architecture=dict(...) with the keyword arguments of "
                         "torchaudio.models.wav2vec2_model.")
    return _VARIANT_SHAPES[(dim, layers)]


class HuBERTFeatures(nn.Module):
    """Output [B, T', D] of transformer layer `layer` (1-based) of a HuBERT model, for a waveform [B, T].

    The model is torchaudio's HuBERT (``Wav2Vec2Model``), built and loaded from local weights:

    - a torchaudio state dict (``.pt``/``.th``/... read with ``torch.load(weights_only=True)``, or
      ``.safetensors``); the architecture is `architecture` (keyword arguments of
      ``torchaudio.models.wav2vec2_model``) if given, else `variant` ("base", "large", "xlarge"), else
      the variant whose (dim, number of layers) matches the weights;
    - a Hugging Face ``HubertModel`` folder written by ``save_pretrained`` (or its weights file) with its
      ``config.json`` next to the weights: keys are renamed by :func:`huggingface_to_torchaudio` and the
      architecture comes from config.json (``transformers`` is not needed).

    The module is frozen (no gradient, eval mode). ``frame_rate`` defaults to the native rate
    ``sample_rate / total conv stride`` (50 Hz for the released models); a divisor of it averages groups of
    frames (see the module doc).
    """

    def __init__(self, checkpoint: tp.Union[str, Path], layer: int, sample_rate: int = 16000,
                 frame_rate: tp.Optional[float] = None, variant: tp.Optional[str] = None,
                 architecture: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> None:
        super().__init__()
        weights = _resolve_weights(checkpoint)
        state = _load_state_dict(weights)
        if _is_huggingface(state):
            config_path = weights.parent / "config.json"
            if architecture is None:
                if not config_path.exists():
                    raise FileNotFoundError(f"{weights} holds Hugging Face HuBERT weights but {config_path} is "
                                            "missing: put its config.json next to it or pass architecture=...")
                architecture = huggingface_config_to_kwargs(json.loads(config_path.read_text()))
            state = huggingface_to_torchaudio(state)
        else:
            state = _torchaudio_state(state)
        if architecture is not None:
            model = torchaudio.models.wav2vec2_model(**{"aux_num_out": None, **dict(architecture)})
        else:
            variant = variant or _infer_variant(state)
            if variant not in _HUBERT_VARIANTS:
                raise ValueError(f"variant must be one of {sorted(_HUBERT_VARIANTS)}, got {variant!r}.")
            model = _HUBERT_VARIANTS[variant]()
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"The weights in {weights} do not fit the HuBERT architecture built for them "
                             f"(check variant= / architecture=): {err}") from err
        num_layers = len(model.encoder.transformer.layers)
        if not 1 <= layer <= num_layers:
            raise ValueError(f"layer must be in [1, {num_layers}] (this model's transformer layers), got {layer}.")
        self.model = model.eval().requires_grad_(False)
        self.layer = layer
        self.sample_rate = sample_rate
        stride = math.prod(conv.conv.stride[0] for conv in model.feature_extractor.conv_layers)
        self.native_frame_rate = sample_rate / stride
        self._pool = _pooling_factor(self.native_frame_rate, frame_rate)
        self.frame_rate = self.native_frame_rate / self._pool
        self.dim = model.encoder.feature_projection.projection.out_features

    def train(self, mode: bool = True) -> "HuBERTFeatures":
        super().train(mode)
        self.model.eval()  # always frozen: no dropout
        return self

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        _check_wav(wav)
        outputs, _ = self.model.extract_features(wav, num_layers=self.layer)
        return _pool_frames(outputs[-1], self._pool)


# -- tokenizer ---------------------------------------------------------------------------------------


class SemanticTokenizer(nn.Module):
    """Waveform [B, T] -> semantic token ids [B, T'] in [0, K): nearest k-means centroid of each feature frame.

    Buffers:
        centroids: [K, D] k-means centroids in the extractor's feature space (saved in the state dict).

    Args:
        extractor: a feature extractor (``sample_rate``, ``frame_rate``, ``dim``, [B, T] -> [B, T', D]).
        centroids: [K, D], e.g. from :func:`fit_semantic_tokenizer`.
        dedup: collapse runs of repeated ids (AudioLM removes consecutive duplicates); rows are then
            right-padded with ``pad_id`` (-1) to the longest collapsed row.
    """

    family = "semantic"
    pad_id = -1
    centroids: torch.Tensor

    def __init__(self, extractor: nn.Module, centroids: torch.Tensor, dedup: bool = False) -> None:
        super().__init__()
        if centroids.dim() != 2 or centroids.shape[1] != extractor.dim:
            raise ValueError(f"centroids must be [K, D={extractor.dim}] (the extractor's dim), got shape "
                             f"{tuple(centroids.shape)}.")
        self.extractor = extractor
        self.dedup = dedup
        self.register_buffer("centroids", centroids.detach().float().clone())

    @property
    def cardinality(self) -> int:
        """Number of distinct token ids K."""
        return self.centroids.shape[0]

    @property
    def frame_rate(self) -> float:
        return self.extractor.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.extractor.sample_rate

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Ids [B, T'] (long) of `wav` [B, T] sampled at `sample_rate` (resampled with julius when needed)."""
        _check_wav(wav)
        if sample_rate != self.extractor.sample_rate:
            wav = julius.resample_frac(wav, sample_rate, self.extractor.sample_rate)
        features = self.extractor(wav.to(self.centroids))  # [B, T', D]
        batch = features.shape[0]
        ids = assign(rearrange(features, "b t d -> (b t) d"), self.centroids)
        ids = rearrange(ids, "(b t) -> b t", b=batch)
        return dedup_ids(ids, self.pad_id) if self.dedup else ids

    def forward(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.encode(wav, sample_rate)


def dedup_ids(ids: torch.Tensor, pad_id: int = -1) -> torch.Tensor:
    """Collapse runs of equal ids in each row of `ids` [B, T]; rows are right-padded with `pad_id`."""
    rows = [torch.unique_consecutive(row) for row in ids]
    length = max((len(row) for row in rows), default=0)
    out = ids.new_full((ids.shape[0], length), pad_id)
    for index, row in enumerate(rows):
        out[index, :len(row)] = row
    return out


@torch.no_grad()
def fit_semantic_tokenizer(extractor: nn.Module, audio_batches: tp.Iterable[torch.Tensor], num_clusters: int, *,
                           sample_rate: tp.Optional[int] = None, dedup: bool = False,
                           **kmeans_kwargs: tp.Any) -> tp.Tuple[SemanticTokenizer, tp.Dict[str, float]]:
    """Fit the k-means codebook of a :class:`SemanticTokenizer` on the features of `audio_batches`.

    Every batch [B, T] (at `sample_rate`, default the extractor's; resampled otherwise) goes through the
    extractor; all frames are gathered on CPU ([N, D]) and clustered with
    :func:`~audiogen_lab.quantization.kmeans.minibatch_kmeans` (`kmeans_kwargs`: batch_size, iters, restarts,
    seed, device...).

    Returns:
        the tokenizer (on CPU) and stats: ``inertia`` (sum of squared distances), ``mean_sq_distance``
        (inertia / N), ``num_frames`` N, and the ``perplexity`` / ``used_fraction`` of the ids of the fit data.
    """
    extractor.eval()
    tensors = [*extractor.parameters(), *extractor.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    chunks = []
    for wav in audio_batches:
        _check_wav(wav)
        if sample_rate is not None and sample_rate != extractor.sample_rate:
            wav = julius.resample_frac(wav, sample_rate, extractor.sample_rate)
        chunks.append(rearrange(extractor(wav.to(device)).float().cpu(), "b t d -> (b t) d"))
    if not chunks:
        raise ValueError("audio_batches is empty: pass at least one waveform batch [B, T].")
    features = torch.cat(chunks)
    centroids, inertia = minibatch_kmeans(features, num_clusters, **kmeans_kwargs)
    tokenizer = SemanticTokenizer(extractor, centroids.cpu(), dedup=dedup)
    usage = cluster_usage(assign(features, tokenizer.centroids), num_clusters)
    stats = {"inertia": inertia, "mean_sq_distance": inertia / features.shape[0],
             "num_frames": float(features.shape[0]), **usage}
    logger.info("Fitted semantic tokenizer: K=%d on %d frames of dim %d at %.4g Hz, mean squared distance %.4g, "
                "perplexity %.1f, %.0f%% of clusters used.", num_clusters, features.shape[0], features.shape[1],
                extractor.frame_rate, stats["mean_sq_distance"], usage["perplexity"], 100 * usage["used_fraction"])
    return tokenizer, stats


# -- saving and loading ------------------------------------------------------------------------------

TOKENIZER_FORMAT = "audiogen_lab.semantic_tokenizer"
TOKENIZER_VERSION = 1
#: the tokenizer file a ``solver=semantic/kmeans`` XP writes into its folder (what ``//sig/SIG`` names)
TOKENIZER_FILE = "semantic_tokenizer.th"
_EXTRACTORS: tp.Dict[str, type] = {"logmel": LogMelFeatures, "hubert": HuBERTFeatures}


def _extractor_classes() -> tp.Dict[str, type]:
    """Every extractor a tokenizer file may name, by kind (those of :mod:`.semantic_features` build on this
    module, hence imported here on demand)."""
    from .semantic_features import ConsistencyAEFeatures, MuLaNFeatures
    return {**_EXTRACTORS, MuLaNFeatures.kind: MuLaNFeatures, ConsistencyAEFeatures.kind: ConsistencyAEFeatures}


def resolve_semantic_tokenizer_path(source: tp.Union[str, Path]) -> Path:
    """The tokenizer file named by `source`: ``//sig/SIG`` or an XP folder (the :data:`TOKENIZER_FILE` written
    there by a ``solver=semantic/kmeans`` XP), else `source` itself as a path (user folder expanded)."""
    value = str(source)
    path = Path(value).expanduser()
    if not value.startswith(SIG_PREFIX) and not path.is_dir():
        return path
    try:
        return resolve_checkpoint_path(value, name=TOKENIZER_FILE)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{value} names no semantic tokenizer: {err} A solver=semantic/kmeans XP writes "
                                f"{TOKENIZER_FILE} there once its fit is done.") from err


def _extractor_spec(extractor: nn.Module, source: str, variant: tp.Optional[str],
                    architecture: tp.Optional[tp.Mapping[str, tp.Any]]) -> tp.Dict[str, tp.Any]:
    """The kind and constructor arguments (plain values) that rebuild `extractor`."""
    if isinstance(extractor, LogMelFeatures):
        return {"kind": "logmel", "args": {"sample_rate": int(extractor.sample_rate),
                                           "frame_rate": int(extractor.frame_rate), "n_mels": int(extractor.dim)}}
    if isinstance(extractor, HuBERTFeatures):
        if not source:
            raise ValueError("source must name the HuBERT weights (file or folder) the extractor was built from: "
                             "the tokenizer file records that path, not the weights.")
        arch = None if architecture is None else json.loads(json.dumps(dict(architecture)))  # tuples -> lists
        return {"kind": "hubert", "args": {"checkpoint": str(Path(source).expanduser().resolve()),
                                           "layer": int(extractor.layer), "sample_rate": int(extractor.sample_rate),
                                           "frame_rate": float(extractor.frame_rate), "variant": variant,
                                           "architecture": arch}}
    own_spec = getattr(extractor, "tokenizer_spec", None)
    if callable(own_spec) and getattr(extractor, "kind", None) in _extractor_classes():
        return own_spec()
    raise ValueError(f"Cannot save a tokenizer whose extractor is a {type(extractor).__name__}: supported "
                     f"extractors are {[klass.__name__ for klass in _extractor_classes().values()]}.")


def tokenizer_id(spec: tp.Mapping[str, tp.Any], centroids: torch.Tensor, dedup: bool) -> str:
    """Short hash (12 hex digits) of the centroids [K, D], the extractor kind and arguments and the dedup flag.

    The location of HuBERT weights (``checkpoint``) is left out: moving the weights keeps the id.
    """
    args = {key: value for key, value in spec["args"].items() if key != "checkpoint"}
    digest = hashlib.sha256(json.dumps({"kind": spec["kind"], "args": args, "dedup": bool(dedup)},
                                       sort_keys=True).encode())
    values = centroids.detach().float().cpu().contiguous()
    digest.update(str(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:12]


def save_semantic_tokenizer(tokenizer: SemanticTokenizer, path: tp.Union[str, Path], source: str = "", *,
                            variant: tp.Optional[str] = None,
                            architecture: tp.Optional[tp.Mapping[str, tp.Any]] = None) -> str:
    """Write `tokenizer` to `path` (atomically) and return its id.

    The file (read with ``weights_only=True``) holds ``format``, ``version``, ``id``, ``extractor``
    (``kind``: ``logmel``, ``hubert``, ``mulan`` or ``consistency_ae``, and ``args``: its constructor arguments),
    ``centroids`` [K, D] and ``dedup``. HuBERT weights are not copied: `source` is the HuBERT weights file or
    folder the extractor was built from (required for :class:`HuBERTFeatures`), stored as an absolute path with
    `layer`, `frame_rate`, and `variant` / `architecture` when the weights need them to be rebuilt. MuLaN and
    consistency autoencoder extractors record their own source (``//sig/SIG`` or a path) and weights hash.
    """
    spec = _extractor_spec(tokenizer.extractor, source, variant, architecture)
    centroids = tokenizer.centroids.detach().float().cpu().clone()
    identity = tokenizer_id(spec, centroids, tokenizer.dedup)
    save_checkpoint({"format": TOKENIZER_FORMAT, "version": TOKENIZER_VERSION, "id": identity, "extractor": spec,
                     "centroids": centroids, "dedup": bool(tokenizer.dedup)}, path)
    logger.info("Saved semantic tokenizer %s (%s extractor, K=%d) to %s.", identity, spec["kind"],
                centroids.shape[0], path)
    return identity


def read_semantic_tokenizer_file(path: tp.Union[str, Path]) -> tp.Dict[str, tp.Any]:
    """The checked contents of a tokenizer file written by :func:`save_semantic_tokenizer` (no model is built).
    `path` may also be ``//sig/SIG`` or an XP folder (see :func:`resolve_semantic_tokenizer_path`)."""
    path = resolve_semantic_tokenizer_path(path)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != TOKENIZER_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a semantic tokenizer file (format {found!r}, expected "
                         f"{TOKENIZER_FORMAT!r}); write it with save_semantic_tokenizer.")
    if not isinstance(state.get("version"), int) or state["version"] > TOKENIZER_VERSION:
        raise ValueError(f"{path}: semantic tokenizer version {state.get('version')!r} is not supported (this code "
                         f"reads versions <= {TOKENIZER_VERSION}).")
    spec = state.get("extractor") or {}
    if spec.get("kind") not in _extractor_classes() or not isinstance(state.get("centroids"), torch.Tensor):
        raise ValueError(f"{path}: unknown extractor kind {spec.get('kind')!r} (expected one of "
                         f"{sorted(_extractor_classes())}) or missing centroids.")
    expected = tokenizer_id(spec, state["centroids"], bool(state.get("dedup")))
    if state.get("id") != expected:
        raise ValueError(f"{path}: recorded id {state.get('id')!r} does not match its contents ({expected}); "
                         "the file was edited or is corrupt: save the tokenizer again.")
    return state


def load_semantic_tokenizer(path: tp.Union[str, Path]) -> SemanticTokenizer:
    """The :class:`SemanticTokenizer` saved at `path` (a file, an XP folder or ``//sig/SIG``; on CPU, eval mode);
    HuBERT, MuLaN and consistency autoencoder weights are read from the source recorded in the file. Its ``id``
    attribute is the file's id."""
    state = read_semantic_tokenizer_file(path)
    spec = state["extractor"]
    args = {key: value for key, value in spec["args"].items() if value is not None}
    extractor = _extractor_classes()[spec["kind"]](**args)
    tokenizer = SemanticTokenizer(extractor, state["centroids"], dedup=bool(state["dedup"])).eval()
    tokenizer.id = state["id"]
    return tokenizer
