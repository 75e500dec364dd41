"""GAN losses for critics that return one logit per window (the latent GAN): the hinge losses, the R1
penalty on real samples with an adaptive weight, and the one-centred gradient penalty on interpolates.

The hinge criteria themselves are those of `audiogen_lab.adversarial.losses`."""
from __future__ import annotations

import typing as tp

import torch

from ..adversarial.losses import hinge_fake_loss, hinge_gen_loss, hinge_real_loss

__all__ = ['AdaptiveR1', 'gradient_penalty', 'hinge_discriminator_loss', 'hinge_gen_loss', 'r1_penalty']


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss `mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))`; the generator's is
    `hinge_gen_loss(fake_logits) = -mean(D(G(z)))`."""
    return hinge_real_loss(real_logits) + hinge_fake_loss(fake_logits)


def _input_gradient(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Gradient `[B, ...]` of `outputs.sum()` with respect to `inputs`, kept in the graph so that a penalty
    on it trains the critic."""
    assert inputs.requires_grad, "The critic's input must require grad: call x.requires_grad_(True) before D(x)."
    gradient, = torch.autograd.grad(outputs.float().sum(), inputs, create_graph=True)
    return gradient.float()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """R1 penalty `0.5 * gamma * E_x ||grad_x D(x)||^2` over the real batch.

    Args:
        real_logits: `D(real)` `[B]`, computed from `real` after `real.requires_grad_(True)` (so the same
            forward also serves the hinge loss).
        real: real windows `[B, ...]`.
        gamma: weight (e.g. `AdaptiveR1.gamma`).
    """
    return 0.5 * gamma * _input_gradient(real_logits, real).flatten(1).pow(2).sum(1).mean()


def gradient_penalty(critic: tp.Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     center: float = 1.0, generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """Gradient penalty `E (||grad D(x_hat)|| - center)^2` on `x_hat = real + u (fake - real)`, with `u`
    uniform in [0, 1] per sample (the one-centred penalty of WGAN-GP with `center=1`).

    Args:
        critic: maps windows `[B, ...]` to logits `[B]`.
        real, fake: windows of the same shape (both detached here).
        center: target gradient norm.
        generator: random generator for `u`.
    """
    assert real.shape == fake.shape, f"real and fake differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}."
    weight = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=real.device)
    mixed = torch.lerp(real.detach(), fake.detach(), weight.to(real.dtype)).requires_grad_(True)
    norms = torch.linalg.vector_norm(_input_gradient(critic(mixed), mixed).flatten(1), dim=1)
    return (norms - center).pow(2).mean()


class AdaptiveR1:
    """R1 weight that follows the critic's certainty on real samples.

    The certainty is `mean(sign(D(real)))` in [-1, 1] (1: every real window is called real). After each
    `update`, `gamma` is multiplied by `factor` when the certainty is above `target` (the critic is too
    sure of itself: smooth it more) and divided by `factor` otherwise, then clamped to
    `[min_gamma, max_gamma]`.

    A solver averages `certainty(real_logits)` over ranks before `update` so that every rank keeps the same
    weight, skips `update` on a skipped step, and checkpoints `state_dict()`.
    """

    def __init__(self, gamma: float = 1.0, target: float = 0.6, factor: float = 1.02, min_gamma: float = 1e-4,
                 max_gamma: float = 100.0) -> None:
        assert 0 < min_gamma <= gamma <= max_gamma, (
            f"Need 0 < min_gamma <= gamma <= max_gamma, got {min_gamma}, {gamma}, {max_gamma}.")
        assert factor > 1, f"factor={factor}: use a factor above 1."
        assert -1 <= target <= 1, f"target={target}: the certainty is a mean sign, use a target in [-1, 1]."
        self.gamma = float(gamma)
        self.target = target
        self.factor = factor
        self.min_gamma = min_gamma
        self.max_gamma = max_gamma
        self.last_certainty = float('nan')

    @staticmethod
    def certainty(real_logits: torch.Tensor) -> torch.Tensor:
        """Mean sign of the critic's logits on real samples (0-d float tensor)."""
        return torch.sign(real_logits.detach().float()).mean()

    def update(self, certainty: tp.Union[float, torch.Tensor]) -> float:
        """Move `gamma` one step given the certainty (a float, or the logits' mean sign as a tensor) and
        return it."""
        self.last_certainty = float(certainty)
        step = self.factor if self.last_certainty > self.target else 1 / self.factor
        self.gamma = min(max(self.gamma * step, self.min_gamma), self.max_gamma)
        return self.gamma

    def state_dict(self) -> tp.Dict[str, float]:
        return {'gamma': self.gamma, 'last_certainty': self.last_certainty}

    def load_state_dict(self, state: tp.Dict[str, float]) -> None:
        self.gamma = float(state['gamma'])
        self.last_certainty = float(state['last_certainty'])


def jump_excess_penalty(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Penalty on positions of generated windows where the frame-to-frame jump is larger than the data's.

    For each position `t` of the window, `r_t = mean |fake[..., t + 1] - fake[..., t]|² / mean |Δreal|²` (the
    fake mean over the batch and the channels, the real one over everything); the penalty is
    `mean_t relu(r_t - 1) ** 2`. A generator whose windows are made of independently generated parts pays for
    a discontinuity wherever it puts it (at the join, or moved a few frames inside a part), nothing for a
    jump no larger than the data's, and little for the estimate's noise (the excess is squared). The real
    statistic takes no gradient.

    Args:
        fake: generated windows `[B, D, W]`.
        real: real windows `[B', D, W']`.
    Returns:
        A scalar tensor.
    """
    natural = (real[..., 1:] - real[..., :-1]).detach().float().pow(2).mean().clamp(min=1e-12)
    profile = (fake[..., 1:] - fake[..., :-1]).float().pow(2).mean(dim=(0, 1))  # [W - 1]
    return torch.relu(profile / natural - 1).pow(2).mean()
