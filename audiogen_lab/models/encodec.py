"""EnCodec: a convolutional autoencoder with a quantized bottleneck (Défossez et al., 2022)."""
from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..quantization.base import BaseQuantizer, QuantizedResult
from .compression import CompressionModel, EncodeResult


class EncodecModel(CompressionModel):
    """Encoder -> quantizer -> decoder on audio [B, channels, T].

    Inputs are padded with zeros to a multiple of the hop (``sample_rate / frame_rate``) before
    encoding, so T samples give ``ceil(T / hop)`` frames; `forward` trims its reconstruction back to T.

    Args:
        encoder: audio [B, channels, T] -> latents [B, D, T / hop].
        decoder: latents [B, D, T'] -> audio [B, channels, T' * hop].
        quantizer: quantizer of the latents.
        frame_rate: latent frames per second; ``sample_rate / frame_rate`` must be an integer.
        sample_rate: audio sample rate.
        channels: audio channels.
        causal: the encoder and decoder are causal (recorded for users; no renormalisation allowed).
        renormalize: divide each item by its RMS (over time, of the channel mean) before encoding; the
            RMS (+1e-8) is returned as `scale` [B, 1] and multiplied back after decoding.
        pad_to_hop: zero-pad inputs to a multiple of the hop before the encoder. With False the
            convolutions complete their last window themselves with their own `pad_mode` (as in Meta's
            released EnCodec models); both give ``ceil(T / hop)`` frames.

    A causal model streams (see :meth:`streaming`)::

        with model.streaming(batch_size=1):
            for chunk in chunks:                  # [1, C, n * hop] each, n >= 1
                codes = model.encode(chunk)[0]    # [1, K, n]: the offline codes of these frames
                audio = model.decode(codes)       # [1, C, n * hop]: the offline samples of these frames

    Encoded chunks must hold whole frames (a multiple of the hop): the offline encoder pads only the
    end of the signal, which a stream never knows. Decoded chunks may hold any number of frames. Each
    transposed convolution keeps the overlap its last frames add to the next ones; offline trims it
    after the last frame, so the concatenated streamed audio is the offline decode, with nothing left
    to flush when the block ends.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, quantizer: BaseQuantizer, frame_rate: float,
                 sample_rate: int, channels: int, causal: bool = False, renormalize: bool = False,
                 pad_to_hop: bool = True):
        super().__init__()
        if causal and renormalize:
            raise ValueError("renormalize=True needs the RMS of the whole input and is not causal: "
                             "set renormalize=False for a causal model.")
        assert frame_rate > 0 and sample_rate > 0 and channels >= 1, \
            f"frame_rate, sample_rate and channels must be positive, got {frame_rate}, {sample_rate}, {channels}"
        self.encoder = encoder
        self.decoder = decoder
        self.quantizer = quantizer
        self._frame_rate = float(frame_rate)
        self._sample_rate = int(sample_rate)
        self._channels = int(channels)
        self.causal = causal
        self.renormalize = renormalize
        self.pad_to_hop = pad_to_hop
        hop = self.hop_length  # checks that the hop is an integer
        encoder_hop = getattr(encoder, 'hop_length', hop)
        assert encoder_hop == hop, \
            f"encoder hop ({encoder_hop}) does not match sample_rate / frame_rate ({hop}): fix frame_rate"

    # -- properties ----------------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def frame_rate(self) -> float:
        return self._frame_rate

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def cardinality(self) -> int:
        if self.is_continuous:
            self._no_codebooks("codebook cardinality")
        return self.quantizer.cardinality

    @property
    def num_codebooks(self) -> int:
        if self.is_continuous:
            self._no_codebooks("codebooks")
        return self.quantizer.num_codebooks

    @property
    def total_codebooks(self) -> int:
        if self.is_continuous:
            self._no_codebooks("codebooks")
        return self.quantizer.total_codebooks

    def set_num_codebooks(self, n: int) -> None:
        if self.is_continuous:
            self._no_codebooks("codebooks to select")
        self.quantizer.set_num_codebooks(n)

    @property
    def latent_dim(self) -> tp.Optional[int]:
        return getattr(self.encoder, "dimension", None)

    @property
    def is_continuous(self) -> bool:
        return self.quantizer.is_continuous

    # -- processing ----------------------------------------------------------------------------------

    def _check_audio(self, x: torch.Tensor) -> None:
        assert x.dim() == 3 and x.shape[1] == self.channels, \
            f"expected audio [B, {self.channels}, T], got shape {tuple(x.shape)}"

    def check_streamable(self) -> None:
        if not self.causal:
            raise ValueError(f"{type(self).__name__} was built with causal=False: its encoder and decoder look at "
                             "future samples, so it cannot stream. Stream a causal model (encodec.causal=true), "
                             "or code long audio with audiogen_lab.models.chunked.reconstruct_long.")
        super().check_streamable()

    def _pad_to_hop(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            if x.shape[-1] % self.hop_length:
                raise ValueError(f"A streamed chunk must hold whole frames: {x.shape[-1]} samples is not a multiple "
                                 f"of the hop ({self.hop_length} samples); only the end of a signal can be padded, "
                                 "so pad the last chunk yourself and trim the decoded audio.")
            return x
        if not self.pad_to_hop:
            return x
        extra = -x.shape[-1] % self.hop_length
        return F.pad(x, (0, extra)) if extra else x

    def preprocess(self, x: torch.Tensor) -> EncodeResult:
        """With `renormalize`: x / RMS per item, and the scale [B, 1]; identity otherwise."""
        if not self.renormalize:
            return x, None
        with torch.autocast(device_type=x.device.type, enabled=False):
            mono = x.float().mean(dim=1, keepdim=True)
            scale = mono.pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8
            return x / scale, scale[:, :, 0]

    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(self._pad_to_hop(x)))

    def decode_unscaled(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decode_latent(codes))

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """Reconstruction [B, C, T] in `result.x`, with the quantizer's codes, bandwidth, penalty,
        metrics and layer outputs."""
        self._check_audio(x)
        length = x.shape[-1]
        x, scale = self.preprocess(x)
        latents = self.encoder(self._pad_to_hop(x))
        result = self.quantizer(latents, self.frame_rate)
        audio = self.decoder(result.x)[..., :length]
        result.x = self.postprocess(audio, scale)
        return result

    def encode(self, x: torch.Tensor) -> EncodeResult:
        """`x` [B, C, T] -> (codes [B, K, ceil(T / hop)] (latents when continuous), scale [B, 1] | None)."""
        self._check_audio(x)
        x, scale = self.preprocess(x)
        return self.encode_unscaled(x), scale

    def decode(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Codes [B, K, T'] -> audio [B, C, T' * hop], rescaled by `scale` [B, 1] when given."""
        return self.postprocess(self.decode_unscaled(codes), scale)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T'] -> quantized latents [B, D, T']."""
        return self.quantizer.decode(codes)
