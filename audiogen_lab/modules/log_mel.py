"""Normalised log-mel spectrograms of variable-length audio, with their valid lengths.

Frames are taken without centring (frame ``i`` covers samples ``[i * hop, i * hop + n_fft)``), so a frame
is valid exactly when it lies inside an item's real samples. Frames past an item's length are set to the
fill value 0: a clip zero-padded into a batch gives the same valid frames, and the same fill after them,
as the clip on its own.
"""
from __future__ import annotations

import typing as tp

import torch
import torchaudio
from torch import nn

from ..data.batch import lengths_to_mask


class LogMelFrontend(nn.Module):
    """Audio ``[B, T]`` or ``[B, 1, T]`` -> normalised log-mel ``[B, n_mels, F]`` and frame lengths ``[B]``.

    The spectrogram is computed in float32 (outside autocast): ``(log(mel + eps) - mean) / std``.

    Args:
        sample_rate: rate of the input audio.
        n_fft: FFT size (and window length).
        hop_length: samples between frames.
        n_mels: mel bands.
        mean, std: normalisation of the log-mel values (about 0 mean, unit spread on music).
        eps: floor inside the log.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 64,
                 mean: float = -4.0, std: float = 4.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.mean, self.std, self.eps = mean, std, eps
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, center=False, power=2.0)

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Valid frames ``[B]`` of items holding `samples` ``[B]`` real samples (0 when shorter than a frame)."""
        return torch.div(samples - self.n_fft, self.hop_length, rounding_mode="floor").add(1).clamp(min=0)

    def forward(self, wav: torch.Tensor, lengths: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Args: `wav` ``[B, T]`` or ``[B, 1, T]``; `lengths` real samples per item ``[B]`` (default: all T).

        Returns: log-mel ``[B, n_mels, F]`` (0 on frames past each item's length) and frame lengths ``[B]``.
        """
        if wav.dim() == 3:
            if wav.shape[1] != 1:
                raise ValueError(f"LogMelFrontend takes mono audio [B, 1, T]; got {wav.shape[1]} channels.")
            wav = wav[:, 0]
        if wav.dim() != 2:
            raise ValueError(f"LogMelFrontend takes audio [B, T] or [B, 1, T]; got shape {tuple(wav.shape)}.")
        if wav.shape[-1] < self.n_fft:
            raise ValueError(f"Audio of {wav.shape[-1]} samples is shorter than one frame (n_fft={self.n_fft}).")
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self.melspec(wav.float())
            spec = (torch.log(mel + self.eps) - self.mean) / self.std
        frames = self.num_frames(lengths.to(wav.device)).clamp(max=spec.shape[-1])
        spec = spec.masked_fill(~lengths_to_mask(frames, spec.shape[-1])[:, None, :], 0.0)
        return spec, frames
