"""Training recipe for neural audio codecs (EnCodec, EnCodec-MMD): reconstruction, adversarial,
commitment and codebook-independence (MMD) losses on a :class:`CompressionModel`."""
from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import flashy.distrib
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..losses.sisnr import SILENCE_POWER
from ..metrics.audio import MelDistance, si_snr
from ..metrics.codebook import CodebookStats
from ..models import builders as model_builders
from ..models.compression import CompressionModel
from ..models.loaders import model_from_export
from ..utils import checkpoint
from ..utils.export import check_export, is_export
from ..utils.samples import SampleWriter
from ..utils.utils import dict_from_config
from . import builders
from .base import StandardSolver

logger = logging.getLogger(__name__)


class CompressionSolver(StandardSolver):
    """Trains a :class:`CompressionModel` to reconstruct audio through its quantized bottleneck.

    Reconstruction and adversarial losses act on the decoded waveform and are combined by the
    balancer (weights are shares of the gradient); the commitment penalty and the MMD
    codebook-independence loss act on the quantizer outputs and are added with their weight.
    Validation selects the best state by mel distance (lower is better).
    """

    best_metric_name = "mel_dist"
    best_metric_direction = "lower"
    # Weights under `losses` that are not waveform losses for the balancer.
    _QUANTIZER_LOSSES = ("commitment", "mmd")
    _ADVERSARIAL_LOSSES = ("adv", "feat")

    # ------------------------------------------------------------------ building
    def build_dataloaders(self) -> None:
        self.dataloaders = builders.get_audio_datasets(self.cfg, updates_per_epoch=self.cfg.optim.updates_per_epoch)

    def build_model(self) -> None:
        cfg = self.cfg
        self.model: CompressionModel = model_builders.get_compression_model(cfg).to(self.device)
        self.optimizer = builders.get_optimizer(self.model, cfg.optim)
        self.register_stateful("model", "optimizer")
        self.register_best_state("model")
        self.register_ema("model")
        self.register_lr_scheduler(
            builders.get_lr_scheduler_from_config(self.optimizer, cfg.schedule, self.total_updates), "lr_scheduler")

        self.adv_losses = builders.get_adversarial_losses(cfg).to(self.device)
        self.register_stateful("adv_losses")

        weights = dict_from_config(cfg.losses)
        self.aux_losses = nn.ModuleDict()   # balanced waveform losses, weight > 0
        self.info_losses = nn.ModuleDict()  # weight 0: reported in valid only
        balancer_weights: tp.Dict[str, float] = {}
        for name, weight in weights.items():
            if name in self._QUANTIZER_LOSSES:
                continue
            if name in self._ADVERSARIAL_LOSSES:
                if len(self.adv_losses) > 0 and weight > 0:
                    balancer_weights[name] = weight
                continue
            target = self.aux_losses if weight > 0 else self.info_losses
            target[name] = builders.get_loss(name, cfg).to(self.device)
            if weight > 0:
                balancer_weights[name] = weight
        self.balancer = builders.get_balancer(balancer_weights, cfg.balancer)
        self.register_stateful("balancer")
        self.mmd_loss = builders.get_mmd_loss(cfg).to(self.device)
        self.mel_distance = MelDistance(**dict_from_config(cfg.metrics.mel)).to(self.device)

    # ------------------------------------------------------------------ steps
    def _batch_audio(self, batch: tp.Any) -> torch.Tensor:
        wav = batch[0] if isinstance(batch, (tuple, list)) else batch
        return wav.to(self.device)

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        x = self._batch_audio(batch)
        with self.autocast:
            qres = self.model(x)
        y_pred = qres.x.float()
        metrics["bandwidth"] = float(qres.bandwidth.mean())
        if qres.codes is not None and not self.is_training:
            self._codebook_stats.update(qres.codes)

        if self.is_training and len(self.adv_losses) > 0 and idx % self.cfg.adversarial.every == 0:
            if bool(torch.isfinite(y_pred).all()):
                d_losses = {f"d_{name}": adv.train_adv(y_pred, x) for name, adv in self.adv_losses.items()}
                metrics.update({key: float(value) for key, value in d_losses.items()})
                metrics["d_loss"] = float(sum(d_losses.values()))

        balanced: tp.Dict[str, torch.Tensor] = {}
        if len(self.adv_losses) > 0:
            adv_total, feat_total = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
            for adversary in self.adv_losses.values():
                adv, feat = adversary(y_pred, x)
                adv_total, feat_total = adv_total + adv, feat_total + feat
            for name, value in (("adv", adv_total), ("feat", feat_total)):
                if self.cfg.losses[name] > 0:
                    balanced[name] = value
        for name, criterion in self.aux_losses.items():
            balanced[name] = criterion(y_pred, x)

        weights = self.cfg.losses
        quantizer_losses: tp.Dict[str, torch.Tensor] = {}
        if qres.penalty is not None and weights.commitment > 0:
            quantizer_losses["commitment"] = qres.penalty
        if qres.layer_outputs is not None and (weights.mmd > 0 or not self.is_training):
            with torch.set_grad_enabled(self.is_training and weights.mmd > 0):
                quantizer_losses["mmd"] = self.mmd_loss(qres.layer_outputs)

        if self.is_training:
            if not self.check_finite({**balanced, **quantizer_losses, "output": y_pred}):
                self.optimizer.zero_grad(set_to_none=True)
                return {**metrics, "nonfinite": 1.0}
            direct = sum((self.quantizer_loss_weight(name) * value for name, value in quantizer_losses.items()
                          if value.requires_grad and weights[name] > 0), torch.zeros((), device=self.device))
            if direct.requires_grad:
                direct.backward(retain_graph=True)
            metrics["g_loss"] = float(self.balancer.backward(balanced, y_pred).detach()) + float(direct.detach())
            grad_norm = self.optimizer_step(self.optimizer, self.model, self.cfg.optim.max_norm)
            if grad_norm is not None:
                metrics["grad_norm"] = grad_norm
            self.end_update()
        else:
            for name, criterion in self.info_losses.items():
                balanced[name] = criterion(y_pred, x)
            metrics.update(self._reconstruction_metrics(y_pred, x))

        metrics.update({name: float(value.detach()) for name, value in balanced.items()})
        metrics.update({name: float(value.detach()) for name, value in quantizer_losses.items()})
        return metrics

    def quantizer_loss_weight(self, name: str) -> float:
        """Weight of a quantizer loss (``commitment`` or ``mmd``) at the current update.

        The MMD weight ramps up linearly over ``mmd.warmup_updates`` updates (0: full weight at once), so
        that the codec learns to reconstruct before codebook independence is enforced.
        """
        weight = float(self.cfg.losses[name])
        warmup = self.cfg.mmd.get("warmup_updates", 0) if name == "mmd" else 0
        return weight * min(1.0, (self._train_step + 1) / warmup) if warmup else weight

    def _reconstruction_metrics(self, y_pred: torch.Tensor, x: torch.Tensor) -> tp.Dict[str, float]:
        """SI-SNR (dB, over items whose reference is not digital silence, where it is undefined)
        and mel distance, for [B, C, T] estimate and reference."""
        audible = x.float().pow(2).mean(dim=(1, 2)) > SILENCE_POWER
        scores = si_snr(y_pred[audible], x[audible]) if bool(audible.any()) else torch.zeros(0)
        metrics = {"mel_dist": float(self.mel_distance(y_pred, x).mean())}
        if scores.numel() > 0:
            metrics["si_snr"] = float(scores.mean())
        return metrics

    # ------------------------------------------------------------------ stages
    def _with_codebook_stats(self, fn: tp.Callable[[], dict]) -> dict:
        self._codebook_stats = _NoStats() if self.model.is_continuous else \
            CodebookStats(self.model.num_codebooks, self.model.cardinality, device=self.device)
        metrics = fn()
        metrics.update(self._codebook_stats.compute())
        return metrics

    def train(self) -> dict:
        self._codebook_stats = _NoStats()
        return super().train()

    def valid(self) -> dict:
        return self._with_codebook_stats(super().valid)

    def evaluate(self) -> dict:
        """SI-SNR, mel distance, bandwidth and codebook statistics on the evaluate split."""
        self.model.eval()

        def _run() -> dict:
            loader = self.dataloaders["evaluate"]
            self._set_epoch("evaluate")
            average = flashy.averager()
            metrics: dict = {}
            for batch in self.log_progress("evaluate", loader, updates=self.cfg.logging.log_updates):
                x = self._batch_audio(batch)
                with self.autocast:
                    qres = self.model(x)
                y_pred = qres.x.float()
                self._codebook_stats.update(qres.codes)
                metrics = average({**self._reconstruction_metrics(y_pred, x),
                                   "bandwidth": float(qres.bandwidth.mean())})
            return flashy.distrib.average_metrics(metrics, len(loader))
        return self._with_codebook_stats(_run)

    def generate(self) -> dict:
        """Write reference / reconstruction pairs and spectrogram images under ``samples/epoch_N``."""
        self.model.eval()
        writer = SampleWriter(self.folder / self.cfg.generate.path, self.model.sample_rate)
        self._set_epoch("generate")
        count, limit = 0, self.cfg.generate.get("num_samples", 8)
        for batch in self.dataloaders["generate"]:
            x = self._batch_audio(batch)
            with self.autocast:
                y_pred = self.model(x).x.float()
            if flashy.distrib.is_rank_zero():
                for ref, rec in zip(x, y_pred):
                    if count >= limit:
                        break
                    writer.add(self.epoch, f"sample_{count:03d}", {"reference": ref, "reconstruction": rec})
                    count += 1
            if count >= limit:
                break
        return {"samples": float(count)}

    # ------------------------------------------------------------------ loading
    def load_continue_from(self, name: str) -> None:
        """Also accepts ``//pretrained/NAME`` and exports, as long as the architectures match."""
        if name.startswith(checkpoint.PRETRAINED_PREFIX):
            self.model.load_state_dict(CompressionModel.get_pretrained(name).state_dict())
        else:
            path = checkpoint.resolve_checkpoint_path(name)
            state = checkpoint.load_checkpoint(path)
            if not is_export(state):
                self.load_best_states_from(state, name)
                return
            self.model.load_state_dict(check_export(state, path, "compression")["model"])
        self.logger.info("Initialised the model from %s", name)

    @staticmethod
    def model_from_checkpoint(checkpoint_path: tp.Union[str, Path], device: tp.Union[str, torch.device] = "cpu"
                              ) -> CompressionModel:
        """The trained model (best weights, EMA when used) from ``//sig/SIG``, an XP folder, a
        checkpoint or export file, or ``//pretrained/NAME``; in eval mode on `device`."""
        name = str(checkpoint_path)
        if name.startswith(checkpoint.PRETRAINED_PREFIX):
            return CompressionModel.get_pretrained(name, device=device)
        path = checkpoint.resolve_checkpoint_path(name)
        state = checkpoint.load_checkpoint(path)
        if is_export(state):
            return model_from_export(check_export(state, path, "compression"), path, device)
        if "xp.cfg" not in state or "best_state" not in state:
            raise ValueError(f"{path} is not a compression solver checkpoint (no config or best state).")
        cfg = OmegaConf.create(state["xp.cfg"])
        if cfg.get("solver") != "compression":
            raise ValueError(f"{path} was written by the {cfg.get('solver')!r} solver, not 'compression'.")
        model = model_builders.get_compression_model(cfg)
        model.load_state_dict(state["best_state"]["states"]["model"])
        logger.info("Loaded compression model from %s", path)
        return model.to(device).eval()

    @staticmethod
    def wrapped_model_from_checkpoint(cfg: DictConfig, checkpoint_path: tp.Union[str, Path],
                                      device: tp.Union[str, torch.device] = "cpu") -> CompressionModel:
        """The model for a downstream solver: loaded as above, frozen, and limited to
        ``cfg.compression_model_n_q`` codebooks when that key is set."""
        model = CompressionSolver.model_from_checkpoint(checkpoint_path, device)
        n_q = cfg.get("compression_model_n_q")
        if n_q is not None:
            model.set_num_codebooks(int(n_q))
        for param in model.parameters():
            param.requires_grad_(False)
        return model


class _NoStats:
    """Stand-in for :class:`CodebookStats` when no code statistics are gathered (train, continuous models)."""

    def update(self, codes: torch.Tensor) -> None:
        return

    def compute(self) -> dict:
        return {}
