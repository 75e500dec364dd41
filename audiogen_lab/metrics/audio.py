"""Reconstruction metrics on waveforms: SI-SNR and mel distance, per batch item, in fp32."""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange, reduce
from torch import nn

from ..losses.sisnr import EPS, si_snr_per_row
from ..losses.spectral import MelSpectrogram


@torch.no_grad()
def si_snr(estimate: torch.Tensor, reference: torch.Tensor, epsilon: float = EPS) -> torch.Tensor:
    """Scale-invariant SNR in dB of `estimate` w.r.t. `reference`, both `[B, C, T]`, over the whole
    signal, averaged over channels. Returns `[B]`. Higher is better; a rescaled copy scores very high."""
    assert estimate.dim() == 3 and estimate.shape == reference.shape, (
        f"Expected estimate and reference [B, C, T] of the same shape, got "
        f"{tuple(estimate.shape)} and {tuple(reference.shape)}.")
    scores = si_snr_per_row(rearrange(estimate, "b c t -> (b c) t"), rearrange(reference, "b c t -> (b c) t"),
                            epsilon)
    return reduce(scores, "(b c) -> b", "mean", b=estimate.shape[0])


class MelDistance(nn.Module):
    """Fixed log-mel L1 distance between estimate and reference, per batch item.

    Arguments are those of :class:`audiogen_lab.losses.spectral.MelSpectrogram`.
    `forward(estimate [B, C, T], reference [B, C, T]) -> [B]`: mean absolute difference of the
    log10-mel spectrograms of each item. Lower is better.
    """

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 n_mels: int = 80, f_min: float = 0.0, f_max: tp.Optional[float] = None, log: bool = True,
                 normalized: bool = False, floor_level: float = 1e-5) -> None:
        super().__init__()
        self.melspec = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                      n_mels=n_mels, f_min=f_min, f_max=f_max, log=log, normalized=normalized,
                                      floor_level=floor_level)

    @torch.no_grad()
    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        assert estimate.dim() == 3 and estimate.shape == reference.shape, (
            f"Expected estimate and reference [B, C, T] of the same shape, got "
            f"{tuple(estimate.shape)} and {tuple(reference.shape)}.")
        diff = (self.melspec(estimate) - self.melspec(reference)).abs()
        return reduce(diff, "b c f t -> b", "mean")


def mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                 **kwargs: tp.Any) -> torch.Tensor:
    """Functional form of :class:`MelDistance` (keyword arguments are its options). Returns `[B]`."""
    metric = MelDistance(sample_rate, **kwargs).to(estimate.device)
    return metric(estimate, reference)
