"""Consistency-model mathematics: noise schedule, preconditioning, training loss and sampling.

Improved consistency training (Song & Dhariwal, 2023) with a continuous noise index `u` in [0, 1]
instead of a discrete step count, as used by consistency autoencoders: `u` is mapped to a noise level
by the Karras schedule, a training pair compares the network at `u + delta` (student) with the same
network at `u` (teacher, no gradient), and `delta` shrinks during training.

Conventions: `x0` is clean data of any shape [B, ...]; noise levels `sigma` are [B]; a denoise function
`denoise_fn(x_noisy: [B, ...], sigma: [B]) -> x_hat: [B, ...]` estimates `x0` (the caller closes over
any conditioning, e.g. the latents of an autoencoder, and applies `EDMPreconditioning.denoise`).
"""
from __future__ import annotations

import math
import typing as tp
from dataclasses import dataclass

import torch

DenoiseFn = tp.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def karras_sigma(u: torch.Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0) -> torch.Tensor:
    """Continuous Karras schedule: index `u` in [0, 1] (any shape) -> noise level, same shape.

    `sigma(u) = (sigma_min ** (1 / rho) + u * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho))) ** rho`,
    increasing, with `sigma(0) = sigma_min` and `sigma(1) = sigma_max` returned exactly (so that the
    boundary condition at `sigma_min` holds bit for bit).
    """
    assert 0 < sigma_min < sigma_max, f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (low + u * (high - low)) ** rho
    sigma = torch.where(u <= 0, torch.full_like(sigma, sigma_min), sigma)
    return torch.where(u >= 1, torch.full_like(sigma, sigma_max), sigma)


def karras_index(sigma: torch.Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0) -> torch.Tensor:
    """Inverse of `karras_sigma`: noise level (any shape, > 0) -> index `u`, not clamped to [0, 1]."""
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (sigma ** (1 / rho) - low) / (high - low)


def sample_noise_index(batch: int, generator: tp.Optional[torch.Generator] = None, *, delta: float,
                       p_mean: float = -1.1, p_std: float = 2.0, sigma_min: float = 0.002,
                       sigma_max: float = 80.0, rho: float = 7.0,
                       device: tp.Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """Draw training noise indices `u` [B] (the teacher's index; the student's is `u + delta`).

    A noise level is drawn log-normally, `log sigma ~ N(p_mean, p_std ** 2)`, the proposal of improved
    consistency training that spends most updates at moderate noise levels. It is mapped back to the
    index with the inverse Karras schedule, `u = (sigma ** (1/rho) - sigma_min ** (1/rho)) /
    (sigma_max ** (1/rho) - sigma_min ** (1/rho))`, then clamped to [0, 1 - delta] so that the student
    index `u + delta` stays in [0, 1]: levels below `sigma_min` become `u = 0` (the teacher then sits on
    the boundary), levels above `karras_sigma(1 - delta)` become `u = 1 - delta`.

    Args:
        batch: number of indices B.
        generator: random generator (on `device`) for reproducible draws; the global one if None.
        delta: current discretization step, in (0, 1), see `discretization_step`.
    Returns:
        u: float32 tensor [B] in [0, 1 - delta].
    """
    assert 0 < delta < 1, f"delta must be in (0, 1), got {delta}"
    log_sigma = p_mean + p_std * torch.randn(batch, generator=generator, device=device)
    u = karras_index(log_sigma.exp(), sigma_min, sigma_max, rho)
    return u.clamp(0.0, 1.0 - delta)


def discretization_step(progress: float, start: float = 0.1, end: float = 0.001) -> float:
    """Index step `delta` between student and teacher at training `progress` (clamped to [0, 1]).

    Geometric interpolation: `start * (end / start) ** progress`, so `delta` shrinks by the same factor
    per unit of progress, from `start` at 0 to `end` at 1 (`sqrt(start * end)` halfway).
    """
    assert 0 < end and 0 < start, f"start and end must be positive, got {start}, {end}"
    progress = min(max(float(progress), 0.0), 1.0)
    return start * (end / start) ** progress


class Scalings(tp.NamedTuple):
    """Preconditioning factors: c_skip, c_out, c_in of shape [B, 1, ..., 1] and c_noise of shape [B]."""
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


@dataclass(frozen=True)
class EDMPreconditioning:
    """EDM-style preconditioning with the consistency boundary condition at `sigma_min`.

    `x_hat = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))` with
    - `c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)`,
    - `c_out = (sigma - sigma_min) * sigma_data / sqrt(sigma ** 2 + sigma_data ** 2)`,
    - `c_in = 1 / sqrt(sigma ** 2 + sigma_data ** 2)` (network input of unit variance if data has std
      `sigma_data`),
    - `c_noise = log(sigma) / 4`, the noise conditioning fed to the network's embedding: about
      [-1.55, 1.10] for sigma in [0.002, 80].
    At `sigma = sigma_min`, `c_skip = 1` and `c_out = 0` exactly, so the model is the identity there
    whatever `F` returns: the boundary condition of a consistency model.

    Args:
        sigma_data: expected standard deviation of the clean data.
        sigma_min: smallest noise level of the schedule (the boundary).
    """
    sigma_data: float = 0.5
    sigma_min: float = 0.002

    def scalings(self, sigma: torch.Tensor, ndim: int = 4) -> Scalings:
        """sigma [B] -> factors broadcastable to data of `ndim` dimensions ([B, 1, 1, 1] for ndim=4)."""
        assert sigma.dim() == 1, f"sigma must have shape [B], got {tuple(sigma.shape)}"
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / ((sigma - self.sigma_min) ** 2 + sd2)
        c_out = (sigma - self.sigma_min) * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        shape = (-1,) + (1,) * (ndim - 1)
        return Scalings(c_skip.reshape(shape), c_out.reshape(shape), c_in.reshape(shape), c_noise)

    def denoise(self, net_fn: tp.Callable[..., torch.Tensor], x_noisy: torch.Tensor, sigma: torch.Tensor,
                **cond: tp.Any) -> torch.Tensor:
        """Preconditioned estimate of clean data.

        Args:
            net_fn: raw network, called as `net_fn(c_in * x_noisy, c_noise, **cond)`, with c_noise [B].
            x_noisy: noisy data [B, ...].
            sigma: noise levels [B] (or a scalar, broadcast to the batch).
            cond: conditioning passed through to `net_fn` (e.g. latents).
        Returns:
            x_hat [B, ...].
        """
        dtype = torch.promote_types(x_noisy.dtype, torch.float32)  # scalings in float32 or more
        sigma = torch.as_tensor(sigma, dtype=dtype, device=x_noisy.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x_noisy.shape[0])
        assert sigma.shape == (x_noisy.shape[0],), (
            f"sigma must have shape [B] = [{x_noisy.shape[0]}], got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = self.scalings(sigma, x_noisy.dim())
        return c_skip * x_noisy + c_out * net_fn(c_in * x_noisy, c_noise, **cond)


def huber_constant(dim: int) -> float:
    """Pseudo-Huber constant `c = 0.00054 * sqrt(dim)` for examples of `dim` elements (per-element RMS 0.00054)."""
    assert dim >= 1, f"dim must be >= 1, got {dim}"
    return 0.00054 * math.sqrt(dim)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Per-example pseudo-Huber distance `sqrt(||a - b||^2 + c^2) - c`, [B, ...] x 2 -> [B].

    `||.||` is the Euclidean norm over all elements of an example (a sum, not a mean, as in improved
    consistency training), to be used with `c = huber_constant(numel per example)`: the distance is
    quadratic, `||a - b||^2 / (2c)`, while the per-element RMS error is below about 0.00054, and grows
    like `||a - b||` above. A per-element mean version would be this value divided by `sqrt(dim)`.
    """
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    assert c >= 0, f"c must be >= 0, got {c}"
    squared = (a - b).square().flatten(1).sum(dim=1)
    return (squared + c * c).sqrt() - c


def consistency_loss(denoise_fn: DenoiseFn, x0: torch.Tensor, u: torch.Tensor, delta: float,
                     noise: torch.Tensor, *, huber_c: tp.Optional[float] = None, sigma_min: float = 0.002,
                     sigma_max: float = 80.0, rho: float = 7.0) -> tp.Tuple[torch.Tensor, tp.Dict[str, torch.Tensor]]:
    """Consistency-training loss between the student at index `u + delta` and the teacher at `u`.

    `sigma_t = karras_sigma(u)`, `sigma_s = karras_sigma(u + delta)` (the student has the HIGHER noise).
    Both see the same noise: `x_s = x0 + sigma_s * noise`, `x_t = x0 + sigma_t * noise`. The student
    `denoise_fn(x_s, sigma_s)` carries the gradient; the teacher `denoise_fn(x_t, sigma_t)` is the same
    online network (not an EMA) evaluated under `torch.no_grad()`, i.e. a stop-gradient target, in the
    network's current train/eval mode. The loss is
    `mean_B pseudo_huber(student, teacher, c) / (sigma_s - sigma_t)`.
    At `u = 0` the teacher is at `sigma_min`, where a preconditioned model returns its input exactly,
    so the target is `x0 + sigma_min * noise` whatever the network does: the boundary condition
    anchors the chain of targets.

    Args:
        denoise_fn: `(x_noisy [B, ...], sigma [B]) -> x_hat [B, ...]`, conditioning closed over.
        x0: clean data [B, ...].
        u: teacher noise indices [B] in [0, 1 - delta] (see `sample_noise_index`).
        delta: index step to the student (see `discretization_step`).
        noise: standard normal noise, same shape as `x0`.
        huber_c: pseudo-Huber constant; `huber_constant(numel per example)` if None.
    Returns:
        loss: scalar, and metrics (detached scalars): `sigma` (mean student level), `sigma_teacher`
        (mean teacher level), `distance` (mean unweighted pseudo-Huber distance), `weight` (mean weight).
    """
    assert noise.shape == x0.shape, f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}"
    assert u.shape == (x0.shape[0],), f"u must have shape [B] = [{x0.shape[0]}], got {tuple(u.shape)}"
    assert 0 < delta <= 1, f"delta must be in (0, 1], got {delta}"
    if huber_c is None:
        huber_c = huber_constant(x0[0].numel())
    u = u.to(device=x0.device, dtype=torch.promote_types(x0.dtype, torch.float32))  # levels in float32 or more
    sigma_t = karras_sigma(u, sigma_min, sigma_max, rho)
    sigma_s = karras_sigma((u + delta).clamp(max=1.0), sigma_min, sigma_max, rho)
    gap = sigma_s - sigma_t
    assert bool((gap > 0).all()), "the student noise level must exceed the teacher's: keep u in [0, 1 - delta]"
    shape = (-1,) + (1,) * (x0.dim() - 1)
    student = denoise_fn(x0 + sigma_s.reshape(shape) * noise, sigma_s)
    with torch.no_grad():
        teacher = denoise_fn(x0 + sigma_t.reshape(shape) * noise, sigma_t)
    distance = pseudo_huber(student, teacher.detach(), huber_c)
    weight = 1 / gap
    loss = (weight * distance).mean()
    metrics = {
        'sigma': sigma_s.mean().detach(),
        'sigma_teacher': sigma_t.mean().detach(),
        'distance': distance.mean().detach(),
        'weight': weight.mean().detach(),
    }
    return loss, metrics


def sampling_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> tp.List[float]:
    """Decreasing noise levels for `steps`-step sampling: Karras levels at u = 1, 1 - 1/steps, ..., 1/steps."""
    assert steps >= 1, f"steps must be >= 1, got {steps}"
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return karras_sigma(u, sigma_min, sigma_max, rho).tolist()


@torch.no_grad()
def sample(denoise_fn: DenoiseFn, noise: tp.Union[torch.Tensor, tp.Sequence[int]], *, steps: int = 1,
           sigmas: tp.Optional[tp.Sequence[float]] = None, generator: tp.Optional[torch.Generator] = None,
           sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
           device: tp.Union[str, torch.device] = 'cpu', dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Consistency sampling: one denoising step by default, or alternating re-noise and denoise.

    `x = denoise_fn(sigmas[0] * eps, sigmas[0])`, then for each following level `s`:
    `x = denoise_fn(x + sqrt(s^2 - sigma_min^2) * z, s)` with fresh standard noise `z`.

    Args:
        denoise_fn: `(x_noisy [B, ...], sigma [B]) -> x_hat [B, ...]`, conditioning closed over.
        noise: the initial standard noise `eps` [B, ...], or a shape to draw it from `generator`.
        steps: number of denoising steps when `sigmas` is None (levels from `sampling_sigmas`).
        sigmas: explicit strictly decreasing noise levels, first one used for the initial noise.
        generator: random generator (on `device`, or on the device of `noise`) for every draw, so that a
            seed makes the result reproducible.
        device, dtype: where and in which dtype to draw the initial noise when a shape is given.
    Returns:
        x [B, ...]: the sample.
    """
    if sigmas is None:
        sigmas = sampling_sigmas(steps, sigma_min, sigma_max, rho)
    sigmas = [float(s) for s in sigmas]
    assert len(sigmas) >= 1, "sigmas must hold at least one noise level"
    assert all(a > b for a, b in zip(sigmas, sigmas[1:])), f"sigmas must be strictly decreasing, got {sigmas}"
    assert sigmas[-1] >= sigma_min, f"noise levels must be >= sigma_min = {sigma_min}, got {sigmas[-1]}"
    if isinstance(noise, torch.Tensor):
        eps = noise
    else:
        eps = torch.randn(tuple(noise), generator=generator, device=device, dtype=dtype)
    batch = eps.shape[0]

    def level(s: float) -> torch.Tensor:
        return torch.full((batch,), s, dtype=eps.dtype, device=eps.device)

    x = denoise_fn(sigmas[0] * eps, level(sigmas[0]))
    for s in sigmas[1:]:
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = denoise_fn(x + math.sqrt(s * s - sigma_min * sigma_min) * z, level(s))
    return x
