"""Spectral reconstruction losses: single- and multi-scale mel distances, multi-resolution STFT loss.

All spectrograms are computed in fp32 with autocast disabled, whatever the precision of the model
that produced the audio. Inputs are waveforms `[B, C, T]`; channels are treated as extra batch items.
"""
from __future__ import annotations

import math
import typing as tp
import warnings

import torch
import torchaudio
from einops import rearrange
from torch import nn
from torch.nn import functional as F


def _check_waveforms(x: torch.Tensor, y: torch.Tensor) -> None:
    assert x.dim() == 3, f"Expected a waveform [B, C, T], got shape {tuple(x.shape)}."
    assert x.shape == y.shape, (
        f"Estimate and reference must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")


def _check_length(length: int, n_fft: int) -> None:
    if length <= n_fft // 2:
        raise ValueError(
            f"Audio of {length} samples is too short for an STFT with n_fft={n_fft} (reflect padding "
            f"needs more than {n_fft // 2} samples): use longer segments or smaller FFT sizes.")


class MelSpectrogram(nn.Module):
    """Magnitude mel spectrogram of a waveform, in fp32, optionally log10-compressed.

    Args:
        sample_rate: sample rate of the input audio.
        n_fft, hop_length, win_length: STFT parameters (Hann window, centred frames, reflect padding).
        n_mels: number of mel bands.
        f_min, f_max: frequency range of the mel filterbank (`f_max=None` means Nyquist).
        log: return `log10(max(mel, floor_level))` instead of the linear magnitude.
        normalized: normalize the STFT by the window norm, which makes magnitudes comparable
            across window sizes.
        floor_level: floor applied before the log, which bounds the penalty on silent bins.

    Shapes: `[B, C, T]` -> `[B, C, n_mels, frames]`.
    """

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 n_mels: int = 80, f_min: float = 0.0, f_max: tp.Optional[float] = None, log: bool = True,
                 normalized: bool = False, floor_level: float = 1e-5) -> None:
        super().__init__()
        assert win_length <= n_fft, f"win_length ({win_length}) must not exceed n_fft ({n_fft})."
        assert floor_level > 0, f"floor_level must be positive, got {floor_level}."
        self.n_fft = n_fft
        self.log = log
        self.floor_level = floor_level
        with warnings.catch_warnings():
            # Small windows give fewer FFT bins than mel bands at low frequency: some bands are empty.
            # They are zero for both signals, so they add nothing to a distance; the warning is noise.
            warnings.filterwarnings("ignore", message=".*filterbank has all zero values.*")
            self.transform = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                f_min=f_min, f_max=f_max, n_mels=n_mels, window_fn=torch.hann_window, power=1.0,
                normalized=normalized, center=True, pad_mode="reflect")

    def _magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """|STFT| of `x` [N, T] -> [N, n_fft // 2 + 1, frames], as torchaudio's Spectrogram computes it.

        The window-norm normalisation is applied to the window rather than to the complex STFT: the
        STFT is linear in the window, so the values are the same, one real multiply per window sample
        instead of a complex division over the whole spectrogram (and its backward).
        """
        spec = self.transform.spectrogram
        window = spec.window
        if spec.normalized:
            window = window / window.pow(2.0).sum().sqrt()
        stft = torch.stft(x, spec.n_fft, spec.hop_length, spec.win_length, window, center=spec.center,
                          pad_mode=spec.pad_mode, onesided=spec.onesided, return_complex=True)
        return stft.abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3, f"Expected a waveform [B, C, T], got shape {tuple(x.shape)}."
        _check_length(x.shape[-1], self.n_fft)
        with torch.autocast(device_type=x.device.type, enabled=False):
            magnitude = self._magnitude(rearrange(x.float(), "b c t -> (b c) t"))
            mel = torch.matmul(magnitude.transpose(-1, -2), self.transform.mel_scale.fb).transpose(-1, -2)
            if self.log:
                mel = torch.log10(mel.clamp(min=self.floor_level))
        return rearrange(mel, "(b c) m f -> b c m f", b=x.shape[0])


class MelSpectrogramL1Loss(nn.Module):
    """Mean absolute difference between the (log-)mel spectrograms of estimate and reference.

    Arguments are those of :class:`MelSpectrogram`. `forward(x, y)` takes two `[B, C, T]`
    waveforms and returns a scalar.
    """

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 n_mels: int = 80, f_min: float = 0.0, f_max: tp.Optional[float] = None, log: bool = True,
                 normalized: bool = False, floor_level: float = 1e-5) -> None:
        super().__init__()
        self.melspec = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                      n_mels=n_mels, f_min=f_min, f_max=f_max, log=log,
                                      normalized=normalized, floor_level=floor_level)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_waveforms(x, y)
        return F.l1_loss(self.melspec(x), self.melspec(y))


class MultiScaleMelSpectrogramLoss(nn.Module):
    """Multi-scale log-mel reconstruction loss (the frequency-domain term of EnCodec).

    For every scale `i` in `range(range_start, range_end)`, the window and FFT size are `2**i` and the
    hop is `2**i // 4`. With `S_i` the log10-mel spectrogram at scale `i`:

        loss = sum_i  mean|S_i(x) - S_i(y)|  +  alpha_i * mean((S_i(x) - S_i(y))**2)

    with `alpha_i = sqrt(2**i - 1)` if `alphas` else `1`, so that the squared term, which is most
    sensitive at large windows, is weighted up where the spectra are the most resolved in frequency.

    Args:
        sample_rate: sample rate of the input audio.
        range_start, range_end: log2 of the smallest and (excluded) largest window size.
        n_mels: mel bands per scale.
        f_min, f_max: frequency range of the filterbanks.
        normalized: normalize each STFT by its window norm, and divide the total by
            `sum_i (1 + alpha_i)`, so that the loss is a weighted average over scales.
        alphas: use the scale-dependent `alpha_i` above instead of 1.
        floor_level: floor applied before the log.

    `forward(x, y)` takes two `[B, C, T]` waveforms (T > 2**(range_end - 2)) and returns a scalar.
    """

    def __init__(self, sample_rate: int, range_start: int = 6, range_end: int = 11, n_mels: int = 64,
                 f_min: float = 0.0, f_max: tp.Optional[float] = None, normalized: bool = False,
                 alphas: bool = True, floor_level: float = 1e-5) -> None:
        super().__init__()
        assert 1 < range_start < range_end, (
            f"Need 1 < range_start < range_end, got range_start={range_start}, range_end={range_end}.")
        self.normalized = normalized
        self.melspecs = nn.ModuleList()
        self.alphas: tp.List[float] = []
        for i in range(range_start, range_end):
            size = 2 ** i
            self.melspecs.append(MelSpectrogram(
                sample_rate, n_fft=size, hop_length=size // 4, win_length=size, n_mels=n_mels, f_min=f_min,
                f_max=f_max, log=True, normalized=normalized, floor_level=floor_level))
            self.alphas.append(math.sqrt(size - 1) if alphas else 1.0)
        self.total_weight = sum(1.0 + alpha for alpha in self.alphas)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_waveforms(x, y)
        loss = torch.zeros((), device=x.device)
        for melspec, alpha in zip(self.melspecs, self.alphas):
            diff = melspec(x) - melspec(y)  # one difference for both terms (l1_loss and mse_loss)
            loss = loss + diff.abs().mean() + alpha * diff.square().mean()
        if self.normalized:
            loss = loss / self.total_weight
        return loss


class STFTMagnitude(nn.Module):
    """Linear STFT magnitude in fp32 (Hann window, centred frames), floored at `sqrt(eps)` so that its
    log and its gradient stay finite on silence. Shapes: `[B, C, T]` -> `[B, C, n_fft // 2 + 1, frames]`.
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, eps: float = 1e-7) -> None:
        super().__init__()
        assert win_length <= n_fft, f"win_length ({win_length}) must not exceed n_fft ({n_fft})."
        self.n_fft = n_fft
        self.eps = eps
        self.transform = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, window_fn=torch.hann_window,
            power=2.0, center=True, pad_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_length(x.shape[-1], self.n_fft)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.transform(x.float()).clamp(min=self.eps).sqrt()


class MRSTFTLoss(nn.Module):
    """Multi-resolution STFT loss: spectral convergence plus log-magnitude distance.

    At each resolution, with magnitudes `X` (estimate) and `Y` (reference) of shape `[B*C, F, frames]`:

        sc  = mean over items of ||Y - X||_F / ||Y||_F
        mag = mean |log Y - log X|

    and `loss = mean over resolutions of (factor_sc * sc + factor_mag * mag)`.

    Args:
        fft_sizes, hop_sizes, win_lengths: one entry per resolution.
        factor_sc: weight of the spectral convergence term.
        factor_mag: weight of the log-magnitude term.

    `forward(x, y)` takes the estimate and reference `[B, C, T]` and returns a scalar.
    """

    def __init__(self, fft_sizes: tp.Sequence[int] = (1024, 2048, 512), hop_sizes: tp.Sequence[int] = (120, 240, 50),
                 win_lengths: tp.Sequence[int] = (600, 1200, 240), factor_sc: float = 0.1,
                 factor_mag: float = 0.1) -> None:
        super().__init__()
        assert len(fft_sizes) == len(hop_sizes) == len(win_lengths), (
            f"fft_sizes, hop_sizes and win_lengths need one entry per resolution, got lengths "
            f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}.")
        self.factor_sc = factor_sc
        self.factor_mag = factor_mag
        self.stfts = nn.ModuleList([
            STFTMagnitude(n_fft, hop, win) for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths)])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_waveforms(x, y)
        loss = torch.zeros((), device=x.device)
        for stft in self.stfts:
            mag_x = rearrange(stft(x), "b c f t -> (b c) f t")
            mag_y = rearrange(stft(y), "b c f t -> (b c) f t")
            diff_norm = torch.linalg.vector_norm(mag_y - mag_x, dim=(1, 2))
            ref_norm = torch.linalg.vector_norm(mag_y, dim=(1, 2))
            sc = (diff_norm / ref_norm).mean()
            mag = F.l1_loss(torch.log(mag_x), torch.log(mag_y))
            loss = loss + self.factor_sc * sc + self.factor_mag * mag
        return loss / len(self.stfts)
