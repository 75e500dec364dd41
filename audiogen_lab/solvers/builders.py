"""From config to solver, optimizers, schedulers and data loaders (the only solver code reading config)."""
from __future__ import annotations

import logging
import typing as tp

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data.builders import DATASET_SPLITS, split_batch_size  # noqa: F401 (re-exported)
from ..optim.schedulers import get_lr_scheduler
from ..utils.utils import dict_from_config

logger = logging.getLogger(__name__)


def get_solver(cfg: DictConfig) -> tp.Any:
    """Instantiate the solver named by ``cfg.solver`` (see :data:`audiogen_lab.solvers.SOLVERS`)."""
    from . import get_solver_class
    return get_solver_class(cfg.solver)(cfg)


def get_optimizer(params: tp.Union[nn.Module, tp.Iterable[torch.Tensor]], optim_cfg: DictConfig
                  ) -> torch.optim.Optimizer:
    """Adam / AdamW / RAdam / SGD from ``optim.optimizer``, ``optim.lr`` and ``optim.<optimizer>`` options."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    name = optim_cfg.optimizer
    options = dict_from_config(optim_cfg.get(name))
    if name == "adam":
        return torch.optim.Adam(params, lr=optim_cfg.lr, **options)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=optim_cfg.lr, **options)
    if name == "radam":
        return torch.optim.RAdam(params, lr=optim_cfg.lr, **options)
    if name == "sgd":
        return torch.optim.SGD(params, lr=optim_cfg.lr, **options)
    raise KeyError(f"optim.optimizer={name!r} is unknown; choose adam, adamw, radam or sgd.")


def get_adversary_optim_config(cfg: DictConfig) -> DictConfig:
    """The optimizer config of the adversaries: ``optim`` with ``optim.adversary.{optimizer, lr, betas,
    max_norm, lr_scheduler}`` applied where set (lr falls back to ``adversarial.lr``, then ``optim.lr``)."""
    own = cfg.optim.get("adversary") or {}
    name = own.get("optimizer") or cfg.optim.optimizer
    lr = own.get("lr") or (cfg.get("adversarial") or {}).get("lr") or cfg.optim.lr
    merged = OmegaConf.merge(cfg.optim, {"optimizer": name, "lr": lr, "max_norm": own.get("max_norm") or 0.0})
    if own.get("betas") is not None:
        if name not in ("adam", "adamw"):
            raise ValueError(f"optim.adversary.betas is set but optim.adversary.optimizer={name!r} has no betas.")
        merged[name]["betas"] = list(own.betas)
    return merged


def get_lr_scheduler_from_config(optimizer: torch.optim.Optimizer, schedule_cfg: tp.Optional[DictConfig],
                                 total_updates: int) -> tp.Optional[torch.optim.lr_scheduler.LRScheduler]:
    """The scheduler ``schedule.lr_scheduler`` with its options under ``schedule.<name>``."""
    if schedule_cfg is None or schedule_cfg.get("lr_scheduler") is None:
        return None
    name = schedule_cfg.lr_scheduler
    return get_lr_scheduler(optimizer, name, total_updates, **dict_from_config(schedule_cfg.get(name)))


def get_audio_datasets(cfg: DictConfig, updates_per_epoch: tp.Optional[int] = None,
                       **extra: tp.Any) -> tp.Dict[str, torch.utils.data.DataLoader]:
    """Data loaders of dict batches for every split named in ``datasource``: see
    :func:`audiogen_lab.data.builders.get_dataloaders` (``dataset.kind`` picks the dataset)."""
    from ..data.builders import get_dataloaders
    return get_dataloaders(cfg, updates_per_epoch=updates_per_epoch, **extra)


# ---------------------------------------------------------------------- losses
def get_fad(cfg: DictConfig, device: tp.Union[str, torch.device] = "cpu") -> tp.Any:
    """A `FrechetAudioDistance` with the embedder of ``fad.embedder`` (its weights from ``fad.checkpoint``,
    its options from ``fad.<embedder>``), or None when the config has no ``fad.embedder``."""
    from ..metrics.embedders import get_embedder
    from ..metrics.fad import FrechetAudioDistance
    fad_cfg = cfg.get("fad") or {}
    if not fad_cfg.get("embedder"):
        return None
    options = dict_from_config(fad_cfg.get(fad_cfg.embedder))
    embedder = get_embedder(fad_cfg.embedder, fad_cfg.get("checkpoint"), **options)
    return FrechetAudioDistance(embedder.to(device))


def get_loss(name: str, cfg: DictConfig) -> nn.Module:
    """The waveform loss `name` (``l1``, ``l2``, ``mel``, ``msspec``, ``mrstft``, ``sisnr``) with its
    options from ``cfg.<name>``."""
    from .. import losses
    factories: tp.Dict[str, tp.Callable[..., nn.Module]] = {
        "l1": torch.nn.L1Loss,
        "l2": torch.nn.MSELoss,
        "mel": losses.MelSpectrogramL1Loss,
        "msspec": losses.MultiScaleMelSpectrogramLoss,
        "mrstft": losses.MRSTFTLoss,
        "sisnr": losses.SISNR,
    }
    if name not in factories:
        raise KeyError(f"losses.{name} is not a known loss; choose among {sorted(factories)}.")
    return factories[name](**dict_from_config(cfg.get(name)))


def get_balancer(weights: tp.Dict[str, float], balancer_cfg: DictConfig) -> tp.Any:
    """The loss balancer over `weights` with options from ``balancer``."""
    from ..losses import Balancer
    options = dict_from_config(balancer_cfg)
    options.setdefault("monitor", True)  # gradient shares are logged with the losses
    return Balancer(weights, **options)


def get_mmd_loss(cfg: DictConfig) -> nn.Module:
    """The MMD codebook-independence loss with options from ``mmd``."""
    from ..losses import MMDIndependenceLoss
    options = dict_from_config(cfg.mmd)
    options.pop("warmup_updates", None)  # a schedule of the solver, not an option of the loss
    return MMDIndependenceLoss(**options)


def get_adversary(name: str, cfg: DictConfig) -> nn.Module:
    """The discriminator `name` (``msstftd``, ``msd``, ``mpd``) with options from ``cfg.<name>``."""
    from ..adversarial.discriminators import (MultiPeriodDiscriminator, MultiScaleDiscriminator,
                                              MultiScaleSTFTDiscriminator)
    klasses: tp.Dict[str, tp.Callable[..., nn.Module]] = {
        "msstftd": MultiScaleSTFTDiscriminator,
        "msd": MultiScaleDiscriminator,
        "mpd": MultiPeriodDiscriminator,
    }
    if name not in klasses:
        raise KeyError(f"adversarial.adversaries has unknown {name!r}; choose among {sorted(klasses)}.")
    return klasses[name](**dict_from_config(cfg.get(name)))


def get_adversarial_losses(cfg: DictConfig) -> nn.ModuleDict:
    """One :class:`AdversarialLoss` (discriminator + criteria) per name in ``adversarial.adversaries``;
    empty when neither ``losses.adv`` nor ``losses.feat`` is positive."""
    from ..adversarial import losses as adv_losses
    adv_cfg = cfg.adversarial
    out = nn.ModuleDict()
    if cfg.losses.get("adv", 0) <= 0 and cfg.losses.get("feat", 0) <= 0:
        return out
    for name in adv_cfg.adversaries:
        feat = adv_losses.FeatureMatchingLoss(get_loss(adv_cfg.feat_loss, cfg), normalize=adv_cfg.normalize) \
            if cfg.losses.get("feat", 0) > 0 else None
        out[name] = adv_losses.AdversarialLoss(
            get_adversary(name, cfg),
            loss=adv_losses.get_adv_criterion(adv_cfg.adv_loss),
            loss_real=adv_losses.get_real_criterion(adv_cfg.adv_loss),
            loss_fake=adv_losses.get_fake_criterion(adv_cfg.adv_loss),
            loss_feat=feat, normalize=adv_cfg.normalize)
    return out
