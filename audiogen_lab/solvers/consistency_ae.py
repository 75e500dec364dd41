"""Training recipe for the consistency autoencoder (:class:`~audiogen_lab.models.consistency_ae.ConsistencyAE`).

Improved consistency training with a continuous noise index: the encoder and decoder are trained end to end
by the consistency loss alone (student at index ``u + delta``, stop-gradient teacher at ``u``, the same
online network and noise), ``delta`` shrinking exponentially over training (``consistency.delta_start`` ->
``consistency.delta_end``). EMA weights are used for validation, evaluation and export only. Validation,
evaluation and samples use one-step decoding; evaluation adds the Fréchet Audio Distance.
"""
from __future__ import annotations

import typing as tp

import torch

from ..metrics.audio import MelDistance
from ..modules.consistency import discretization_step
from ..utils.utils import dict_from_config, metrics_as_floats
from . import builders
from .compression import CompressionSolver, item_lengths


class ConsistencyAESolver(CompressionSolver):
    """Trains a continuous-latent :class:`ConsistencyAE` by consistency training (no adversary, no balancer).

    Train metrics: ``loss`` (weighted pseudo-Huber), ``distance`` (unweighted), ``sigma`` (mean student
    level) and ``delta``; valid adds one-step reconstruction ``mel_dist`` / ``si_snr``, which select the
    best state (``best_metric`` in the config); evaluate adds ``fad``.
    """

    best_metric_name = "mel_dist"
    best_metric_direction = "lower"

    def build_model(self) -> None:
        self.build_generator()
        self.mel_distance = MelDistance(**dict_from_config(self.cfg.metrics.mel)).to(self.device)

    def delta(self) -> float:
        """The discretization step at the current update (exponential from delta_start to delta_end)."""
        c = self.cfg.consistency
        return discretization_step(self._train_step / max(1, self.total_updates - 1), c.delta_start, c.delta_end)

    def _loss_options(self) -> tp.Dict[str, tp.Any]:
        c = self.cfg.consistency
        return {"p_mean": c.p_mean, "p_std": c.p_std, "huber_c": c.get("huber_c")}

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        x, mask = self._batch_audio(batch)
        delta = self.delta()
        with torch.set_grad_enabled(self.is_training), self.autocast:
            loss, info = self.model.consistency_loss(x, delta, **self._loss_options())
        loss = loss.float()
        metrics.update({"loss": loss, "delta": delta, **info})
        if not self.is_training:
            with self.autocast:
                y_pred = self.model(x).x.float()
            metrics.update(self._reconstruction_metrics(y_pred, x, mask))
            return metrics_as_floats(metrics)
        if not self.check_finite({"loss": loss}, batch):
            return metrics_as_floats(metrics)
        generator = self.optim_groups["generator"]
        generator.backward(loss)
        metrics.update(generator.step() or {})
        self.end_update()
        return metrics_as_floats(metrics)

    def evaluate(self) -> dict:
        """The compression evaluation (one-step SI-SNR, mel distance) plus the FAD between references and
        reconstructions, with the embedder of ``fad.embedder`` (``logmel`` needs no weights; null: no FAD)."""
        self._fad = builders.get_fad(self.cfg, self.device)
        metrics = super().evaluate()
        if self._fad is not None:
            metrics["fad"] = self._fad.compute()
            self._fad = None
        return metrics

    def evaluate_batch_hook(self, x: torch.Tensor, y_pred: torch.Tensor, mask: tp.Optional[torch.Tensor]) -> None:
        if self._fad is None:
            return
        for i, length in enumerate(item_lengths(x, mask)):  # each clip on its own samples, padding excluded
            self._fad.update_real(x[i:i + 1, :, :length], self.model.sample_rate)
            self._fad.update_fake(y_pred[i:i + 1, :, :length], self.model.sample_rate)

