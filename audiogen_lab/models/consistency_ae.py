"""Consistency autoencoder (Music2Latent-style): audio <-> continuous latents, decoded in one step.

Audio [B, C, T] is folded to mono items [B*C, T], turned into the compressed complex spectrogram
[B*C, 2, F, N] (:class:`~audiogen_lab.modules.complex_spec.ComplexSpectrogram`), encoded to latents
[B*C, D, N/8] and unfolded to [B, C*D, N/8]. The decoder is a consistency model: from noise at
`sigma_max` and the latents it predicts the clean spectrogram, in one step or several.
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F
from einops import rearrange

from ..modules import consistency as cm
from ..modules.complex_spec import ComplexSpectrogram
from ..modules.consistency_net import ConsistencyDecoder, ConsistencyEncoder
from ..quantization.base import QuantizedResult
from .compression import CompressionModel, EncodeResult

BITS_PER_VALUE = 32  # latents are float32: the bandwidth reported for a continuous model


class ConsistencyAE(CompressionModel):
    """Continuous-latent compression model trained by consistency training.

    Args:
        encoder: spectrogram [B, 2, F, N] -> latents [B, D, N / time_downsampling].
        decoder: noise-conditioned U-Net, with ``prepare(latents) -> pyramid``.
        sample_rate: audio sample rate (Hz).
        channels: audio channels C (each one is coded on its own, folded into the batch).
        n_fft, hop_length, alpha, beta: the spectrogram representation (window n_fft, amplitude
            compression ``beta * |c| ** alpha``).
        sigma_data, sigma_min, sigma_max, rho: the noise schedule and preconditioning.
        decode_steps: denoising steps of :meth:`decode` when not given (1: one-step decoding).
        channels_last: keep the 2-D convolution weights in the channels-last memory format, so that the
            convolutions (and the activations they produce) run in the layout oneDNN and cuDNN are fastest
            in; the values computed are the same up to float rounding (on CPU about 0.75x the time of
            encode, decode and a training step at the reference scale).
    """

    family = "compression"

    def __init__(self, encoder: ConsistencyEncoder, decoder: ConsistencyDecoder, *, sample_rate: int,
                 channels: int = 1, n_fft: int = 2048, hop_length: int = 512, alpha: float = 0.65,
                 beta: float = 0.34, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0, decode_steps: int = 1, channels_last: bool = True):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.spec = ComplexSpectrogram(n_fft=n_fft, hop_length=hop_length, alpha=alpha, beta=beta)
        if self.spec.frequency_bins != encoder.frequency_bins or decoder.frequency_bins != encoder.frequency_bins:
            raise ValueError(f"n_fft={n_fft} gives {self.spec.frequency_bins} frequency bins but the encoder takes "
                             f"{encoder.frequency_bins} and the decoder {decoder.frequency_bins}: set "
                             "consistency_net.frequency_bins to n_fft // 2.")
        assert decode_steps >= 1, f"decode_steps must be >= 1, got {decode_steps}"
        self._sample_rate, self._channels = int(sample_rate), int(channels)
        self.precond = cm.EDMPreconditioning(sigma_data=sigma_data, sigma_min=sigma_min)
        self.schedule = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        self.decode_steps = decode_steps
        self.latent_channels = encoder.latent_dim
        if channels_last:
            self.to(memory_format=torch.channels_last)  # only the 4-D tensors change layout

    # -- properties -----------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self._channels

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self._sample_rate / self.hop_length

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame: spectrogram hop x the encoder's time downsampling."""
        return self.spec.hop_length * self.encoder.time_downsampling

    @property
    def latent_dim(self) -> int:
        return self.latent_channels * self._channels

    @property
    def is_continuous(self) -> bool:
        return True

    # -- representation -------------------------------------------------------------------------------
    def to_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Audio [B, C, T] -> spectrograms [B*C, 2, F, N], zero-padded on the right to a whole number of
        latent frames (N = ceil(T / hop_length) * time_downsampling)."""
        assert x.dim() == 3 and x.shape[1] == self._channels, \
            f"expected audio [B, {self._channels}, T], got shape {tuple(x.shape)}"
        frames = max(1, math.ceil(x.shape[-1] / self.hop_length))
        x = F.pad(x, (0, frames * self.hop_length - x.shape[-1]))
        return self.spec.encode(rearrange(x, 'b c t -> (b c) t'))

    def from_spectrogram(self, spec: torch.Tensor, length: tp.Optional[int] = None) -> torch.Tensor:
        """Spectrograms [B*C, 2, F, N] -> audio [B, C, length or N * spectrogram hop]."""
        wav = self.spec.decode(spec.float(), length)
        return rearrange(wav, '(b c) t -> b c t', c=self._channels)

    # -- coding ---------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> EncodeResult:
        """Audio [B, C, T] -> (latents [B, C*D, ceil(T / hop_length)] in [-1, 1], None)."""
        latents = self.encoder(self.to_spectrogram(x))
        return rearrange(latents, '(b c) d t -> b (c d) t', c=self._channels), None

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's features before the bottleneck: audio [B, C, T] -> [B, C*D_feat, T']."""
        features = self.encoder.extract_features(self.to_spectrogram(x))
        return rearrange(features, '(b c) d t -> b (c d) t', c=self._channels)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Continuous latents are their own decoder input: identity."""
        return codes

    def denoiser(self, pyramid: tp.Sequence[torch.Tensor]) -> cm.DenoiseFn:
        """`(x_noisy [B, 2, F, N], sigma [B]) -> x_hat`: the preconditioned decoder given the latent pyramid."""
        def net(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            return self.decoder(x_in, c_noise, pyramid)
        return lambda x_noisy, sigma: self.precond.denoise(net, x_noisy, sigma)

    def _spec_shape(self, latents: torch.Tensor) -> tp.Tuple[int, int, int, int]:
        return (latents.shape[0], 2, self.spec.frequency_bins, latents.shape[-1] * self.encoder.time_downsampling)

    def decode(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None, *,
               steps: tp.Optional[int] = None, generator: tp.Optional[torch.Generator] = None,
               seed: tp.Optional[int] = None) -> torch.Tensor:
        """Latents [B, C*D, T'] -> audio [B, C, T' * hop_length].

        Args:
            steps: denoising steps (default ``decode_steps``, 1: one-step decoding).
            generator / seed: the noise source; a seed makes decoding reproducible (default: the global RNG).
        The latent pyramid of the decoder is computed once and reused by every step.
        """
        assert scale is None, "ConsistencyAE.encode returns no scale: decode takes none"
        assert codes.dim() == 3 and codes.shape[1] == self.latent_dim, \
            f"expected latents [B, {self.latent_dim}, T], got shape {tuple(codes.shape)}"
        latents = rearrange(codes, 'b (c d) t -> (b c) d t', c=self._channels)
        if generator is None and seed is not None:
            generator = torch.Generator(device=latents.device).manual_seed(int(seed))
        pyramid = self.decoder.prepare(latents)
        noise = torch.randn(self._spec_shape(latents), generator=generator, device=latents.device,
                            dtype=torch.float32)
        steps = self.decode_steps if steps is None else int(steps)
        assert steps >= 1, f"steps must be >= 1, got {steps}"
        spec = cm.sample(self.denoiser(pyramid), noise, steps=steps, generator=generator,
                         **self.schedule)
        return self.from_spectrogram(spec)

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """One-step reconstruction of `x` [B, C, T] with fixed noise (seed 0): result.x [B, C, T]."""
        latents, _ = self.encode(x)
        y = self.decode(latents, seed=0)[..., :x.shape[-1]]
        bandwidth = torch.tensor(self.latent_dim * self.frame_rate * BITS_PER_VALUE / 1000, device=x.device)
        return QuantizedResult(x=y, codes=None, bandwidth=bandwidth, penalty=None, metrics={})  # type: ignore[arg-type]

    # -- training ------------------------------------------------------------------------------------
    def consistency_loss(self, x: torch.Tensor, delta: float, generator: tp.Optional[torch.Generator] = None,
                         **loss_kwargs: tp.Any) -> tp.Tuple[torch.Tensor, tp.Dict[str, torch.Tensor]]:
        """The consistency-training loss of audio `x` [B, C, T] (the encoder and decoder trained end to end).

        Noise indices are drawn log-normally (``p_mean``, ``p_std`` in `loss_kwargs`) and the noise from
        `generator`; the student is at index ``u + delta`` and the stop-gradient teacher, the same network, at
        ``u``. Returns the loss and detached metrics (see :func:`~audiogen_lab.modules.consistency.consistency_loss`).
        """
        sampler = {key: loss_kwargs.pop(key) for key in ('p_mean', 'p_std') if key in loss_kwargs}
        spec = self.to_spectrogram(x)
        latents = self.encoder(spec)
        pyramid = self.decoder.prepare(latents)
        u = cm.sample_noise_index(spec.shape[0], generator, delta=delta, device=spec.device, **sampler,
                                  **self.schedule)
        noise = torch.randn(spec.shape, generator=generator, device=spec.device, dtype=spec.dtype)
        return cm.consistency_loss(self.denoiser(pyramid), spec, u, delta, noise, **loss_kwargs, **self.schedule)
