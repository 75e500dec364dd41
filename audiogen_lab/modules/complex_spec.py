"""Invertible complex spectrogram with amplitude compression, the representation of the consistency autoencoder.

The waveform is turned into a complex STFT whose magnitudes are compressed with a power law
(`beta * |c| ** alpha`, phase kept) and whose real and imaginary parts become two channels, so that a
2-D network sees values of comparable scale across loud and quiet bins. `decode` inverts it exactly.
"""
from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _rescale_magnitude(z: torch.Tensor, power: float, gain: float, floor: float) -> torch.Tensor:
    """Map every complex value `z` to `gain * max(|z|, floor) ** (power - 1) * z`.

    Above `floor` this is `gain * |z| ** power` with the phase of `z`; below it the map is linear, so the
    value and its gradient stay finite at `z = 0` (where `|z| ** power` has an infinite slope for
    `power < 1`). The map is a strictly increasing function of `|z|`, hence invertible.

    Args:
        z: complex tensor of any shape.
    Returns:
        complex tensor of the same shape.
    """
    squared = z.real.square() + z.imag.square()
    # The clamp stops the gradient into `squared` below the floor, where sqrt and pow are singular.
    magnitude = squared.clamp(min=floor * floor).sqrt()
    return z * (gain * magnitude.pow(power - 1.0))


class ComplexSpectrogram(nn.Module):
    """Waveform [B, T] <-> compressed complex spectrogram [B, 2, F, N], exactly invertible.

    Channel 0 holds the real part and channel 1 the imaginary part of `s = beta * |c| ** alpha * c / |c|`,
    where `c` is the STFT (periodic Hann window of length `n_fft`) of the waveform.

    Frames: the waveform is zero-padded on the right to `N * hop_length` samples with
    `N = ceil(T / hop_length)`, then frame `n` is centred on sample `n * hop_length` (`n = 0 .. N - 1`,
    zero padding of `n_fft // 2` on the left). So `N = num_frames(T) = ceil(T / hop_length)`, and a
    multiple of the hop gives exactly `T / hop_length` frames (44.1 kHz, 1 s, hop 512 -> N = 87;
    65536 samples -> N = 128). `decode` returns `length_for_frames(N) = N * hop_length` samples unless a
    shorter `length` is given.

    Nyquist bin: with `drop_nyquist=True`, F = n_fft // 2 so that F is a power of two for a 2-D U-Net.
    For real audio the imaginary parts of the DC and Nyquist bins are exactly zero, so with
    `nyquist_in_dc=True` (default) the real Nyquist value is stored as the imaginary part of the DC bin
    before compression and nothing is lost. With `nyquist_in_dc=False` the Nyquist bin is discarded and
    decoded as zero: the round trip is then exact only for signals without energy at exactly fs / 2
    (white noise loses a few percent of its amplitude).

    Precision: the STFT and its inverse run outside autocast, in float32 (float64 inputs stay float64),
    whatever the input dtype; outputs are float32 for half-precision inputs.

    Multichannel audio is the caller's business: fold channels into the batch
    (`rearrange(wav, 'b c t -> (b c) t')`) and unfold the result.

    Args:
        n_fft: FFT size and window length.
        hop_length: hop between frames; at most `n_fft // 4` (75% overlap or more) so that the final
            samples, covered only by the first half of the last frames' windows, are well conditioned.
        alpha: compression exponent applied to magnitudes (0 < alpha).
        beta: gain applied after compression (0 < beta).
        drop_nyquist: drop the Nyquist bin (F = n_fft // 2) or keep it (F = n_fft // 2 + 1).
        nyquist_in_dc: when dropping, keep the Nyquist value in the imaginary part of the DC bin.
        eps: magnitude below which the compression becomes linear, to keep gradients finite at zero.
    """

    window: torch.Tensor

    def __init__(self, n_fft: int = 2048, hop_length: int = 512, alpha: float = 0.65, beta: float = 0.34,
                 drop_nyquist: bool = True, nyquist_in_dc: bool = True, eps: float = 1e-8):
        super().__init__()
        assert n_fft >= 4 and n_fft % 2 == 0, f"n_fft must be an even number >= 4, got {n_fft}"
        assert 1 <= hop_length <= n_fft // 4, (
            f"hop_length must be in [1, n_fft // 4 = {n_fft // 4}] for an exact inverse, got {hop_length}")
        assert alpha > 0 and beta > 0, f"alpha and beta must be positive, got alpha={alpha}, beta={beta}"
        assert eps > 0, f"eps must be positive, got {eps}"
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.alpha = alpha
        self.beta = beta
        self.drop_nyquist = drop_nyquist
        self.nyquist_in_dc = nyquist_in_dc
        self.eps = eps
        self.register_buffer('window', torch.hann_window(n_fft, periodic=True), persistent=False)

    @property
    def frequency_bins(self) -> int:
        """Number of frequency rows F of the representation."""
        return self.n_fft // 2 + (0 if self.drop_nyquist else 1)

    def num_frames(self, length: int) -> int:
        """Number of frames N = ceil(length / hop_length) for a waveform of `length` samples."""
        assert length >= 1, f"length must be >= 1, got {length}"
        return -(-length // self.hop_length)

    def length_for_frames(self, frames: int) -> int:
        """Number of samples, `frames * hop_length`, that `decode` returns by default for `frames` frames."""
        assert frames >= 1, f"frames must be >= 1, got {frames}"
        return frames * self.hop_length

    def _float_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.promote_types(x.dtype, torch.float32)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, T] -> compressed spectrogram [B, 2, F, N] with N = ceil(T / hop_length)."""
        assert wav.dim() == 2, (
            f"expected a waveform [B, T], got shape {tuple(wav.shape)}; fold channels into the batch first")
        length = wav.shape[-1]
        frames = self.num_frames(length)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.to(self._float_dtype(wav))
            wav = F.pad(wav, (0, self.length_for_frames(frames) - length))
            stft = torch.stft(wav, self.n_fft, self.hop_length, window=self.window.to(wav.dtype), center=True,
                              pad_mode='constant', return_complex=True)
            stft = stft[..., :frames]  # the extra frame centred on the last padded sample is not needed
            if self.drop_nyquist:
                stft = self._fold_nyquist(stft)
            spec = _rescale_magnitude(stft, self.alpha, self.beta, self.eps)
            return rearrange(torch.view_as_real(spec), 'b f n ri -> b ri f n').contiguous()

    def decode(self, spec: torch.Tensor, length: tp.Optional[int] = None) -> torch.Tensor:
        """Compressed spectrogram [B, 2, F, N] -> waveform [B, length] (default length N * hop_length)."""
        assert spec.dim() == 4 and spec.shape[1] == 2, f"expected [B, 2, F, N], got shape {tuple(spec.shape)}"
        assert spec.shape[2] == self.frequency_bins, (
            f"expected {self.frequency_bins} frequency bins for n_fft={self.n_fft}, "
            f"drop_nyquist={self.drop_nyquist}, got {spec.shape[2]}")
        frames = spec.shape[-1]
        full_length = self.length_for_frames(frames)
        if length is None:
            length = full_length
        assert 1 <= length <= full_length, (
            f"length must be in [1, {full_length}] for {frames} frames of hop {self.hop_length}, got {length}")
        with torch.autocast(device_type=spec.device.type, enabled=False):
            spec = spec.to(self._float_dtype(spec))
            spec = torch.view_as_complex(rearrange(spec, 'b ri f n -> b f n ri').contiguous())
            # Inverse of beta * m ** alpha, with the same linear piece below eps (threshold beta * eps ** alpha).
            stft = _rescale_magnitude(spec, 1.0 / self.alpha, self.beta ** (-1.0 / self.alpha),
                                      self.beta * self.eps ** self.alpha)
            if self.drop_nyquist:
                stft = self._unfold_nyquist(stft)
            wav = torch.istft(stft, self.n_fft, self.hop_length, window=self.window.to(spec.real.dtype),
                              center=True, length=full_length)
        return wav[..., :length]

    def _fold_nyquist(self, stft: torch.Tensor) -> torch.Tensor:
        """[B, n_fft // 2 + 1, N] complex -> [B, n_fft // 2, N], optionally keeping Nyquist in the DC imaginary part."""
        kept = stft[:, :-1]
        if not self.nyquist_in_dc:
            return kept
        dc = torch.complex(stft[:, :1].real, stft[:, -1:].real)
        return torch.cat([dc, kept[:, 1:]], dim=1)

    def _unfold_nyquist(self, stft: torch.Tensor) -> torch.Tensor:
        """[B, n_fft // 2, N] complex -> [B, n_fft // 2 + 1, N], the inverse of `_fold_nyquist`."""
        if self.nyquist_in_dc:
            zero = torch.zeros_like(stft[:, :1].real)
            dc = torch.complex(stft[:, :1].real, zero)
            nyquist = torch.complex(stft[:, :1].imag, zero)
            return torch.cat([dc, stft[:, 1:], nyquist], dim=1)
        return torch.cat([stft, torch.zeros_like(stft[:, :1])], dim=1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Same as `encode`: [B, T] -> [B, 2, F, N]."""
        return self.encode(wav)
