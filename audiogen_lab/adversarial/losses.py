"""Adversarial criteria (hinge, least squares), feature matching, and the adversarial loss wrapper around
a discriminator."""
from __future__ import annotations

import typing as tp
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

Criterion = tp.Callable[[torch.Tensor], torch.Tensor]


def hinge_real_loss(logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on real samples: `mean(relu(1 - D(x)))`."""
    return F.relu(1 - logits.float()).mean()


def hinge_fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on generated samples: `mean(relu(1 + D(G(z))))`."""
    return F.relu(1 + logits.float()).mean()


def hinge_gen_loss(logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: `-mean(D(G(z)))`."""
    return -logits.float().mean()


def mse_real_loss(logits: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss on real samples: `mean((D(x) - 1)^2)`."""
    return F.mse_loss(logits.float(), torch.ones_like(logits, dtype=torch.float32))


def mse_fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss on generated samples: `mean(D(G(z))^2)`."""
    return F.mse_loss(logits.float(), torch.zeros_like(logits, dtype=torch.float32))


def mse_gen_loss(logits: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: `mean((D(G(z)) - 1)^2)`."""
    return F.mse_loss(logits.float(), torch.ones_like(logits, dtype=torch.float32))


_ADV_CRITERIA = {"hinge": hinge_gen_loss, "mse": mse_gen_loss}
_FAKE_CRITERIA = {"hinge": hinge_fake_loss, "mse": mse_fake_loss}
_REAL_CRITERIA = {"hinge": hinge_real_loss, "mse": mse_real_loss}


def _pick(table: tp.Dict[str, Criterion], name: str) -> Criterion:
    if name not in table:
        raise ValueError(f"Unknown adversarial loss '{name}': choose one of {sorted(table)}.")
    return table[name]


def get_adv_criterion(name: str) -> Criterion:
    """Generator-side criterion for 'hinge' or 'mse'."""
    return _pick(_ADV_CRITERIA, name)


def get_fake_criterion(name: str) -> Criterion:
    """Discriminator criterion on generated samples for 'hinge' or 'mse'."""
    return _pick(_FAKE_CRITERIA, name)


def get_real_criterion(name: str) -> Criterion:
    """Discriminator criterion on real samples for 'hinge' or 'mse'."""
    return _pick(_REAL_CRITERIA, name)


class FeatureMatchingLoss(nn.Module):
    """Distance between the discriminator's feature maps on generated and on real audio.

    Args:
        loss: distance between two feature maps (L1 when None).
        normalize: average over feature maps instead of summing.
        relative: divide each feature map's distance by the mean absolute value of the real feature
            map (the relative feature matching of EnCodec), which makes layers of different scale comparable.

    `forward(fmap_fake, fmap_real)` takes two lists of same-shaped tensors; real maps are detached.
    """

    def __init__(self, loss: tp.Optional[nn.Module] = None, normalize: bool = True, relative: bool = False) -> None:
        super().__init__()
        self.loss = loss if loss is not None else nn.L1Loss()
        self.normalize = normalize
        self.relative = relative

    def forward(self, fmap_fake: tp.Sequence[torch.Tensor], fmap_real: tp.Sequence[torch.Tensor]) -> torch.Tensor:
        assert len(fmap_fake) == len(fmap_real) and len(fmap_fake) > 0, (
            f"Need as many (and at least one) fake and real feature maps, got {len(fmap_fake)} and {len(fmap_real)}.")
        total = torch.zeros((), device=fmap_fake[0].device)
        for fake, real in zip(fmap_fake, fmap_real):
            assert fake.shape == real.shape, (
                f"Fake and real feature maps differ in shape: {tuple(fake.shape)} vs {tuple(real.shape)}.")
            fake, real = fake.float(), real.detach().float()
            term = self.loss(fake, real)
            if self.relative:
                term = term / real.abs().mean().clamp(min=1e-8)
            total = total + term
        if self.normalize:
            total = total / len(fmap_fake)
        return total


@contextmanager
def readonly(module: nn.Module) -> tp.Iterator[None]:
    """Temporarily stop gradients from accumulating in the parameters of `module`."""
    previous = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in previous:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in previous:
            param.requires_grad_(flag)


class AdversarialLoss(nn.Module):
    """A discriminator (`adversary`) and its criteria; its optimizer lives in the solver's
    ``adversary`` optimizer group (clipping, scaling, schedule and non-finite checks like the generator).

    - `discriminator_loss(fake, real)`: the discriminator's loss on detached inputs (to backpropagate
      into the adversary's parameters).
    - `forward(fake, real)`: the generator-side `(adv_loss, feat_loss)`; the discriminator's
      parameters receive no gradient from it.

    Args:
        adversary: a module returning `(logits: list[Tensor], fmaps: list[list[Tensor]])`,
            e.g. a :class:`MultiDiscriminator`.
        loss: generator-side criterion on the logits of generated audio.
        loss_real, loss_fake: discriminator criteria on the logits of real and generated audio.
        loss_feat: feature matching loss, or None to skip it (then `feat_loss` is 0).
        normalize: average the losses over sub-discriminators instead of summing.
    """

    def __init__(self, adversary: nn.Module, loss: Criterion, loss_real: Criterion, loss_fake: Criterion,
                 loss_feat: tp.Optional[FeatureMatchingLoss] = None, normalize: bool = True) -> None:
        super().__init__()
        self.adversary = adversary
        self.loss = loss
        self.loss_real = loss_real
        self.loss_fake = loss_fake
        self.loss_feat = loss_feat
        self.normalize = normalize

    def _check_outputs(self, logits: tp.Sequence[torch.Tensor]) -> None:
        assert isinstance(logits, (list, tuple)) and len(logits) > 0, (
            "The adversary must return (logits: list[Tensor], fmaps: list[list[Tensor]]) "
            "with at least one logits tensor.")

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss on `fake` and `real` audio `[B, C, T]` (both detached): a scalar
        with gradient to the adversary's parameters only."""
        logits_fake, _ = self.adversary(fake.detach())
        logits_real, _ = self.adversary(real.detach())
        self._check_outputs(logits_fake)
        loss = torch.zeros((), device=fake.device)
        for logit_fake, logit_real in zip(logits_fake, logits_real):
            loss = loss + self.loss_fake(logit_fake) + self.loss_real(logit_real)
        if self.normalize:
            loss = loss / len(logits_fake)
        return loss

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Generator-side losses for `fake` (with gradient) against `real` audio `[B, C, T]`.
        Returns `(adv_loss, feat_loss)` scalars."""
        adv = torch.zeros((), device=fake.device)
        feat = torch.zeros((), device=fake.device)
        with readonly(self.adversary):
            logits_fake, fmaps_fake = self.adversary(fake)
            self._check_outputs(logits_fake)
            for logit in logits_fake:
                adv = adv + self.loss(logit)
            if self.loss_feat is not None:
                with torch.no_grad():
                    _, fmaps_real = self.adversary(real)
                for fmap_fake, fmap_real in zip(fmaps_fake, fmaps_real):
                    feat = feat + self.loss_feat(fmap_fake, fmap_real)
        if self.normalize:
            adv = adv / len(logits_fake)
            feat = feat / len(logits_fake)
        return adv, feat
