"""Training recipe for the Musika-style latent GAN on precomputed latents of a frozen autoencoder.

Each update: the critic learns the hinge loss on real windows (crops of `latent_gan.window` frames,
normalised by the latents' per-dimension mean and std) against generated windows (two independently
generated halves), plus R1 on the real windows (adaptive weight with ``latent_gan.adaptive_r1``), the
optional one-centred gradient penalty and the optional reconstruction head; the generator learns the
hinge generator loss through the critic (whose parameters take no gradient from it), plus, with
``latent_gan.jump_excess_weight``, a penalty on window positions whose frame-to-frame jump exceeds the
data's (the join of the two halves is where a generator that has not learnt to join them jumps). Validation runs
under the generator's EMA: latent Fréchet distance between generated and held-out windows, per-dimension
mean/std errors (normalised space), and the seam ratio of long generated pieces. Evaluation (with
``datasource.evaluate``, under the best weights) generates whole pieces and measures the generation speed,
latent-only and end to end through the autoencoder that made the latents, and the FAD (``fad.embedder``)
between the decoded generations and the decoded held-out latents.
"""
from __future__ import annotations

from contextlib import contextmanager
import logging
import time
import typing as tp

import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig
from torch import nn

from ..data.latent_dataset import load_latent_meta
from ..losses.gan import (AdaptiveR1, gradient_penalty, hinge_discriminator_loss, hinge_gen_loss,
                          jump_excess_penalty, r1_penalty)
from ..metrics.latent_gan import latent_frechet_distance, moment_errors, seam_ratio, worst_jump_ratio
from ..models.latent_gan import LatentGAN, decode_latents
from ..models.latent_gan_builder import get_latent_critic, get_latent_gan_model
from ..utils.distrib import average_tensor
from . import builders, roles
from .base import StandardSolver

logger = logging.getLogger(__name__)


@contextmanager
def _frozen_parameters(module: nn.Module) -> tp.Iterator[None]:
    """Inside the block, the parameters of `module` take no gradient (the graph still goes through it)."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


class LatentGANSolver(StandardSolver):
    """Trains a :class:`LatentGAN` (``model``: trainable, EMA, exported) against a
    :class:`LatentCritic` (``critic``: adversary). The best state is the lowest valid latent FD."""

    best_metric_name = "fd"
    best_metric_direction = "lower"

    # ------------------------------------------------------------------ building
    @classmethod
    def build_model_from_config(cls, cfg: DictConfig, name: str) -> nn.Module:
        if name == "model":
            return get_latent_gan_model(cfg)
        if name == "critic":
            return get_latent_critic(cfg)
        raise KeyError(f"Latent GAN checkpoints hold 'model' and 'critic', not {name!r}.")

    def _latent_folder(self, split: str) -> str:
        path = self.cfg.datasource.get(split)
        if not path:
            raise ValueError(f"datasource.{split} is null: set it to a latent folder (meta.json + latent_*.npy, "
                             "written by scripts/latents.py or write_latent_files).")
        return to_absolute_path(str(path))

    def build_dataloaders(self) -> None:
        window = int(self.cfg.latent_gan.window)
        folder = self._latent_folder("train")
        self._latent_meta, files = load_latent_meta(folder)
        short = [f"{record['file']} ({record['frames']} frames)" for record in files if record["frames"] < window]
        if short:
            raise ValueError(f"{len(short)} latent files of {folder} are shorter than a training window of "
                             f"{window} frames (latent_gan.window): {', '.join(short[:5])}. Lower latent_gan.window "
                             "or remove them.")
        self._latent_files = [f"{folder}/{record['file']}" for record in files]
        self._latent_folder("valid")
        updates = self.cfg.optim.updates_per_epoch
        self.dataloaders = builders.get_audio_datasets(
            self.cfg, updates_per_epoch=updates * self.accumulation.steps if updates else None,
            segment_duration=window / self._latent_meta.frame_rate, pad=True)

    def _normaliser(self) -> tp.Tuple[tp.List[float], tp.List[float]]:
        """Per-dimension mean and std of the training latents: from the folder's meta (`latent_mean`,
        `latent_std`, as scripts/latents.py writes them) or computed over its files."""
        extra = self._latent_meta.extra
        if extra.get("latent_mean") is not None and extra.get("latent_std") is not None:
            return list(extra["latent_mean"]), list(extra["latent_std"])
        total = np.zeros(self._latent_meta.dim)
        squares = np.zeros(self._latent_meta.dim)
        count = 0
        for path in self._latent_files:
            values = np.load(path, mmap_mode="r").astype(np.float64)
            total += values.sum(1)
            squares += (values ** 2).sum(1)
            count += values.shape[1]
        mean = total / count
        self.logger.info("No latent_mean / latent_std in the latent meta: computed over %d training frames.", count)
        return mean.tolist(), np.sqrt(np.maximum(squares / count - mean ** 2, 0.0)).tolist()

    def build_model(self) -> None:
        cfg = self.cfg
        if int(cfg.latent_gan.latent_dim) != self._latent_meta.dim:
            raise ValueError(f"latent_gan.latent_dim={cfg.latent_gan.latent_dim} but the latents of "
                             f"datasource.train have dim {self._latent_meta.dim}: set latent_gan.latent_dim="
                             f"{self._latent_meta.dim}.")
        model = get_latent_gan_model(cfg)
        mean, std = self._normaliser()
        model.set_normaliser(mean, std, self._latent_meta.frame_rate, channels=self._latent_meta.channels)
        self.register_model("model", model.to(self.device))
        self.register_model("critic", get_latent_critic(cfg).to(self.device), role=roles.ADVERSARY)
        g_optimizer = builders.get_optimizer(self.model.generator, cfg.optim)
        self.register_optimizer_group(
            "generator", ["model"], g_optimizer,
            builders.get_lr_scheduler_from_config(g_optimizer, cfg.schedule, self.total_updates),
            max_norm=cfg.optim.max_norm)
        d_cfg = builders.get_adversary_optim_config(cfg)
        d_optimizer = builders.get_optimizer(self.critic, d_cfg)
        self.register_optimizer_group("critic", ["critic"], d_optimizer, max_norm=d_cfg.max_norm)
        gan = cfg.latent_gan
        self.r1 = AdaptiveR1(gamma=float(gan.r1_gamma), **gan.r1) if gan.adaptive_r1 and gan.r1_gamma > 0 \
            else _FixedR1(float(gan.r1_gamma))
        self.register_adaptive_state("r1")
        self._autoencoder_model: tp.Optional[nn.Module] = None  # loaded on first use by the evaluate stage
        self._autoencoder_tried = False

    # ------------------------------------------------------------------ steps
    def _real_windows(self, batch: tp.Dict[str, tp.Any]) -> torch.Tensor:
        return self.model.normalise(batch["latents"].to(self.device).float())

    def _fake_windows(self, batch_size: int) -> torch.Tensor:
        coords, style, _ = self.model.sampler.training_windows(batch_size, device=self.device)
        return self.model(coords, style)

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        real = self._real_windows(batch)
        if not self.is_training:
            fake = self._fake_windows(real.shape[0])
            real_logits, fake_logits = self.critic(real), self.critic(fake)
            metrics["d_loss"] = float(hinge_discriminator_loss(real_logits, fake_logits))
            metrics["g_loss"] = float(hinge_gen_loss(fake_logits))
            self._valid_real.append(real.cpu())
            self._valid_fake.append(fake.cpu())
            return metrics
        gan = self.cfg.latent_gan
        with self.autocast:
            fake = self._fake_windows(real.shape[0])
            real = real.detach().requires_grad_(True)
            features = self.critic.features(real)
            real_logits = self.critic.logits(features)
            fake_logits = self.critic(fake.detach())
            d_losses = {"d_hinge": hinge_discriminator_loss(real_logits, fake_logits)}
            if self.r1.gamma > 0:
                d_losses["r1"] = r1_penalty(real_logits, real, gamma=self.r1.gamma)
            if gan.gp_weight > 0:
                d_losses["gp"] = gan.gp_weight * gradient_penalty(self.critic, real, fake)
            if self.critic.decoder is not None and gan.reconstruction_weight > 0:
                d_losses["reconstruction"] = gan.reconstruction_weight * self.critic.reconstruction_loss(real, features)
            with _frozen_parameters(self.critic):
                g_losses = {"g_hinge": hinge_gen_loss(self.critic(fake))}
            if gan.jump_excess_weight > 0:
                g_losses["jump_excess"] = gan.jump_excess_weight * jump_excess_penalty(fake, real)
            g_loss = sum(g_losses.values())
        if not self.check_finite({**d_losses, "g_loss": g_loss}, batch):
            return metrics
        certainty = average_tensor(AdaptiveR1.certainty(real_logits))  # one R1 weight on every rank
        d_loss = sum(d_losses.values())
        self.optim_groups["generator"].backward(g_loss)
        self.optim_groups["critic"].backward(d_loss)
        for group in self.optim_groups.values():
            metrics.update(group.step() or {})
        if self.accumulation.is_last:
            self.r1.update(certainty)
        self.end_update()
        metrics.update({name: float(value.detach()) for name, value in {**d_losses, **g_losses}.items()})
        metrics.update({"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()),
                        "certainty": float(certainty), "r1_gamma": self.r1.gamma,
                        "real_logit": float(real_logits.detach().mean()),
                        "fake_logit": float(fake_logits.detach().mean())})
        return metrics

    # ------------------------------------------------------------------ stages
    def valid(self) -> dict:
        """The critic's losses on held-out windows, then the latent FD, moment errors (normalised space)
        and seam ratio of the (EMA) generator, with fixed seeds."""
        self._valid_real: tp.List[torch.Tensor] = []
        self._valid_fake: tp.List[torch.Tensor] = []
        generator_state = torch.get_rng_state()
        torch.manual_seed(int(self.cfg.latent_gan.valid_seed))  # the same training-style windows every epoch
        try:
            metrics = super().valid()
        finally:
            torch.set_rng_state(generator_state)
        metrics.update(self.sample_metrics(torch.cat(self._valid_real), torch.cat(self._valid_fake)))
        return metrics

    @torch.no_grad()
    def sample_metrics(self, real: torch.Tensor, fake: torch.Tensor) -> tp.Dict[str, float]:
        """`fd`, `mean_error`, `std_error` between normalised windows `real` and `fake` [B, D, W], and
        `seam` and `seam_worst` (any position of a half) of generated pieces of `latent_gan.valid_windows`
        windows."""
        gan = self.cfg.latent_gan
        metrics = {"fd": latent_frechet_distance(real, fake), **moment_errors(real, fake)}
        pieces = self.model.generate_normalised(int(gan.valid_windows) * self.model.window, int(gan.valid_pieces),
                                                gan.truncation, seed=int(gan.valid_seed))
        metrics["seam"] = seam_ratio(pieces, self.model.window // 2)
        metrics["seam_worst"] = worst_jump_ratio(pieces, self.model.window // 2)
        return metrics

    def _autoencoder(self) -> tp.Optional[nn.Module]:
        """The autoencoder of ``latent_gan.autoencoder`` (an error when it cannot be loaded), else the one the
        training latents' meta.json names when it can be loaded, else None (no audio metrics)."""
        if not self._autoencoder_tried:
            self._autoencoder_tried = True
            from .loading import load_model
            source, named = autoencoder_source(self.cfg), bool(self.cfg.latent_gan.get("autoencoder"))
            try:
                if source:
                    self._autoencoder_model = load_model(source, device=self.device, family="compression")
            except (FileNotFoundError, ValueError, KeyError) as err:
                if named:
                    raise ValueError(f"latent_gan.autoencoder={source!r} cannot be loaded: {err}") from err
                self.logger.warning("No audio metrics: the latents' model %r cannot be loaded (%s); set "
                                    "latent_gan.autoencoder.", source, err)
        return self._autoencoder_model

    def evaluate(self) -> dict:
        """Under the best (EMA) generator, `latent_gan.eval_pieces` pieces of `latent_gan.eval_seconds`:
        `fd` and moment errors against the held-out windows of ``datasource.evaluate``, `speed_latent`
        (seconds generated per second, latents only), and with the autoencoder `speed_end_to_end`
        (decoding included) and `fad` against the decoded held-out windows."""
        gan = self.cfg.latent_gan
        real = torch.cat([batch["latents"].float() for batch in self.dataloaders["evaluate"]]).to(self.device)
        seconds, pieces = float(gan.eval_seconds), int(gan.eval_pieces)
        begin = time.perf_counter()
        fake = self.model.generate(seconds, pieces, gan.truncation, seed=int(gan.valid_seed))
        latent_time = time.perf_counter() - begin
        metrics = {"fd": latent_frechet_distance(self.model.normalise(real), self.model.normalise(fake)),
                   **moment_errors(self.model.normalise(real), self.model.normalise(fake)),
                   "speed_latent": seconds * pieces / latent_time}
        autoencoder = self._autoencoder()
        if autoencoder is None:
            return metrics
        begin = time.perf_counter()
        audio = decode_latents(fake, autoencoder, channels=self.model.channels)
        metrics["speed_end_to_end"] = seconds * pieces / (latent_time + time.perf_counter() - begin)
        fad = builders.get_fad(self.cfg, self.device)
        if fad is not None:
            rate = autoencoder.sample_rate
            for wav in audio:
                fad.update_fake(wav[None].float(), rate)
            for wav in decode_latents(real, autoencoder, channels=self.model.channels):
                fad.update_real(wav[None].float(), rate)
            metrics["fad"] = fad.compute()
        return metrics

    # ------------------------------------------------------------------ loading
    @classmethod
    def model_from_checkpoint(cls, source: tp.Any, name: tp.Optional[str] = None,
                              device: tp.Union[str, torch.device] = "cpu") -> LatentGAN:
        """The trained latent GAN (best weights, EMA) from ``//sig/SIG``, an XP folder, a checkpoint or an
        export, in eval mode on `device`."""
        from .loading import load_model
        return load_model(str(source), name=name, device=device, family="latent_gan",
                          default_name=cls.default_model_name)


def autoencoder_source(cfg: DictConfig) -> tp.Optional[str]:
    """The autoencoder whose latents a latent GAN of config `cfg` learns: ``latent_gan.autoencoder``, else the
    `model` recorded by the training latent folder's meta.json (None when neither is there)."""
    named = cfg.latent_gan.get("autoencoder")
    if named:
        return str(named)
    folder = cfg.get("datasource", {}).get("train")
    try:
        return load_latent_meta(to_absolute_path(str(folder)))[0].model if folder else None
    except (FileNotFoundError, ValueError):
        return None


class _FixedR1:
    """A constant R1 weight with the interface of :class:`AdaptiveR1` (its state is checkpointed alike)."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def update(self, certainty: tp.Any) -> float:
        return self.gamma

    def state_dict(self) -> tp.Dict[str, float]:
        return {"gamma": self.gamma}

    def load_state_dict(self, state: tp.Dict[str, float]) -> None:
        self.gamma = float(state["gamma"])
