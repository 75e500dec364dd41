"""The interface of every compression model (audio <-> codes or continuous latents), chunked
encoding/decoding of long audio built on it, and chunk-by-chunk streaming."""
from __future__ import annotations

import contextlib
import math
import typing as tp
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..modules import streaming as streaming_layers
from ..quantization.base import QuantizedResult

EncodeResult = tp.Tuple[torch.Tensor, tp.Optional[torch.Tensor]]


class CompressionModel(nn.Module, ABC):
    """Audio [B, C, T] <-> codes [B, K, T'] (or continuous latents [B, D, T'] when `is_continuous`).

    Discrete models (EnCodec, SoundStream) implement the codebook properties (``cardinality``,
    ``num_codebooks``, ``total_codebooks``, ``set_num_codebooks``); continuous ones (a consistency
    autoencoder) do not, and downstream users check :attr:`is_continuous` to know whether to expect
    codes for a token LM or latents for a latent model.

    Subclasses implement the abstract methods. Models whose `encode` returns a per-item `scale` also
    override :meth:`preprocess`, :meth:`postprocess`, :meth:`encode_unscaled` and
    :meth:`decode_unscaled`, so that chunked processing normalises long audio once as a whole.
    """

    #: family of the model, written into exports and checked by downstream loaders
    family: str = "compression"

    @abstractmethod
    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """Encode, quantize and decode `x` [B, C, T]: result.x is the reconstruction [B, C, T]."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> EncodeResult:
        """`x` [B, C, T] -> (codes [B, K, T'] or latents [B, D, T'], scale [B, 1] or None)."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Codes [B, K, T'] (or latents) and the scale from `encode` -> audio [B, C, T' * hop]."""

    @abstractmethod
    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T'] -> the quantized latents [B, D, T'] fed to the decoder."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Audio channels."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Code frames per second."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Audio sample rate in Hz."""

    # -- codebooks: only models with discrete codes (is_continuous False) have them ----------------

    def _no_codebooks(self, what: str) -> tp.NoReturn:
        raise NotImplementedError(f"{type(self).__name__} is continuous (its encode returns latents, not codes): "
                                  f"it has no {what}.")

    @property
    def cardinality(self) -> int:
        """Entries per codebook (discrete models only)."""
        self._no_codebooks("codebook cardinality")

    @property
    def num_codebooks(self) -> int:
        """Codebooks currently used by encode (discrete models only)."""
        self._no_codebooks("codebooks")

    @property
    def total_codebooks(self) -> int:
        """Codebooks the model holds (discrete models only)."""
        self._no_codebooks("codebooks")

    def set_num_codebooks(self, n: int) -> None:
        """Encode with the first `n` codebooks only (lower bandwidth; discrete models only)."""
        self._no_codebooks("codebooks to select")

    @property
    def latent_dim(self) -> tp.Optional[int]:
        """Channels D of the continuous latents [B, D, T'] of a continuous model (None when unknown)."""
        return None

    @property
    @abstractmethod
    def is_continuous(self) -> bool:
        """True when `encode` returns continuous latents rather than codes."""

    # -- normalisation hooks used by chunked processing ---------------------------------------------

    @property
    def hop_length(self) -> int:
        """Audio samples per code frame, ``sample_rate / frame_rate`` (must be an integer)."""
        hop = self.sample_rate / self.frame_rate
        assert abs(hop - round(hop)) < 1e-6, \
            f"sample_rate ({self.sample_rate}) / frame_rate ({self.frame_rate}) must be an integer hop"
        return int(round(hop))

    def preprocess(self, x: torch.Tensor) -> EncodeResult:
        """Normalise audio [B, C, T] before encoding; returns it with its scale. Identity by default."""
        return x, None

    def postprocess(self, x: torch.Tensor, scale: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Undo :meth:`preprocess` on decoded audio [B, C, T]: multiply by `scale` [B, 1] when given."""
        if scale is None:
            return x
        assert scale.dim() == 2 and scale.shape == (x.shape[0], 1), \
            f"expected scale [B, 1] for audio {tuple(x.shape)}, got {tuple(scale.shape)}"
        return x * scale[:, :, None]

    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of audio that already went through :meth:`preprocess` (no further normalisation)."""
        codes, scale = self.encode(x)
        if scale is not None:
            raise NotImplementedError(
                f"{type(self).__name__}.encode returns a scale: override preprocess, postprocess, "
                "encode_unscaled and decode_unscaled to support chunked processing.")
        return codes

    def decode_unscaled(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio of `codes` before :meth:`postprocess`."""
        return self.decode(codes, None)

    # -- long audio -----------------------------------------------------------------------------------

    def _chunk_plan(self, num_frames: int, chunk_seconds: float,
                    overlap_seconds: float) -> tp.List[tp.Tuple[int, int, int, int]]:
        """(window_start, window_end, keep_start, keep_end) in frames, covering [0, num_frames)."""
        assert chunk_seconds > 0 and overlap_seconds >= 0, \
            f"chunk_seconds must be > 0 and overlap_seconds >= 0, got {chunk_seconds}, {overlap_seconds}"
        chunk = max(1, int(round(chunk_seconds * self.frame_rate)))
        context = int(math.ceil(overlap_seconds * self.frame_rate))
        plan = []
        for start in range(0, num_frames, chunk):
            end = min(start + chunk, num_frames)
            plan.append((max(0, start - context), min(num_frames, end + context), start, end))
        return plan

    def encode_chunked(self, x: torch.Tensor, chunk_seconds: float = 10.,
                       overlap_seconds: float = 1.) -> EncodeResult:
        """Encode long audio `x` [B, C, T] window by window; same output format as :meth:`encode`.

        Each window holds `chunk_seconds` of audio plus up to `overlap_seconds` of context on both
        sides; only the frames of its centre are kept, so the result is one contiguous stream of
        ``ceil(T / hop)`` frames. Normalisation (if any) is computed once on the whole input.
        """
        assert x.dim() == 3 and x.shape[1] == self.channels, \
            f"expected audio [B, {self.channels}, T], got shape {tuple(x.shape)}"
        x, scale = self.preprocess(x)
        hop = self.hop_length
        num_frames = math.ceil(x.shape[-1] / hop)
        pieces = []
        for win_start, win_end, keep_start, keep_end in self._chunk_plan(num_frames, chunk_seconds,
                                                                         overlap_seconds):
            codes = self.encode_unscaled(x[..., win_start * hop: win_end * hop])
            assert codes.shape[-1] == win_end - win_start, \
                f"expected {win_end - win_start} frames from a window, got {codes.shape[-1]}"
            pieces.append(codes[..., keep_start - win_start: keep_end - win_start])
        return torch.cat(pieces, dim=-1), scale

    def decode_chunked(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None,
                       chunk_seconds: float = 10., overlap_seconds: float = 1.) -> torch.Tensor:
        """Decode a long code stream [B, K, T'] (or latents) window by window into audio [B, C, T' * hop].

        Windows carry `overlap_seconds` of context on both sides and only the samples of their centre
        frames are kept, so consecutive pieces join without seams.
        """
        assert codes.dim() == 3, f"expected codes [B, K, T], got shape {tuple(codes.shape)}"
        hop = self.hop_length
        pieces = []
        for win_start, win_end, keep_start, keep_end in self._chunk_plan(codes.shape[-1], chunk_seconds,
                                                                         overlap_seconds):
            audio = self.decode_unscaled(codes[..., win_start:win_end])
            pieces.append(audio[..., (keep_start - win_start) * hop: (keep_end - win_start) * hop])
        return self.postprocess(torch.cat(pieces, dim=-1), scale)

    # -- streaming ------------------------------------------------------------------------------------

    #: True inside a :meth:`streaming` block
    is_streaming: bool = False

    def check_streamable(self) -> None:
        """Raise ValueError when the model cannot code chunk by chunk. Here: when one of its streaming
        layers refuses (a non-causal convolution, say) or a layer that mixes time steps cannot stream;
        subclasses add their own conditions."""
        streaming_layers.check_streamable(self)

    @contextlib.contextmanager
    def streaming(self, batch_size: tp.Optional[int] = None) -> tp.Iterator[None]:
        """Inside ``with model.streaming():``, :meth:`encode` and :meth:`decode` process consecutive chunks
        of one signal, and every streaming layer keeps the state the next chunk needs, so that the
        concatenated outputs equal the offline ones. Leaving the block forgets the state.

        Args:
            batch_size: batch size B of every chunk (checked; None: set by the first chunk).
        Raises:
            ValueError: the model cannot stream (see :meth:`check_streamable`).
        """
        self.check_streamable()
        with streaming_layers.streaming(self, batch_size):
            self.is_streaming = True
            try:
                yield
            finally:
                self.is_streaming = False

    def reset_streaming(self) -> None:
        """Inside :meth:`streaming`: forget the past, so that the next chunk starts a new signal."""
        streaming_layers.reset_streaming(self)

    @staticmethod
    def get_pretrained(name_or_path: str, device: tp.Union[str, torch.device] = 'cpu') -> 'CompressionModel':
        """Load an exported model file or a pretrained model (``//pretrained/encodec_24khz``), in eval
        mode on `device`. See :func:`audiogen_lab.models.loaders.load_compression_model`."""
        from .loaders import load_compression_model
        return load_compression_model(name_or_path, device=device)
