"""Feature extractors for semantic tokens built on this project's own trained models.

Both follow the extractor interface of :mod:`audiogen_lab.models.semantic_tokenizer` (``sample_rate``,
``frame_rate``, ``dim``, ``forward(wav [B, T]) -> [B, T', D]``):

- :class:`MuLaNFeatures`: the frames of a trained MuLaN's audio tower, before it pools them into one clip
  embedding. Spectrogram transformer: the outputs of each time column of patches averaged over the
  frequency rows (``dim`` = its width); convolutional tower: the last block's map averaged over frequency
  (``dim`` = its last channel count). One frame per ``hop_length * time_stride`` samples (6.25 Hz for
  10 ms hops and 16-frame patches); only columns made of whole spectrogram frames are kept:
  ``T' = ((T - n_fft) // hop_length + 1) // time_stride``.
- :class:`ConsistencyAEFeatures`: the consistency autoencoder's encoder features before its bottleneck
  (:meth:`~audiogen_lab.models.consistency_ae.ConsistencyAE.extract_features`), one frame per latent frame
  (``sample_rate / hop_length`` Hz); the last, zero-padded frame is dropped: ``T' = T // hop_length``. Mono
  input is given to every channel of a multi-channel model.

The model is loaded with :func:`audiogen_lab.solvers.loading.load_model` from a source string (``//sig/SIG``,
an XP folder, a checkpoint or export file, ``//pretrained/NAME``) and frozen. A saved tokenizer records that
string (as given for ``//`` names, as an absolute path for files) and the sha256 of the weights: rebuilding it
from weights that changed since (an XP that trained further) is refused. ``frame_rate`` may be the native
rate divided by an integer: groups of frames are then averaged.
"""
from __future__ import annotations

import typing as tp
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from ..data.tokenize import weights_sha256 as model_sha256
from .semantic_tokenizer import _check_wav, _pool_frames, _pooling_factor


def _source_string(checkpoint: tp.Union[str, Path]) -> str:
    value = str(checkpoint)
    return value if value.startswith("//") else str(Path(value).expanduser().resolve())


class _UpstreamFeatures(nn.Module):
    """A frozen model of family `family` loaded from `checkpoint`, checked against `weights_sha256`."""

    kind: str = ""
    family: str = ""

    def __init__(self, checkpoint: tp.Union[str, Path], frame_rate: tp.Optional[float] = None,
                 weights_sha256: tp.Optional[str] = None) -> None:
        super().__init__()
        from ..solvers.loading import load_model
        from ..solvers.roles import freeze
        self.source = _source_string(checkpoint)
        self.model = freeze(load_model(self.source, family=self.family))
        self.weights_sha256 = model_sha256(self.model)
        if weights_sha256 is not None and weights_sha256 != self.weights_sha256:
            raise ValueError(f"checkpoint={self.source} now holds other weights than the {self.kind} model this "
                             f"tokenizer was fitted on (sha256 {self.weights_sha256[:12]}, expected "
                             f"{weights_sha256[:12]}): the XP trained further or the path names another model. "
                             "Fit the tokenizer again (solver=semantic/kmeans) or restore those weights.")
        self._pool = _pooling_factor(self.native_frame_rate, frame_rate)
        self.frame_rate = self.native_frame_rate / self._pool

    @property
    def native_frame_rate(self) -> float:
        raise NotImplementedError

    def tokenizer_spec(self) -> tp.Dict[str, tp.Any]:
        """The kind and constructor arguments (plain values) that rebuild this extractor; ``checkpoint`` is
        left out of the tokenizer's id, so moving the weights keeps it."""
        return {"kind": self.kind, "args": {"checkpoint": self.source, "frame_rate": float(self.frame_rate),
                                            "weights_sha256": self.weights_sha256}}


class MuLaNFeatures(_UpstreamFeatures):
    """Frames [B, T', D] of a trained MuLaN's audio tower for a waveform [B, T] (see the module doc)."""

    kind = "mulan"
    family = "mulan"

    def __init__(self, checkpoint: tp.Union[str, Path], frame_rate: tp.Optional[float] = None,
                 weights_sha256: tp.Optional[str] = None) -> None:
        super().__init__(checkpoint, frame_rate, weights_sha256)
        tower = self.model.audio_tower
        if not hasattr(tower, "frame_features"):
            raise ValueError(f"checkpoint={self.source}: the audio tower {type(tower).__name__} gives no frames.")
        self.sample_rate = int(self.model.sample_rate)
        self.dim = int(tower.frame_dim)

    @property
    def native_frame_rate(self) -> float:
        return self.model.sample_rate / (self.model.frontend.hop_length * self.model.audio_tower.time_stride)

    def _frames(self, wav: torch.Tensor) -> torch.Tensor:
        spec, frames = self.model.frontend(wav)
        features, _ = self.model.audio_tower.frame_features(spec, frames)
        whole = int(frames.min()) // self.model.audio_tower.time_stride
        return features[:, :whole].float()

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        _check_wav(wav)
        frontend = self.model.frontend
        if wav.shape[-1] < frontend.n_fft + frontend.hop_length * (self.model.audio_tower.time_stride - 1):
            return wav.new_zeros(wav.shape[0], 0, self.dim)  # not one whole column of spectrogram frames
        return _pool_frames(self._frames(wav), self._pool)


class ConsistencyAEFeatures(_UpstreamFeatures):
    """Encoder features [B, T', D] of a consistency autoencoder for a waveform [B, T] (see the module doc)."""

    kind = "consistency_ae"
    family = "compression"

    def __init__(self, checkpoint: tp.Union[str, Path], frame_rate: tp.Optional[float] = None,
                 weights_sha256: tp.Optional[str] = None) -> None:
        super().__init__(checkpoint, frame_rate, weights_sha256)
        if not hasattr(self.model, "extract_features") or not hasattr(self.model.encoder, "feature_dim"):
            raise ValueError(f"checkpoint={self.source} holds a {type(self.model).__name__}, not a consistency "
                             "autoencoder (no encoder features to cluster).")
        self.sample_rate = int(self.model.sample_rate)
        self.dim = int(self.model.encoder.feature_dim * self.model.channels)

    @property
    def native_frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        _check_wav(wav)
        frames = wav.shape[-1] // self.model.hop_length
        if frames == 0:
            return wav.new_zeros(wav.shape[0], 0, self.dim)
        audio = wav[:, None].expand(-1, self.model.channels, -1)  # [B, C, T]
        features = self.model.extract_features(audio)[..., :frames]  # [B, C * D, T']
        return _pool_frames(rearrange(features, "b d t -> b t d").float(), self._pool)
