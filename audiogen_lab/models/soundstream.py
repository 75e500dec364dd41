"""SoundStream (Zeghidour et al., 2021): a causal convolutional codec with residual vector quantization
and quantizer dropout, the codec AudioLM and MusicLM were built on."""
from __future__ import annotations

from ..modules.soundstream import SoundStreamDecoder, SoundStreamEncoder
from ..quantization.base import BaseQuantizer
from .encodec import EncodecModel


class SoundStreamModel(EncodecModel):
    """SoundStream encoder -> quantizer -> decoder on audio [B, channels, T]; the same contract (codes,
    bandwidth, streaming-friendly padding, exports) as :class:`EncodecModel`, of which it is the
    SoundStream-shaped instance: causal by default and never renormalised (the paper has no input
    normalisation, so codes depend on the absolute level).

    Args:
        encoder: a :class:`SoundStreamEncoder`, audio [B, channels, T] -> latents [B, D, T / hop].
        decoder: a :class:`SoundStreamDecoder`, latents [B, D, T'] -> audio [B, channels, T' * hop].
        quantizer: any quantizer of latents [B, D, T] (residual VQ with quantizer dropout in the paper).
        frame_rate, sample_rate, channels: as :class:`EncodecModel`.
        causal: whether the encoder and decoder are causal (recorded; they are built causal by default).
    """

    def __init__(self, encoder: SoundStreamEncoder, decoder: SoundStreamDecoder, quantizer: BaseQuantizer,
                 frame_rate: float, sample_rate: int, channels: int, causal: bool = True):
        super().__init__(encoder, decoder, quantizer, frame_rate=frame_rate, sample_rate=sample_rate,
                         channels=channels, causal=causal, renormalize=False, pad_to_hop=True)
