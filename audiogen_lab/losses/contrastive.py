"""Contrastive losses between paired audio and text embeddings (MuLaN-style joint embedding).

Inputs are L2-normalised embeddings `audio [B, D]` and `text [B, D]`; row `i` of each is a positive
pair and every other pairing in the batch is a negative. With `s_ij = audio_i . text_j` (cosine
similarity) and `t` a learned temperature:

- :class:`SoftmaxContrastiveLoss` (InfoNCE, as in CLIP / MuLaN): the mean of the audio->text and
  text->audio cross entropies of the logits `s_ij / t`, the target of row `i` being column `i`.
- :class:`SigmoidContrastiveLoss` (SigLIP, Zhai et al. 2023): every pair is an independent binary
  classification of `s_ij / t + b`, label +1 on positives and -1 elsewhere;
  `loss = -sum_ij logsigmoid(label_ij * logit_ij) / B` (normalised by the number of rows).
- :class:`DecoupledContrastiveLoss` (DCL, Yeh et al. 2022): InfoNCE with the positive removed from
  the denominator, `-s_ii / t + logsumexp_{j != i} s_ij / t`, symmetric in both directions. It drops
  the positive-negative coupling that shrinks InfoNCE gradients when the positive already dominates.

Temperature. Each loss holds `log_temperature` (an `nn.Parameter`, or a buffer with
`learn_temperature=False`). The forward clamps the value it uses, `exp(clamp(log_temperature,
log(min_temperature), log(max_temperature)))`; the parameter itself is left untouched. While the
parameter sits outside the range its gradient is zero and the bound is used.

Negatives across ranks. Under data parallelism each rank holds `B` local pairs. Every loss gathers
the embeddings of all ranks with :func:`audiogen_lab.utils.distrib.all_gather_with_grad` (which keeps
the gradient path to every rank's input) and scores its `B` local rows against the `W * B` global
columns; the positive of local row `i` is global column `rank * B + i`. For the symmetric losses both
sides are gathered (audio rows vs all texts, text rows vs all audio). Each per-rank loss is a mean
(or, for SigLIP, a sum divided by `B`) over its local rows, so the mean of the per-rank losses is
exactly the single-process loss over the concatenated global batch. Its gradients match too once
they are averaged over ranks, as DDP / flashy do: the gather's backward sums over ranks the
gradients every rank's loss sends to this rank's embeddings, so a rank's input gradient is
`W * dL_global / d(its inputs)`, and averaging the encoder (and temperature) gradients over the `W`
ranks gives `dL_global / dtheta`. In one process the gather is a no-op.

Each `forward(audio [B, D], text [B, D])` returns `(loss, info)`: a scalar float32 loss and a dict of
detached scalars for logging (`temperature`, and `bias` for the sigmoid loss). Computed in float32
with autocast disabled.
"""
from __future__ import annotations

import math
import typing as tp

import flashy.distrib
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distrib import all_gather_with_grad

LossOutput = tp.Tuple[torch.Tensor, tp.Dict[str, torch.Tensor]]


class _TemperatureContrastiveLoss(nn.Module):
    """Shared parts: the clamped learned temperature, input checks and the global positive indices."""

    def __init__(self, init_temperature: float, min_temperature: float, max_temperature: float,
                 learn_temperature: bool) -> None:
        super().__init__()
        assert 0 < min_temperature <= max_temperature, (
            f"Need 0 < min_temperature <= max_temperature, got {min_temperature} and {max_temperature}.")
        assert min_temperature <= init_temperature <= max_temperature, (
            f"init_temperature={init_temperature} must lie in [min_temperature, max_temperature] = "
            f"[{min_temperature}, {max_temperature}].")
        self.min_temperature = float(min_temperature)
        self.max_temperature = float(max_temperature)
        log_temperature = torch.tensor(math.log(init_temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)

    def temperature(self) -> torch.Tensor:
        """The temperature used by the forward (scalar), clamped to [min_temperature, max_temperature]."""
        log_t = torch.clamp(self.log_temperature.float(), math.log(self.min_temperature),
                            math.log(self.max_temperature))
        return log_t.exp()

    @staticmethod
    def _check(audio: torch.Tensor, text: torch.Tensor) -> None:
        assert audio.dim() == 2 and audio.shape == text.shape, (
            f"Expected audio and text embeddings of the same shape [B, D], got {tuple(audio.shape)} "
            f"and {tuple(text.shape)}.")

    @staticmethod
    def _positive_columns(batch: int, device: torch.device) -> torch.Tensor:
        """Global column of the positive of each local row `[B]`: `rank * B + i`."""
        return flashy.distrib.rank() * batch + torch.arange(batch, device=device)


class SoftmaxContrastiveLoss(_TemperatureContrastiveLoss):
    """Symmetric InfoNCE over the global batch: mean of audio->text and text->audio cross entropy
    of `audio [B, D] @ text_all.T [D, W*B] / t`. See the module docstring."""

    def __init__(self, init_temperature: float = 0.07, min_temperature: float = 0.01,
                 max_temperature: float = 1.0, learn_temperature: bool = True) -> None:
        super().__init__(init_temperature, min_temperature, max_temperature, learn_temperature)

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> LossOutput:
        self._check(audio, text)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio, text = audio.float(), text.float()
            temperature = self.temperature()
            targets = self._positive_columns(audio.shape[0], audio.device)
            logits_a2t = audio @ all_gather_with_grad(text).t() / temperature  # [B, W*B]
            logits_t2a = text @ all_gather_with_grad(audio).t() / temperature  # [B, W*B]
            loss = 0.5 * (F.cross_entropy(logits_a2t, targets) + F.cross_entropy(logits_t2a, targets))
        return loss, {"temperature": temperature.detach()}


class SigmoidContrastiveLoss(_TemperatureContrastiveLoss):
    """SigLIP pairwise sigmoid loss of `audio [B, D] @ text_all.T [D, W*B] / t + bias`, summed over
    pairs and divided by the number of local rows `B`. See the module docstring.

    The bias starts very negative (-10) so that the many negatives do not dominate the first steps;
    it is learned unless `learn_bias=False`.
    """

    def __init__(self, init_temperature: float = 0.1, init_bias: float = -10.0, min_temperature: float = 0.01,
                 max_temperature: float = 1.0, learn_temperature: bool = True, learn_bias: bool = True) -> None:
        super().__init__(init_temperature, min_temperature, max_temperature, learn_temperature)
        bias = torch.tensor(float(init_bias), dtype=torch.float32)
        if learn_bias:
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("bias", bias)

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> LossOutput:
        self._check(audio, text)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio, text = audio.float(), text.float()
            temperature, bias = self.temperature(), self.bias.float()
            batch = audio.shape[0]
            logits = audio @ all_gather_with_grad(text).t() / temperature + bias  # [B, W*B]
            labels = -torch.ones_like(logits)
            labels[torch.arange(batch, device=audio.device), self._positive_columns(batch, audio.device)] = 1.0
            loss = -F.logsigmoid(labels * logits).sum() / batch
        return loss, {"temperature": temperature.detach(), "bias": bias.detach()}


class DecoupledContrastiveLoss(_TemperatureContrastiveLoss):
    """Symmetric decoupled contrastive loss: per row, `-s_ii / t + logsumexp_{j != i} s_ij / t` over
    the global columns (negatives only in the denominator), averaged over rows and both directions.
    Needs at least two pairs in the global batch. See the module docstring."""

    def __init__(self, init_temperature: float = 0.07, min_temperature: float = 0.01,
                 max_temperature: float = 1.0, learn_temperature: bool = True) -> None:
        super().__init__(init_temperature, min_temperature, max_temperature, learn_temperature)

    @staticmethod
    def _one_direction(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over rows of `-logits[i, pos_i] + logsumexp_{j != pos_i} logits[i, j]`, logits `[B, N]`."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        positives = logits[rows, targets]
        is_positive = torch.zeros_like(logits, dtype=torch.bool)
        is_positive[rows, targets] = True
        negatives = logits.masked_fill(is_positive, float("-inf"))
        return (torch.logsumexp(negatives, dim=-1) - positives).mean()

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> LossOutput:
        self._check(audio, text)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio, text = audio.float(), text.float()
            temperature = self.temperature()
            targets = self._positive_columns(audio.shape[0], audio.device)
            all_text, all_audio = all_gather_with_grad(text), all_gather_with_grad(audio)
            assert all_text.shape[0] >= 2, (
                "DecoupledContrastiveLoss needs at least two pairs in the global batch (one negative per "
                f"row), got {all_text.shape[0]}; increase the batch size.")
            loss = 0.5 * (self._one_direction(audio @ all_text.t() / temperature, targets)
                          + self._one_direction(text @ all_audio.t() / temperature, targets))
        return loss, {"temperature": temperature.detach()}


CONTRASTIVE_LOSSES: tp.Dict[str, tp.Type[nn.Module]] = {
    "softmax": SoftmaxContrastiveLoss,
    "sigmoid": SigmoidContrastiveLoss,
    "decoupled": DecoupledContrastiveLoss,
}


def get_contrastive_loss(name: str, **kwargs: tp.Any) -> nn.Module:
    """The contrastive loss named `name` ('softmax', 'sigmoid' or 'decoupled'), built with `kwargs`."""
    if name not in CONTRASTIVE_LOSSES:
        raise KeyError(f"Unknown contrastive.loss '{name}'; choose one of {sorted(CONTRASTIVE_LOSSES)}.")
    return CONTRASTIVE_LOSSES[name](**kwargs)
