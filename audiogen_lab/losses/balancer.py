"""Loss balancer: weights losses by the share of the gradient they contribute, not by their value."""
from __future__ import annotations

import typing as tp

import flashy
import torch
from torch import autograd


class Balancer:
    """Combine several losses computed on the same model output `input` through their gradients.

    For every loss `l_i` with weight `w_i > 0`, the gradient `g_i = d l_i / d input` is computed, and
    its norm `n_i = ||g_i||_2` is measured (with `per_batch_item`, the mean over batch items of the
    per-item norms). The norms are averaged over ranks and then smoothed with a bias-corrected
    exponential moving average, `N_i = sum_t decay^(s-t) n_i(t) / sum_t decay^(s-t)`. The gradient
    sent back into the model is

        G = sum_i  c_i * g_i,   c_i = total_norm * (w_i / sum_j w_j) / (epsilon + N_i)     (balance_grads)
        G = sum_i  w_i * g_i                                                              (otherwise)

    so that, with balancing, each loss contributes a gradient of norm about
    `total_norm * w_i / sum_j w_j` whatever the scale of its value: weights are shares of the
    gradient. `backward` then calls `input.backward(G)` and returns `sum_i c_i * l_i` (detached),
    the effective loss, for logging.

    Losses that do not depend on `input` (e.g. a quantizer commitment loss) cannot be balanced:
    backpropagate them separately. Losses with weight 0 are ignored.

    Args:
        weights: weight of each loss, by name.
        balance_grads: rescale gradients as above; if False, plainly weight them.
        total_norm: target norm of the combined gradient.
        ema_decay: decay of the moving average of the gradient norms.
        per_batch_item: measure the norm per batch item and average, rather than over the batch.
        epsilon: numerical floor for the norms.
        monitor: record in `metrics` the share `N_i / sum_j N_j` of each loss in the gradient.
    """

    def __init__(self, weights: tp.Dict[str, float], balance_grads: bool = True, total_norm: float = 1.0,
                 ema_decay: float = 0.999, per_batch_item: bool = True, epsilon: float = 1e-12,
                 monitor: bool = False) -> None:
        assert 0.0 <= ema_decay < 1.0, f"ema_decay must be in [0, 1), got {ema_decay}."
        for name, weight in weights.items():
            assert weight >= 0, f"Balancer weight of '{name}' must be non-negative, got {weight}."
        self.weights = dict(weights)
        self.balance_grads = balance_grads
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        self.monitor = monitor
        self._ema_total: tp.Dict[str, float] = {}
        self._ema_count: tp.Dict[str, float] = {}
        self._metrics: tp.Dict[str, float] = {}

    @property
    def metrics(self) -> tp.Dict[str, float]:
        """Gradient shares `ratio_<name>` of the last `backward` (empty unless `monitor=True`)."""
        return dict(self._metrics)

    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        if self.per_batch_item and grad.dim() > 1:
            return torch.linalg.vector_norm(grad.flatten(1), dim=1).mean()
        return torch.linalg.vector_norm(grad)

    def _update_averages(self, norms: tp.Dict[str, torch.Tensor]) -> tp.Dict[str, float]:
        stacked = torch.stack(list(norms.values()))
        flashy.distrib.all_reduce(stacked)
        stacked = stacked / flashy.distrib.world_size()
        averages = {}
        for name, norm in zip(norms, stacked.tolist()):
            self._ema_total[name] = self.ema_decay * self._ema_total.get(name, 0.0) + norm
            self._ema_count[name] = self.ema_decay * self._ema_count.get(name, 0.0) + 1.0
            averages[name] = self._ema_total[name] / self._ema_count[name]
        return averages

    def backward(self, losses: tp.Dict[str, torch.Tensor], input: torch.Tensor,
                 grad_scale: float = 1.0) -> torch.Tensor:
        """Backpropagate the balanced combination of `losses` (scalars) through `input` (any shape,
        typically the model output `[B, C, T]`). Returns the effective weighted loss (detached scalar).

        `grad_scale` multiplies the gradient sent into the model only (fp16 loss scale divided by the
        gradient-accumulation steps, from the optimizer group); the norms and the returned loss ignore it.
        """
        unknown = sorted(set(losses) - set(self.weights))
        assert not unknown, f"Losses {unknown} have no balancer weight: add them to the balancer weights."
        active = {name: loss for name, loss in losses.items() if self.weights[name] > 0}
        assert active, f"No loss with a positive weight among {sorted(losses)}."
        grads: tp.Dict[str, torch.Tensor] = {}
        norms: tp.Dict[str, torch.Tensor] = {}
        for name, loss in active.items():
            assert loss.numel() == 1, f"Loss '{name}' must be a scalar, got shape {tuple(loss.shape)}."
            if not loss.requires_grad:
                raise ValueError(f"Loss '{name}' does not require grad: it cannot be balanced.")
            grad, = autograd.grad(loss, [input], retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(f"Loss '{name}' does not depend on the balanced tensor: backpropagate it "
                                 "separately instead of passing it to the balancer.")
            grads[name] = grad.float()
            norms[name] = self._norm(grads[name])
        averages = self._update_averages(norms)

        total_weight = sum(self.weights[name] for name in active)
        out_grad = torch.zeros_like(input, dtype=torch.float32)
        effective_loss = torch.zeros((), device=input.device, dtype=torch.float32)
        for name, grad in grads.items():
            if self.balance_grads:
                scale = self.total_norm * (self.weights[name] / total_weight) / (self.epsilon + averages[name])
            else:
                scale = self.weights[name]
            out_grad.add_(grad, alpha=scale)
            effective_loss = effective_loss + scale * active[name].detach().float()
        self._metrics = {}
        if self.monitor:
            total = sum(averages.values())
            self._metrics = {f"ratio_{name}": value / (total + self.epsilon) for name, value in averages.items()}
        input.backward((out_grad * grad_scale).to(input.dtype))
        return effective_loss

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        """The moving averages of the gradient norms (plain floats, safe for `weights_only` loading)."""
        return {"ema_total": dict(self._ema_total), "ema_count": dict(self._ema_count)}

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self._ema_total = {name: float(value) for name, value in state["ema_total"].items()}
        self._ema_count = {name: float(value) for name, value in state["ema_count"].items()}
