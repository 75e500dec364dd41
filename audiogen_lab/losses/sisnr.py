"""Scale-invariant signal-to-noise ratio (SI-SNR), as a differentiable function and as a loss."""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

EPS = torch.finfo(torch.float32).eps
#: mean power under which a reference segment counts as digital silence (about -80 dBFS)
SILENCE_POWER = 1e-8


def si_snr_per_row(estimate: torch.Tensor, reference: torch.Tensor, epsilon: float = EPS) -> torch.Tensor:
    """SI-SNR in dB of each row of `[N, L]` signals, in fp32. Returns `[N]`.

    Both signals are made zero-mean, the estimate is projected on the reference,
    `s = <e, r> r / ||r||^2`, and `SI-SNR = 10 log10(||s||^2 / ||e - s||^2)`;
    `epsilon` keeps silent rows finite.
    """
    assert estimate.shape == reference.shape and estimate.dim() == 2, (
        f"Expected two [N, L] tensors of the same shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}.")
    with torch.autocast(device_type=estimate.device.type, enabled=False):
        est = estimate.float() - estimate.float().mean(dim=-1, keepdim=True)
        ref = reference.float() - reference.float().mean(dim=-1, keepdim=True)
        dot = (est * ref).sum(dim=-1, keepdim=True)
        target = dot * ref / (ref.pow(2).sum(dim=-1, keepdim=True) + epsilon)
        noise = est - target
        ratio = (target.pow(2).sum(dim=-1) + epsilon) / (noise.pow(2).sum(dim=-1) + epsilon)
        return 10 * torch.log10(ratio)


def _segments(x: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """Cut `[N, T]` into overlapping frames `[N, S, length]`, zero-padding the tail to a whole frame."""
    total = x.shape[-1]
    if total <= length:
        return x.unsqueeze(1)
    num_frames = 1 + -(-(total - length) // stride)  # ceil division
    padded_length = (num_frames - 1) * stride + length
    x = F.pad(x, (0, padded_length - total))
    return x.unfold(-1, length, stride)


class SISNR(nn.Module):
    """Negative SI-SNR loss (in dB), computed on overlapping segments and averaged.

    Long signals are cut into segments of `segment` seconds with the given overlap, so that a slow
    gain drift does not dominate the scale-invariant projection. Each channel is scored separately.

    Args:
        sample_rate: sample rate of the audio.
        segment: segment duration in seconds (signals shorter than that form a single segment;
            None scores the whole signal at once).
        overlap: overlap between consecutive segments, in [0, 1).
        epsilon: numerical floor for energies.

    `forward(estimate, reference)` takes `[B, C, T]` tensors and returns a scalar: `-mean SI-SNR`
    over the segments whose reference is audible (mean power above `SILENCE_POWER`). SI-SNR is
    undefined on digital silence, and such segments would otherwise dominate the mean with huge values.
    """

    def __init__(self, sample_rate: int = 16000, segment: tp.Optional[float] = 20.0, overlap: float = 0.5,
                 epsilon: float = EPS) -> None:
        super().__init__()
        assert 0.0 <= overlap < 1.0, f"overlap must be in [0, 1), got {overlap}."
        self.sample_rate = sample_rate
        self.segment = segment
        self.overlap = overlap
        self.epsilon = epsilon

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        assert estimate.dim() == 3 and estimate.shape == reference.shape, (
            f"Expected estimate and reference [B, C, T] of the same shape, got "
            f"{tuple(estimate.shape)} and {tuple(reference.shape)}.")
        est = rearrange(estimate, "b c t -> (b c) t")
        ref = rearrange(reference, "b c t -> (b c) t")
        if self.segment is not None:
            length = max(1, int(self.segment * self.sample_rate))
            stride = max(1, int(length * (1 - self.overlap)))
            est = rearrange(_segments(est, length, stride), "n s l -> (n s) l")
            ref = rearrange(_segments(ref, length, stride), "n s l -> (n s) l")
        scores = si_snr_per_row(est, ref, self.epsilon)
        audible = ref.detach().float().pow(2).mean(dim=-1) > SILENCE_POWER
        if not bool(audible.any()):
            return scores.sum() * 0.0  # SI-SNR is undefined on silence: no signal to learn from
        return -scores[audible].mean()
