"""From config to solver, optimizers, schedulers and data loaders (the only solver code reading config)."""
from __future__ import annotations

import logging
import typing as tp

import flashy.distrib
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data.audio_dataset import AudioDataset
from ..optim.schedulers import get_lr_scheduler
from ..utils.utils import dict_from_config

logger = logging.getLogger(__name__)
DATASET_SPLITS = ("train", "valid", "evaluate", "generate")


def _solver_registry() -> tp.Dict[str, tp.Callable[[DictConfig], tp.Any]]:
    from .compression import CompressionSolver
    return {"compression": CompressionSolver}


def get_solver(cfg: DictConfig) -> tp.Any:
    """Instantiate the solver named by ``cfg.solver``."""
    registry = _solver_registry()
    if cfg.solver not in registry:
        raise KeyError(f"solver={cfg.solver!r} is unknown; choose one of {sorted(registry)}.")
    return registry[cfg.solver](cfg)


def get_optimizer(params: tp.Union[nn.Module, tp.Iterable[torch.Tensor]], optim_cfg: DictConfig
                  ) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD from ``optim.optimizer``, ``optim.lr`` and ``optim.<optimizer>`` options."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    name = optim_cfg.optimizer
    options = dict_from_config(optim_cfg.get(name))
    if name == "adam":
        return torch.optim.Adam(params, lr=optim_cfg.lr, **options)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=optim_cfg.lr, **options)
    if name == "sgd":
        return torch.optim.SGD(params, lr=optim_cfg.lr, **options)
    raise KeyError(f"optim.optimizer={name!r} is unknown; choose adam, adamw or sgd.")


def get_lr_scheduler_from_config(optimizer: torch.optim.Optimizer, schedule_cfg: tp.Optional[DictConfig],
                                 total_updates: int) -> tp.Optional[torch.optim.lr_scheduler.LRScheduler]:
    """The scheduler ``schedule.lr_scheduler`` with its options under ``schedule.<name>``."""
    if schedule_cfg is None or schedule_cfg.get("lr_scheduler") is None:
        return None
    name = schedule_cfg.lr_scheduler
    return get_lr_scheduler(optimizer, name, total_updates, **dict_from_config(schedule_cfg.get(name)))


def split_batch_size(batch_size: int, key: str = "dataset.batch_size") -> int:
    """Global batch size → per-rank batch size."""
    world = flashy.distrib.world_size()
    if batch_size % world != 0:
        raise ValueError(f"{key}={batch_size} is global and must be divisible by the world size {world}.")
    return batch_size // world


def get_audio_datasets(cfg: DictConfig, updates_per_epoch: tp.Optional[int] = None,
                       **extra: tp.Any) -> tp.Dict[str, torch.utils.data.DataLoader]:
    """Data loaders of dict batches for every split named in ``datasource``: see
    :func:`audiogen_lab.data.builders.get_dataloaders` (``dataset.kind`` picks the dataset)."""
    from ..data.builders import get_dataloaders
    return get_dataloaders(cfg, updates_per_epoch=updates_per_epoch, **extra)


# ---------------------------------------------------------------------- losses
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
    return Balancer(weights, **dict_from_config(balancer_cfg))


def get_mmd_loss(cfg: DictConfig) -> nn.Module:
    """The MMD codebook-independence loss with options from ``mmd``."""
    from ..losses import MMDIndependenceLoss
    options = dict_from_config(cfg.mmd)
    options.pop("warmup_updates", None)  # a schedule of the solver, not an option of the loss
    return MMDIndependenceLoss(**options)


def get_adversary(name: str, cfg: DictConfig) -> nn.Module:
    """The discriminator `name` with options from ``cfg.<name>``."""
    from ..adversarial.discriminators import MultiScaleSTFTDiscriminator
    klasses: tp.Dict[str, tp.Callable[..., nn.Module]] = {"msstftd": MultiScaleSTFTDiscriminator}
    if name not in klasses:
        raise KeyError(f"adversarial.adversaries has unknown {name!r}; choose among {sorted(klasses)}.")
    return klasses[name](**dict_from_config(cfg.get(name)))


def get_adversarial_losses(cfg: DictConfig) -> nn.ModuleDict:
    """One :class:`AdversarialLoss` (discriminator + its optimizer) per name in ``adversarial.adversaries``."""
    from ..adversarial import losses as adv_losses
    adv_cfg = cfg.adversarial
    out = nn.ModuleDict()
    if cfg.losses.get("adv", 0) <= 0 and cfg.losses.get("feat", 0) <= 0:
        return out
    for name in adv_cfg.adversaries:
        adversary = get_adversary(name, cfg)
        optim_cfg = OmegaConf.merge(cfg.optim, {"lr": adv_cfg.get("lr") or cfg.optim.lr})
        optimizer = get_optimizer(adversary, optim_cfg)
        feat = adv_losses.FeatureMatchingLoss(get_loss(adv_cfg.feat_loss, cfg), normalize=adv_cfg.normalize) \
            if cfg.losses.get("feat", 0) > 0 else None
        out[name] = adv_losses.AdversarialLoss(
            adversary, optimizer,
            loss=adv_losses.get_adv_criterion(adv_cfg.adv_loss),
            loss_real=adv_losses.get_real_criterion(adv_cfg.adv_loss),
            loss_fake=adv_losses.get_fake_criterion(adv_cfg.adv_loss),
            loss_feat=feat, normalize=adv_cfg.normalize)
    return out
