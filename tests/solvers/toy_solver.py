"""A small solver defined outside the package, to test the trainer base on its own."""
from __future__ import annotations

import typing as tp

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from audiogen_lab.solvers import builders
from audiogen_lab.solvers.base import StandardSolver


class ToyDataset(torch.utils.data.Dataset):
    """Noisy linear regression whose samples are a pure function of (seed, epoch, index)."""

    def __init__(self, size: int, dim: int = 8, seed: int = 0) -> None:
        self.size, self.dim, self.seed, self.epoch = size, dim, seed, 0
        self.weight = torch.randn(dim, generator=torch.Generator().manual_seed(1234))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        x = torch.randn(self.dim, generator=gen)
        return x, (x * self.weight).sum(0, keepdim=True) + 0.01 * torch.randn(1, generator=gen)


class ToySolver(StandardSolver):
    """Two models and two optimizers (like G + D), a scheduler, EMA, and dropout that consumes RNG."""

    best_metric_name = "loss"
    best_metric_direction = "lower"

    def build_dataloaders(self) -> None:
        batch = self.cfg.dataset.batch_size
        self.dataloaders = {
            split: torch.utils.data.DataLoader(ToyDataset(size, seed=self.cfg.seed), batch_size=batch)
            for split, size in (("train", batch * self.cfg.optim.updates_per_epoch), ("valid", 64), ("evaluate", 32))}

    @classmethod
    def build_model_from_config(cls, cfg: DictConfig, name: str) -> nn.Module:
        if name == "model":
            return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 1))
        raise KeyError(name)

    def build_model(self) -> None:
        self.register_model("model", self.build_model_from_config(self.cfg, "model").to(self.device))
        self.register_model("critic", nn.Linear(1, 1).to(self.device), role="adversary")
        optimizer = builders.get_optimizer(self.model, self.cfg.optim)
        scheduler = builders.get_lr_scheduler_from_config(optimizer, self.cfg.schedule, self.total_updates)
        self.register_optimizer_group("generator", ["model"], optimizer, scheduler, max_norm=self.cfg.optim.max_norm)
        self.register_optimizer_group("critic", ["critic"], torch.optim.SGD(self.critic.parameters(), lr=0.01))
        self.inject_nan_at: tp.Set[int] = set()

    @property
    def lr_scheduler(self) -> tp.Any:
        return self.optim_groups["generator"].scheduler

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        x, y = (t.to(self.device) for t in batch)
        with self.autocast:
            pred = self.model(x)
        loss = nn.functional.mse_loss(pred.float(), y)
        if self.is_training:
            if idx in self.inject_nan_at:
                loss = loss * float("nan")
            critic_loss = self.critic(pred.detach().float()).pow(2).mean()
            if not self.check_finite({"loss": loss, "critic": critic_loss}):
                return {"skipped": 1.0}
            self.optim_groups["generator"].backward(loss)
            self.optim_groups["critic"].backward(critic_loss)
            for group in self.optim_groups.values():
                metrics.update(group.step() or {})
            self.end_update()
        return {**metrics, "loss": float(loss.detach())}

    def evaluate(self) -> dict:
        total = 0.0
        for x, y in self.dataloaders["evaluate"]:
            total += float(nn.functional.mse_loss(self.model(x.to(self.device)), y.to(self.device)))
        return {"mse": total / len(self.dataloaders["evaluate"])}


TOY_CONFIG = {
    "solver": "toy", "sample_rate": 16000, "channels": 1, "device": "cpu",
    "dataset": {"batch_size": 16, "num_workers": 0},
    "optim": {"epochs": 4, "updates_per_epoch": 10, "lr": 0.01, "optimizer": "adam",
              "ema": {"use": True, "decay": 0.9}},
    "schedule": {"lr_scheduler": "cosine", "cosine": {"warmup": 5}},
    "evaluate": {"every": 2},
    "checkpoint": {"save_every": 1, "keep_last": 2},
}


def make_toy(xp: tp.Any, overrides: tp.Optional[dict] = None, klass: type = ToySolver) -> ToySolver:
    """A ToySolver inside `xp` with the toy config merged over the XP's."""
    cfg = OmegaConf.merge(xp.cfg, TOY_CONFIG, overrides or {})
    assert isinstance(cfg, DictConfig)
    with xp.enter():
        return klass(cfg)
