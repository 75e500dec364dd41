"""The one trainer base every model family builds on.

A family subclasses :class:`StandardSolver` and implements :meth:`build_model`,
:meth:`build_dataloaders`, :meth:`run_step`, and where it has them :meth:`evaluate` and
:meth:`generate`. The base owns everything else: the epoch loop, validation under EMA weights,
best-state tracking, evaluate/generate under the best weights, atomic checkpoints with safe loading,
automatic resume (weights, optimizers, schedulers, EMA, best state, RNG, history), ``continue_from``,
``execute_only``, autocast, distributed gradient averaging and non-finite loss handling.

Epoch ``e`` is ``optim.updates_per_epoch`` updates. Datasets are told the epoch before every stage,
so the data order is a function of (seed, epoch) and a resumed run reproduces an uninterrupted one.
"""
from __future__ import annotations

import logging
import time
import typing as tp
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from pathlib import Path

import flashy
import flashy.distrib
import torch
from flashy.loggers.localfs import LocalFSLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..optim.ema import ModuleDictEMA
from ..utils import checkpoint
from ..utils.best_state import BestStateDictManager
from ..utils.utils import get_rng_state, pick_device, seed_everything, set_rng_state

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive updates produced a non-finite loss."""


class _ConfigAsYaml:
    """State source storing the config as YAML text (never a pickled DictConfig)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def state_dict(self) -> str:
        return OmegaConf.to_yaml(self.cfg, resolve=True)

    def load_state_dict(self, state: tp.Any) -> None:  # write-only
        return


class StandardSolver(ABC, flashy.BaseSolver):
    """Base solver: epochs of train → valid → best state → evaluate/generate, with checkpoints.

    Subclasses declare which validation metric selects the best state with
    :attr:`best_metric_name` and whether lower or higher is better with :attr:`best_metric_direction`.
    """

    #: name of the validation metric that selects the best state (None: keep the last weights)
    best_metric_name: tp.Optional[str] = None
    #: ``'lower'`` or ``'higher'``: which values of :attr:`best_metric_name` are better
    best_metric_direction: str = "lower"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.logger.info("Instantiating solver %s for XP %s", type(self).__name__, self.xp.sig)
        # flashy pickles the DictConfig into the checkpoint, which `weights_only` loading refuses.
        self.stateful.sources.pop("xp.cfg")
        self.stateful.register("xp.cfg", _ConfigAsYaml(cfg), write_only=True)
        # Audio is written by our samples writer with soundfile, not by flashy's torchaudio-based logger.
        self.result_logger._experiment_loggers["local"] = LocalFSLogger.from_xp(with_media_logging=False)
        if cfg.logging.get("log_tensorboard", False):
            self.init_tensorboard(**OmegaConf.to_container(cfg.tensorboard, resolve=True))

        self._nonfinite_streak = 0
        self._train_step = 0
        self.ema: tp.Optional[ModuleDictEMA] = None
        self._ema_sources = nn.ModuleDict()
        self.lr_schedulers: tp.List[torch.optim.lr_scheduler.LRScheduler] = []
        self.best_state = BestStateDictManager(direction=self.best_metric_direction)
        self.register_stateful("best_state")

        self.autocast_dtype = getattr(torch, cfg.autocast_dtype)
        self.autocast_enabled = bool(cfg.autocast)
        self.scaler: tp.Optional[torch.amp.GradScaler] = None
        if self.autocast_enabled and self.autocast_dtype == torch.float16:
            assert self.device.startswith("cuda"), "autocast_dtype=float16 needs a CUDA device; use bfloat16."
            self.scaler = torch.amp.GradScaler("cuda")
            self.register_stateful("scaler")

        seed_everything(cfg.seed)  # same initial weights whatever the entry point
        self.dataloaders: tp.Dict[str, tp.Any] = {}
        self.build_dataloaders()
        self.build_model()
        for source in self.best_state.sources.values():
            if isinstance(source, nn.Module):
                flashy.distrib.broadcast_model(source)  # every rank starts from rank 0's weights
        self._build_ema()
        self.register_stateful("_train_step")

    # ---------------------------------------------------------------- to implement by families
    @abstractmethod
    def build_model(self) -> None:
        """Create models and optimizers, move them to :attr:`device`, and register them with
        :meth:`register_stateful`, :meth:`register_best_state` and :meth:`register_ema`."""

    @abstractmethod
    def build_dataloaders(self) -> None:
        """Fill :attr:`dataloaders` (``train``, ``valid``, and ``evaluate`` / ``generate`` if used)."""

    @abstractmethod
    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        """One step of the current stage (``train`` or ``valid``); returns updated `metrics`.

        In ``train`` it does the forward pass, the non-finite check (:meth:`check_finite`), the
        backward pass and the optimizer updates (:meth:`optimizer_step`).
        """

    def evaluate(self) -> dict:
        """Evaluation metrics, run under the best weights (default: nothing)."""
        return {}

    def generate(self) -> dict:
        """Write samples (reconstructions or generations) under the best weights (default: nothing)."""
        return {}

    def load_continue_from(self, name: str) -> None:
        """Initialise the weights from another XP's best state (``//sig/SIG`` or a checkpoint path).

        Families whose models can also start from an export or a ``//pretrained/`` name override this.
        """
        self.load_best_states_from(checkpoint.load_checkpoint(checkpoint.resolve_checkpoint_path(name)), name)

    def load_best_states_from(self, state: dict, name: str) -> None:
        """Load the best states of a loaded solver checkpoint `state` (read from `name`) into the models."""
        best = state["best_state"]["states"]
        for key, value in best.items():
            if key in self.best_state.sources:
                self.best_state.sources[key].load_state_dict(value)
        self.logger.info("Initialised %s from the best state of %s", sorted(best), name)

    # ---------------------------------------------------------------- registration helpers
    def register_best_state(self, *names: str) -> None:
        """Track the attributes `names` (modules) in the best state; they are also checkpointed."""
        for name in names:
            self.best_state.register(name, getattr(self, name))

    def register_ema(self, *names: str) -> None:
        """Keep an EMA of the attributes `names` when ``optim.ema.use`` is set."""
        for name in names:
            self._ema_sources[name] = getattr(self, name)

    def register_lr_scheduler(self, scheduler: tp.Optional[torch.optim.lr_scheduler.LRScheduler],
                              name: str) -> None:
        """Step `scheduler` once per update (in :meth:`optimizer_step`) and checkpoint it as `name`."""
        if scheduler is not None:
            setattr(self, name, scheduler)
            self.register_stateful(name)
            self.lr_schedulers.append(scheduler)

    def _build_ema(self) -> None:
        ema_cfg = self.cfg.optim.get("ema", {}) or {}
        if ema_cfg.get("use", False) and len(self._ema_sources) > 0:
            self.ema = ModuleDictEMA(self._ema_sources, decay=ema_cfg.get("decay", 0.999))
            self.register_stateful("ema")
            self.logger.info("EMA of %s with decay %s", list(self._ema_sources), self.ema.decay)

    # ---------------------------------------------------------------- properties
    @property
    def is_training(self) -> bool:
        return self.current_stage == "train"

    @property
    def total_updates(self) -> int:
        return self.cfg.optim.epochs * self.updates_per_epoch

    @property
    def updates_per_epoch(self) -> int:
        updates = self.cfg.optim.get("updates_per_epoch")
        return int(updates) if updates else len(self.dataloaders["train"])

    @property
    def autocast(self) -> tp.ContextManager:
        """Autocast context for forward passes, from ``autocast`` and ``autocast_dtype``."""
        if not self.autocast_enabled:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)

    # ---------------------------------------------------------------- training utilities
    def check_finite(self, losses: tp.Dict[str, torch.Tensor]) -> bool:
        """True if every loss is finite on every rank.

        Otherwise the step and the offending terms are logged, the caller must skip the update, and
        after ``optim.max_nonfinite_steps`` consecutive bad steps the run stops with
        :class:`NonFiniteLossError` instead of training on garbage.
        """
        bad = [name for name, value in losses.items()
               if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all())]
        flag = torch.tensor(float(len(bad) > 0), device=self.device)
        flashy.distrib.all_reduce(flag)
        if flag.item() == 0:
            self._nonfinite_streak = 0
            return True
        self._nonfinite_streak += 1
        terms = ", ".join(f"{name}={float(losses[name].detach().float().mean()):.4g}" for name in bad)
        self.logger.error("Non-finite loss at epoch %d, update %d (skipped): %s", self.epoch, self._train_step,
                          terms or "on another rank")
        limit = self.cfg.optim.get("max_nonfinite_steps", 10)
        if self._nonfinite_streak >= limit:
            raise NonFiniteLossError(
                f"{self._nonfinite_streak} consecutive updates had non-finite losses (last at epoch {self.epoch}, "
                f"update {self._train_step}: {terms or 'on another rank'}). Stopping; lower optim.lr, enable "
                "gradient clipping (optim.max_norm) or check the data. The last good checkpoint is kept.")
        return False

    def optimizer_step(self, optimizer: torch.optim.Optimizer, models: tp.Union[nn.Module, tp.Sequence[nn.Module]],
                       max_norm: tp.Optional[float] = None) -> tp.Optional[float]:
        """Average gradients across ranks, clip, step `optimizer` (and the schedulers), zero grads.

        Returns the gradient norm before clipping when ``max_norm`` is set.
        """
        models = [models] if isinstance(models, nn.Module) else list(models)
        for model in models:
            flashy.distrib.sync_model(model)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        grad_norm = None
        if max_norm:
            params = [p for model in models for p in model.parameters()]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def end_update(self) -> None:
        """Call once per update, after all optimizers stepped: schedulers and EMA advance."""
        self._train_step += 1
        for scheduler in self.lr_schedulers:
            scheduler.step()
        ema_cfg = self.cfg.optim.get("ema", {}) or {}
        if self.ema is not None and self._train_step % max(1, ema_cfg.get("updates", 1)) == 0:
            self.ema.step()

    def check_weights_synchronized(self) -> None:
        """In a distributed run, check that every rank holds the same weights (cheap checksums).

        Ranks drift apart when a gradient or buffer is not averaged; training on would silently
        waste the run, so this raises instead.
        """
        if not flashy.distrib.is_distributed():
            return
        for name, source in self.best_state.sources.items():
            if not isinstance(source, nn.Module):
                continue
            params = [p.detach().double() for p in source.parameters()]
            local = torch.stack([sum(p.sum() for p in params), sum(p.pow(2).sum() for p in params)])
            high, low = local.clone(), -local.clone()
            torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
            torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MAX)
            spread = float((high + low).abs().max())
            if spread > 1e-6 * (1.0 + float(high.abs().max())):
                raise RuntimeError(f"The weights of {name!r} differ across ranks (checksum spread {spread:.3g}): "
                                   "some gradient or buffer is not averaged.")
            self.logger.info("Weights of %s identical on all %d ranks", name, flashy.distrib.world_size())

    @contextmanager
    def swap_ema_state(self) -> tp.Iterator[None]:
        """Use the EMA weights inside the block (no-op without EMA)."""
        if self.ema is None:
            yield
        else:
            with self.ema.swap():
                yield

    @contextmanager
    def swap_best_state(self) -> tp.Iterator[None]:
        """Use the best weights inside the block, then put the current ones back."""
        sources = self.best_state.sources
        backup = {name: _clone_state(source.state_dict()) for name, source in sources.items()}
        for name, source in sources.items():
            source.load_state_dict(self.best_state.states[name])
        try:
            yield
        finally:
            for name, source in sources.items():
                source.load_state_dict(backup[name])

    # ---------------------------------------------------------------- stages
    def _set_epoch(self, stage: str) -> None:
        loader = self.dataloaders.get(stage)
        dataset = getattr(loader, "dataset", None)
        dataset = getattr(dataset, "dataset", dataset)  # through a Subset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.epoch)
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)

    def common_train_valid(self, stage: str) -> dict:
        """Iterate the stage's loader through :meth:`run_step`, averaging metrics over steps and ranks."""
        self._set_epoch(stage)
        loader = self.dataloaders[stage]
        total = self.updates_per_epoch if stage == "train" else len(loader)
        progress = self.log_progress(stage, loader, total=total, updates=self.cfg.logging.log_updates)
        average = flashy.averager()
        metrics: dict = {}
        for idx, batch in enumerate(progress):
            if idx >= total:
                break
            metrics = self.run_step(idx, batch, {})
            metrics = average(metrics)
            progress.update(**metrics)
        return flashy.distrib.average_metrics(metrics, total)

    def train(self) -> dict:
        for model in self.best_state.sources.values():
            if isinstance(model, nn.Module):
                model.train()
        return self.common_train_valid("train")

    def valid(self) -> dict:
        for model in self.best_state.sources.values():
            if isinstance(model, nn.Module):
                model.eval()
        with torch.no_grad():
            return self.common_train_valid("valid")

    def should_run_stage(self, stage: str) -> bool:
        """evaluate/generate run every ``<stage>.every`` epochs and on the last epoch."""
        every = (self.cfg.get(stage) or {}).get("every")
        if stage not in self.dataloaders:
            return False
        is_last = self.epoch == self.cfg.optim.epochs
        return is_last or bool(every and self.epoch % every == 0)

    def update_best_state_from_stage(self, stage: str = "valid") -> None:
        name = self.best_metric_name
        if name is None:
            self.best_state.update()
            return
        metrics = self._pending_metrics.get(stage, {})
        if name not in metrics:
            raise KeyError(f"The best-state metric {name!r} is missing from the {stage} metrics {sorted(metrics)}.")
        if self.best_state.update(metrics[name]):
            self.logger.info("New best state with %s=%.4f", name, metrics[name])

    def run_epoch(self) -> None:
        self.run_stage("train", self.train)
        with torch.no_grad(), self.swap_ema_state():
            self.run_stage("valid", self.valid)
            self.update_best_state_from_stage("valid")
        with self.swap_best_state():
            for stage, fn in (("evaluate", self.evaluate), ("generate", self.generate)):
                if self.should_run_stage(stage):
                    with torch.no_grad():
                        self.run_stage(stage, fn)

    def run(self) -> tp.Optional[dict]:
        """Run (or resume) the XP: every remaining epoch, or the single ``execute_only`` stage."""
        self.restore(replay_metrics=True)
        if self.cfg.get("execute_only"):
            return self.run_one_stage(self.cfg.execute_only)
        self.log_hyperparams(OmegaConf.to_container(self.cfg, resolve=True))
        for _ in range(self.epoch, self.cfg.optim.epochs + 1):
            begin = time.time()
            self.run_epoch()
            self.check_weights_synchronized()
            self.commit()
            self.logger.info("Epoch %d done in %.1f s", self.epoch - 1, time.time() - begin)
        return self.history[-1] if self.history else None

    def run_one_stage(self, stage: str) -> dict:
        """``execute_only=STAGE``: run one stage on the restored weights without changing the XP's history."""
        stages = {"valid": self.valid, "evaluate": self.evaluate, "generate": self.generate}
        if stage not in stages:
            raise ValueError(f"execute_only={stage!r} is not one of {sorted(stages)}.")
        if stage == "valid":
            with torch.no_grad(), self.swap_ema_state():
                metrics = self.run_stage(stage, stages[stage])
        else:
            with torch.no_grad(), self.swap_best_state():
                metrics = self.run_stage(stage, stages[stage])
        self._start_epoch()  # metrics are logged, not committed to the history
        return metrics

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["rng"] = get_rng_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        rng = state.pop("rng", None)
        super().load_state_dict(state)
        if rng is not None:
            set_rng_state(rng)

    def commit(self, save_checkpoint: bool = True) -> None:
        """Append the epoch's metrics to the history and write the checkpoint(s) atomically."""
        self.history.append(self._pending_metrics)
        self._start_epoch()
        if not flashy.distrib.is_rank_zero():
            return
        self.xp.link.update_history(self.history)
        if not save_checkpoint:
            return
        epoch = self.epoch - 1
        state = self.state_dict()
        ckpt_cfg = self.cfg.checkpoint
        if ckpt_cfg.get("save_last", True):
            checkpoint.save_checkpoint(state, self.checkpoint_path)
        every = ckpt_cfg.get("save_every")
        if every and epoch % every == 0:
            checkpoint.save_checkpoint(state, self.folder / checkpoint.checkpoint_name(epoch))
            checkpoint.flush_stale_checkpoints(self.folder, ckpt_cfg.get("keep_last"))

    def restore(self, load_best: bool = False, replay_metrics: bool = False,
                ignore_state_keys: tp.Sequence[str] = ()) -> bool:
        """Resume from the XP's checkpoint if it exists, else apply ``continue_from`` if set.

        Args:
            load_best: load the best weights into the models (for evaluation and export).
            replay_metrics: log the metrics of past epochs again.
            ignore_state_keys: top-level state entries not to restore.
        Returns:
            True if the XP's own checkpoint was loaded.
        """
        path = self.checkpoint_path
        restored = False
        if path.exists():
            state = checkpoint.load_checkpoint(path)
            for key in ignore_state_keys:
                state.pop(key, None)
            self.load_state_dict(state)
            restored = True
            self.logger.info("Restored checkpoint %s at epoch %d", path, self.epoch - 1)
        elif self.cfg.get("continue_from"):
            self.load_continue_from(str(self.cfg.continue_from))
            self.best_state.update()
        if load_best:
            for name, source in self.best_state.sources.items():
                source.load_state_dict(self.best_state.states[name])
        if replay_metrics and self.history:
            for epoch, stages in enumerate(self.history, start=1):
                for stage, metrics in stages.items():
                    summary = " | ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
                    self.logger.info("Replay | %s | Epoch %d | %s", stage.capitalize(), epoch, summary)
        return restored

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / checkpoint.CHECKPOINT_NAME

    # ---------------------------------------------------------------- show
    def show(self) -> None:
        """Print the models and their parameter counts (``show=true``)."""
        self.logger.info("Solver %s, XP %s", type(self).__name__, self.xp.sig)
        for name, source in self.best_state.sources.items():
            if isinstance(source, nn.Module):
                params = sum(p.numel() for p in source.parameters())
                self.logger.info("Model %s: %.3f M parameters\n%s", name, params / 1e6, source)
        if self.dataloaders:
            sizes = {stage: len(loader.dataset) for stage, loader in self.dataloaders.items()}
            self.logger.info("Datasets: %s", sizes)


def _clone_state(state: tp.Any) -> tp.Any:
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return type(state)((key, _clone_state(value)) for key, value in state.items())
    return state


def _fmt(value: tp.Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
