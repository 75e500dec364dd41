"""Training recipe for neural audio codecs (EnCodec, EnCodec-MMD): reconstruction, adversarial,
commitment and codebook-independence (MMD) losses on a :class:`CompressionModel`."""
from __future__ import annotations

import inspect
import logging
import typing as tp
from pathlib import Path

import flashy.distrib
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data.builders import loader_length
from ..losses.sisnr import SILENCE_POWER
from ..metrics.audio import MelDistance, si_snr
from ..metrics.codebook import CodebookStats
from ..models import builders as model_builders
from ..models.compression import CompressionModel
from ..utils.samples import SampleWriter
from ..utils.utils import dict_from_config
from . import builders, roles
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
    @classmethod
    def build_model_from_config(cls, cfg: DictConfig, name: str) -> nn.Module:
        if name != "model":
            raise KeyError(f"The compression solver exports one model, 'model', not {name!r}.")
        return model_builders.get_compression_model(cfg)

    def build_dataloaders(self) -> None:
        updates = self.cfg.optim.updates_per_epoch
        self.dataloaders = builders.get_audio_datasets(
            self.cfg, updates_per_epoch=updates * self.accumulation.steps if updates else None)

    def build_model(self) -> None:
        cfg = self.cfg
        self.build_generator()

        self.adv_losses: nn.ModuleDict = builders.get_adversarial_losses(cfg).to(self.device)
        if len(self.adv_losses) > 0:
            self.register_model("adv_losses", self.adv_losses, role=roles.ADVERSARY)
            d_cfg = builders.get_adversary_optim_config(cfg)
            optimizer = builders.get_optimizer(self.adv_losses, d_cfg)
            schedule = (cfg.optim.get("adversary") or {}).get("lr_scheduler")
            scheduler = builders.get_lr_scheduler_from_config(
                optimizer, OmegaConf.merge(cfg.schedule, {"lr_scheduler": schedule}),
                -(-self.total_updates // cfg.adversarial.every)) if schedule else None
            self.register_optimizer_group("adversary", ["adv_losses"], optimizer, scheduler, max_norm=d_cfg.max_norm)

        weights = dict_from_config(cfg.losses)
        self.aux_losses = nn.ModuleDict()   # balanced waveform losses, weight > 0
        self.info_losses = nn.ModuleDict()  # weight 0: reported in valid only
        balancer_weights: tp.Dict[str, float] = {}
        for name, weight in weights.items():
            if name in self._QUANTIZER_LOSSES or name in self._ADVERSARIAL_LOSSES:
                continue
            target = self.aux_losses if weight > 0 else self.info_losses
            target[name] = builders.get_loss(name, cfg).to(self.device)
            if weight > 0:
                balancer_weights[name] = weight
        for adversary in self.adv_losses:  # one balancer weight per adversary and term
            for term in self._ADVERSARIAL_LOSSES:
                if weights.get(term, 0) > 0:
                    balancer_weights[f"{term}_{adversary}"] = weights[term]
        self.balancer = builders.get_balancer(balancer_weights, cfg.balancer)
        self.register_adaptive_state("balancer")
        self.mmd_loss = builders.get_mmd_loss(cfg).to(self.device)
        self.mel_distance = MelDistance(**dict_from_config(cfg.metrics.mel)).to(self.device)

    def build_generator(self) -> None:
        """Register the compression model ``model`` and its optimizer group ``generator`` (optimizer, LR
        schedule over the whole run, clipping from ``optim``)."""
        cfg = self.cfg
        self.register_model("model", self.build_model_from_config(cfg, "model").to(self.device))
        optimizer = builders.get_optimizer(self.model, cfg.optim)
        self.register_optimizer_group(
            "generator", ["model"], optimizer,
            builders.get_lr_scheduler_from_config(optimizer, cfg.schedule, self.total_updates),
            max_norm=cfg.optim.max_norm)

    # ------------------------------------------------------------------ steps
    def _batch_audio(self, batch: tp.Any) -> tp.Tuple[torch.Tensor, tp.Optional[torch.Tensor]]:
        """Audio [B, C, T] on the device and its mask [B, T] (True on real samples) when padded."""
        if isinstance(batch, dict):
            mask = batch.get("mask")
            return batch["audio"].to(self.device), None if mask is None else mask.to(self.device)
        wav = batch[0] if isinstance(batch, (tuple, list)) else batch
        return wav.to(self.device), None

    def _adversaries_update(self, idx: int) -> bool:
        """Whether the adversaries train on this micro-batch (every ``adversarial.every`` updates)."""
        update = idx // self.accumulation.steps
        return len(self.adv_losses) > 0 and update % self.cfg.adversarial.every == 0

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        x, mask = self._batch_audio(batch)
        with self.autocast:
            qres = self.model(x)
        y_pred = qres.x.float()
        metrics["bandwidth"] = float(qres.bandwidth.mean())
        metrics.update({f"quantizer_{key}": float(value) for key, value in qres.metrics.items()})

        weights = self.cfg.losses
        quantizer_losses: tp.Dict[str, torch.Tensor] = {}
        if qres.penalty is not None and weights.commitment > 0:
            quantizer_losses["commitment"] = qres.penalty
        if qres.layer_outputs is not None and (weights.mmd > 0 or not self.is_training):
            with torch.set_grad_enabled(self.is_training and weights.mmd > 0):
                quantizer_losses["mmd"] = self.mmd_loss(qres.layer_outputs)

        if not self.is_training:
            if qres.codes is not None:
                self._codebook_stats.update(qres.codes)
            metrics.update(self._reconstruction_metrics(y_pred, x, mask))
            for name, criterion in {**self.aux_losses, **self.info_losses}.items():
                metrics[name] = float(criterion(y_pred, x))
            metrics.update({name: float(value) for name, value in quantizer_losses.items()})
            return metrics

        balanced: tp.Dict[str, torch.Tensor] = {}
        for name, adversary in self.adv_losses.items():
            adv, feat = adversary(y_pred, x)
            for term, value in (("adv", adv), ("feat", feat)):
                if weights[term] > 0:
                    balanced[f"{term}_{name}"] = value
        for name, criterion in self.aux_losses.items():
            balanced[name] = criterion(y_pred, x)
        d_losses: tp.Dict[str, torch.Tensor] = {}
        if self._adversaries_update(idx):
            d_losses = {f"d_{name}": adversary.discriminator_loss(y_pred, x)
                        for name, adversary in self.adv_losses.items()}

        if not self.check_finite({**balanced, **quantizer_losses, **d_losses, "output": y_pred}, batch):
            return metrics
        generator = self.optim_groups["generator"]
        direct = sum((self.quantizer_loss_weight(name) * value for name, value in quantizer_losses.items()
                      if value.requires_grad and weights[name] > 0), torch.zeros((), device=self.device))
        if direct.requires_grad:
            generator.backward(direct, retain_graph=True)
        g_loss = self.balancer.backward(balanced, y_pred, grad_scale=generator.grad_scale)
        metrics["g_loss"] = float(g_loss) + float(direct.detach())
        metrics.update(self.balancer.metrics)
        if d_losses:
            d_loss = sum(d_losses.values())
            self.optim_groups["adversary"].backward(d_loss)
            metrics.update({key: float(value.detach()) for key, value in d_losses.items()})
            metrics["d_loss"] = float(d_loss.detach())
        for name, group in self.optim_groups.items():
            if name == "adversary" and not d_losses:
                continue
            metrics.update(group.step() or {})
        self.end_update()
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

    def _reconstruction_metrics(self, y_pred: torch.Tensor, x: torch.Tensor,
                                mask: tp.Optional[torch.Tensor] = None) -> tp.Dict[str, float]:
        """SI-SNR (dB, over items whose reference is not digital silence, where it is undefined)
        and mel distance, for [B, C, T] estimate and reference; with a mask [B, T], each item is
        scored on its real samples only (padding excluded)."""
        if mask is None or bool(mask.all()):
            pairs = [(y_pred, x)]
        else:
            lengths = mask.sum(dim=-1).tolist()
            pairs = [(y_pred[i:i + 1, :, :n], x[i:i + 1, :, :n]) for i, n in enumerate(lengths) if n > 0]
        scores, mels = [], []
        for estimate, reference in pairs:
            audible = reference.float().pow(2).mean(dim=(1, 2)) > SILENCE_POWER
            if bool(audible.any()):
                scores.append(si_snr(estimate[audible], reference[audible]))
            mels.append(self.mel_distance(estimate, reference))
        metrics = {"mel_dist": float(torch.cat(mels).mean())}
        if scores:
            metrics["si_snr"] = float(torch.cat(scores).mean())
        return metrics

    # ------------------------------------------------------------------ stages
    def _with_codebook_stats(self, fn: tp.Callable[[], dict]) -> dict:
        if self.model.is_continuous:
            self._codebook_stats = _NoStats()
        else:
            self._codebook_stats = CodebookStats(self.model.num_codebooks, self.model.cardinality,
                                                 device=self.device, **self._codebook_stats_options())
        metrics = fn()
        metrics.update(self._codebook_stats.compute())
        return metrics

    def _codebook_stats_options(self) -> tp.Dict[str, tp.Any]:
        options = dict_from_config((self.cfg.get("metrics") or {}).get("codebook"))
        accepted = inspect.signature(CodebookStats).parameters
        return {key: value for key, value in options.items() if key in accepted}

    def train(self) -> dict:
        self._codebook_stats = _NoStats()
        return super().train()

    def valid(self) -> dict:
        return self._with_codebook_stats(super().valid)

    def evaluate(self) -> dict:
        """SI-SNR, mel distance, bandwidth and codebook statistics on the evaluate split (whole files
        of any length: each is scored on its own samples)."""
        def _run() -> dict:
            loader = self.dataloaders["evaluate"]
            self._set_epoch("evaluate")
            average = flashy.averager()
            metrics: dict = {}
            count = 0
            for batch in self.log_progress("evaluate", loader, total=loader_length(loader) or 0,
                                           updates=self.cfg.logging.log_updates):
                x, mask = self._batch_audio(batch)
                with self.autocast:
                    qres = self.model(x)
                y_pred = qres.x.float()
                if qres.codes is not None:
                    self._update_stats_unpadded(qres.codes, mask)
                self.evaluate_batch_hook(x, y_pred, mask)
                metrics = average({**self._reconstruction_metrics(y_pred, x, mask),
                                   "bandwidth": float(qres.bandwidth.mean())})
                count += 1
            return self._average(metrics, count)
        return self._with_codebook_stats(_run)

    def evaluate_batch_hook(self, x: torch.Tensor, y_pred: torch.Tensor, mask: tp.Optional[torch.Tensor]) -> None:
        """Called by :meth:`evaluate` with each batch of references `x` and reconstructions `y_pred` [B, C, T]
        (mask [B, T] when padded): where subclasses gather extra evaluation statistics. Nothing here."""

    def _update_stats_unpadded(self, codes: torch.Tensor, mask: tp.Optional[torch.Tensor]) -> None:
        """Codebook statistics of codes [B, K, T'] over the frames of real audio only."""
        if mask is None or bool(mask.all()):
            self._codebook_stats.update(codes)
            return
        hop = self.model.hop_length
        for item, length in zip(codes, mask.sum(dim=-1).tolist()):
            frames = min(item.shape[-1], -(-int(length) // hop))
            if frames > 0:
                self._codebook_stats.update(item[None, :, :frames])

    def generate(self) -> dict:
        """Write reference / reconstruction pairs and spectrogram images under ``samples/epoch_N``."""
        writer = SampleWriter(self.folder / self.cfg.generate.path, self.model.sample_rate)
        self._set_epoch("generate")
        count, limit = 0, self.cfg.generate.get("num_samples", 8)
        for batch in self.dataloaders["generate"]:
            x, mask = self._batch_audio(batch)
            with self.autocast:
                y_pred = self.model(x).x.float()
            lengths = item_lengths(x, mask)
            if flashy.distrib.is_rank_zero():
                for ref, rec, length in zip(x, y_pred, lengths):
                    if count >= limit:
                        break
                    writer.add(self.epoch, f"sample_{count:03d}",
                               {"reference": ref[..., :length], "reconstruction": rec[..., :length]})
                    count += 1
            if count >= limit:
                break
        return {"samples": float(count)}

    # ------------------------------------------------------------------ loading
    @classmethod
    def model_from_checkpoint(cls, source: tp.Union[str, Path], name: tp.Optional[str] = None,
                              device: tp.Union[str, torch.device] = "cpu") -> CompressionModel:
        """The trained compression model (best weights, EMA when used) from ``//sig/SIG``, an XP
        folder, a checkpoint or export file, or ``//pretrained/NAME``; in eval mode on `device`."""
        from .loading import load_model
        return load_model(str(source), name=name, device=device, family="compression",
                          default_name=cls.default_model_name)

    @staticmethod
    def wrapped_model_from_checkpoint(cfg: tp.Any, checkpoint_path: tp.Union[str, Path],
                                      device: tp.Union[str, torch.device] = "cpu") -> CompressionModel:
        """The model for a downstream solver: loaded as above, frozen (eval mode for good, no
        gradients), and limited to ``compression_model_n_q`` codebooks when that key is set."""
        model = CompressionSolver.model_from_checkpoint(checkpoint_path, device=device)
        n_q = cfg.get("compression_model_n_q")
        if n_q is not None:
            model.set_num_codebooks(int(n_q))
        return roles.freeze(model)


def item_lengths(x: torch.Tensor, mask: tp.Optional[torch.Tensor]) -> tp.List[int]:
    """Real samples of each item of audio `x` [B, C, T]: from the mask [B, T] when padded, else T."""
    return mask.sum(dim=-1).tolist() if mask is not None else [x.shape[-1]] * x.shape[0]


class _NoStats:
    """Stand-in for :class:`CodebookStats` when no code statistics are gathered (train, continuous models)."""

    def update(self, codes: torch.Tensor) -> None:
        return

    def compute(self) -> dict:
        return {}
