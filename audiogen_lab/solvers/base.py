"""The one trainer base every model family builds on.

A family subclasses :class:`StandardSolver` and implements :meth:`build_model`,
:meth:`build_dataloaders`, :meth:`run_step`, :meth:`build_model_from_config` (how to build each of its
models from a config, for loading and export), and where it has them :meth:`evaluate` and
:meth:`generate`. The base owns everything else:

- models registered with a role (:mod:`.roles`): trainable, adversary, frozen; modes, broadcast,
  cross-rank checks, EMA, best state and export follow the role;
- optimizer groups (:class:`~audiogen_lab.optim.group.OptimizerGroup`) with schedule, clipping,
  gradient accumulation (``optim.accumulation_steps``) and fp16 scaling;
- the epoch loop: train → valid (EMA weights) → best state → evaluate/generate (best weights);
- non-finite losses: ranks agree before any collective, the update is skipped and leaves every
  parameter, buffer, optimizer and adaptive state exactly as it was;
- atomic, finite-checked checkpoints with safe loading; automatic resume (weights, optimizers, EMA,
  best state, per-rank RNG, history); ``continue_from``; ``execute_only``; ``show``.

Epoch ``e`` is ``optim.updates_per_epoch`` updates of ``optim.accumulation_steps`` micro-batches. Datasets
are told the epoch before every stage, so a resumed run reproduces an uninterrupted one.
"""
from __future__ import annotations

import copy
import logging
import math
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

from ..config_check import validate_config
from ..data.builders import loader_length
from ..optim.ema import ModuleDictEMA
from ..optim.group import Accumulation, OptimizerGroup
from ..utils import checkpoint
from ..utils import distrib
from ..utils.best_state import BestStateDictManager
from ..utils.utils import pick_device, seed_everything
from . import roles

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive updates produced a non-finite loss."""


class NonFiniteStateError(RuntimeError):
    """Raised instead of writing a checkpoint that holds non-finite weights."""


class _ConfigAsYaml:
    """State source storing the config as YAML text (never a pickled DictConfig)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def state_dict(self) -> str:
        return OmegaConf.to_yaml(self.cfg, resolve=True)

    def load_state_dict(self, state: tp.Any) -> None:  # write-only
        return


class _Described:
    """Write-only state source returning what `fn` describes at save time."""

    def __init__(self, fn: tp.Callable[[], tp.Any]) -> None:
        self.fn = fn

    def state_dict(self) -> tp.Any:
        return self.fn()

    def load_state_dict(self, state: tp.Any) -> None:
        return


class StandardSolver(ABC, flashy.BaseSolver):
    """Base solver: epochs of train → valid → best state → evaluate/generate, with checkpoints.

    Subclasses declare which validation metric selects the best state with
    :attr:`best_metric_name` and whether lower or higher is better with :attr:`best_metric_direction`;
    ``best_metric.name`` / ``best_metric.direction`` in the config override them.
    """

    #: name of the validation metric that selects the best state (None: keep the last weights)
    best_metric_name: tp.Optional[str] = None
    #: ``'lower'`` or ``'higher'``: which values of :attr:`best_metric_name` are better
    best_metric_direction: str = "lower"
    #: the model returned by :meth:`model_from_checkpoint` when no name is given
    default_model_name: str = "model"

    def __init__(self, cfg: DictConfig) -> None:
        validate_config(cfg, check_device=False)  # one clear line per bad value, before any work
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

        self.models: tp.Dict[str, roles.ModelEntry] = {}
        self.optim_groups: tp.Dict[str, OptimizerGroup] = {}
        self.upstream: tp.Dict[str, str] = {}
        self._adaptive: tp.Dict[str, tp.Any] = {}
        self.accumulation = Accumulation(int(cfg.optim.get("accumulation_steps", 1) or 1))
        self._nonfinite_streak = 0
        self._train_step = 0
        self._update_skipped = False
        self._snapshot: tp.Optional[dict] = None
        self._current_batch: tp.Any = None
        self.ema: tp.Optional[ModuleDictEMA] = None
        self._ema_sources = nn.ModuleDict()
        chosen = cfg.get("best_metric") or {}
        if chosen.get("name"):
            self.best_metric_name = str(chosen.name)
        if chosen.get("direction"):
            self.best_metric_direction = str(chosen.direction)
        self.best_state = BestStateDictManager(direction=self.best_metric_direction)
        self.register_stateful("best_state")
        self.stateful.register("models", _Described(self._describe_models), write_only=True)
        self.stateful.register("upstream", _Described(lambda: dict(self.upstream)), write_only=True)

        self.autocast_dtype = getattr(torch, cfg.autocast_dtype)
        self.autocast_enabled = bool(cfg.autocast)
        self.scaler: tp.Optional[torch.amp.GradScaler] = None
        if self.autocast_enabled:
            self._check_autocast()
            if self.autocast_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler(torch.device(self.device).type)
                self.register_stateful("scaler")

        seed_everything(cfg.seed)  # same initial weights whatever the entry point and rank
        self.dataloaders: tp.Dict[str, tp.Any] = {}
        self.build_dataloaders()
        self.build_model()
        for entry in self.models.values():
            if entry.is_updated:
                flashy.distrib.broadcast_model(entry.module)  # every rank starts from rank 0's weights
        distrib.seed_rank_streams(cfg.seed)  # ...then draws its own noise, masks and crops
        self._build_ema()
        self.register_stateful("_train_step", "_nonfinite_streak")

    def _check_autocast(self) -> None:
        from ..utils.autocast import check_autocast
        check_autocast(self.device, self.autocast_dtype, bool(self.cfg.get("autocast_force", False)))

    # ---------------------------------------------------------------- to implement by families
    @abstractmethod
    def build_model(self) -> None:
        """Create the models (:meth:`register_model`) and their optimizer groups
        (:meth:`register_optimizer_group`), on :attr:`device`."""

    @abstractmethod
    def build_dataloaders(self) -> None:
        """Fill :attr:`dataloaders` (``train``, ``valid``, and ``evaluate`` / ``generate`` if used)."""

    @abstractmethod
    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        """One step of the current stage (``train`` or ``valid``); returns updated `metrics`.

        In ``train``, one micro-batch: forward pass, then :meth:`check_finite` on every loss (return at
        once when it is False: the base has already undone the update), then ``group.backward`` and
        ``group.step()`` per optimizer group, then :meth:`end_update`.
        """

    @classmethod
    def build_model_from_config(cls, cfg: DictConfig, name: str) -> nn.Module:
        """The model `name` of this family built from `cfg` (untrained): used to load checkpoints
        and exports without the solver. Families override it for each model they export."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build its model {name!r} from a config.")

    def evaluate(self) -> dict:
        """Evaluation metrics, run under the best weights (default: nothing)."""
        return {}

    def generate(self) -> dict:
        """Write samples (reconstructions or generations) under the best weights (default: nothing)."""
        return {}

    # ---------------------------------------------------------------- registration
    def register_model(self, name: str, module: nn.Module, role: str = roles.TRAINABLE,
                       ema: tp.Optional[bool] = None, best_state: tp.Optional[bool] = None,
                       export: tp.Optional[bool] = None) -> nn.Module:
        """Hold `module` as attribute `name` with a role (``trainable``, ``adversary``, ``frozen``).

        Trainable models default to EMA (when ``optim.ema.use``), best state and export; adversaries
        to none of them; frozen models are put in eval mode for good, receive no gradient and are not
        checkpointed (they come from their own checkpoint, see :meth:`load_upstream`).
        """
        if name in self.models:
            raise ValueError(f"A model named {name!r} is already registered.")
        entry = roles.make_entry(name, module, role, ema=ema, best_state=best_state, export=export)
        setattr(self, name, module)
        self.models[name] = entry
        if role == roles.FROZEN:
            roles.freeze(module)
            return module
        self.register_stateful(name)
        if entry.best_state:
            self.best_state.register(name, module)
        if entry.ema:
            self._ema_sources[name] = module
        return module

    def register_optimizer_group(self, name: str, models: tp.Sequence[str], optimizer: torch.optim.Optimizer,
                                 scheduler: tp.Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                                 max_norm: float = 0.0) -> OptimizerGroup:
        """An :class:`OptimizerGroup` over the registered `models`, checkpointed as ``optim.<name>``."""
        if name in self.optim_groups:
            raise ValueError(f"An optimizer group named {name!r} is already registered.")
        unknown = [model for model in models if model not in self.models]
        if unknown:
            raise KeyError(f"Optimizer group {name!r}: register the models {unknown} first.")
        frozen = [model for model in models if self.models[model].role == roles.FROZEN]
        if frozen:
            raise ValueError(f"Optimizer group {name!r}: the models {frozen} are frozen.")
        group = OptimizerGroup(name, [self.models[model].module for model in models], optimizer,
                               scheduler=scheduler, max_norm=max_norm, accumulation=self.accumulation,
                               scaler=self.scaler)
        self.optim_groups[name] = group
        self.stateful.register(f"optim.{name}", group)
        return group

    def register_adaptive_state(self, *names: str) -> None:
        """Checkpoint the attributes `names` (objects with ``state_dict``) and restore them when an
        update is skipped (loss balancers, adaptive weights...)."""
        for name in names:
            self._adaptive[name] = getattr(self, name)
            self.register_stateful(name)

    def _build_ema(self) -> None:
        ema_cfg = self.cfg.optim.get("ema", {}) or {}
        if ema_cfg.get("use", False) and len(self._ema_sources) > 0:
            self.ema = ModuleDictEMA(self._ema_sources, decay=ema_cfg.get("decay", 0.999))
            self.register_stateful("ema")
            self.logger.info("EMA of %s with decay %s", list(self._ema_sources), self.ema.decay)

    def _describe_models(self) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
        return {name: {"role": entry.role, "export": entry.export, "best_state": entry.best_state,
                       "family": getattr(entry.module, "family", None)}
                for name, entry in self.models.items()}

    # ---------------------------------------------------------------- upstream models
    def load_upstream(self, key: str, family: tp.Optional[str] = None) -> nn.Module:
        """The frozen upstream model named by config key `key` (``//sig/SIG``, ``//pretrained/NAME``,
        a checkpoint or an export path), on :attr:`device`. The source string is recorded in this
        solver's checkpoints and exports; the upstream weights never are."""
        from .loading import load_model
        source = self.cfg.get(key)
        if not source:
            raise ValueError(f"Config key '{key}' must name the upstream model (//sig/SIG, //pretrained/NAME "
                             "or a checkpoint/export path).")
        model = load_model(str(source), device=self.device, family=family)
        self.upstream[key] = str(source)
        self.logger.info("Upstream %s: %s (%s)", key, source, type(model).__name__)
        return roles.freeze(model)

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
        if updates:
            return int(updates)
        length = loader_length(self.dataloaders.get("train"))
        if length is None:
            raise ValueError("The train loader has no length (an iterable dataset): set optim.updates_per_epoch.")
        return length // self.accumulation.steps

    @property
    def autocast(self) -> tp.ContextManager:
        """Autocast context for forward passes, from ``autocast`` and ``autocast_dtype``."""
        if not self.autocast_enabled:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)

    # ---------------------------------------------------------------- training utilities
    def check_finite(self, losses: tp.Dict[str, torch.Tensor], batch: tp.Any = None) -> bool:
        """True if every tensor in `losses` is finite on every rank (one all-reduce, before any other
        collective of the step, so that all ranks skip together).

        Otherwise the update is undone (gradients of every group zeroed, buffers and adaptive states
        restored to what they were before its first micro-batch), the step, the offending terms and
        the files of the batch are logged, and the caller must return at once. After
        ``optim.max_nonfinite_steps`` consecutive bad updates the run stops with
        :class:`NonFiniteLossError`; the count survives a restart.
        """
        bad = [name for name, value in losses.items()
               if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value.detach()).all())]
        if not distrib.any_rank(bool(bad), self.device):
            if self.accumulation.is_last:
                self._nonfinite_streak = 0
            return True
        self._skip_update()
        self._nonfinite_streak += 1
        terms = ", ".join(f"{name}={float(losses[name].detach().float().mean()):.4g}" for name in bad)
        files = _batch_paths(batch)
        self.logger.error("Non-finite loss at epoch %d, update %d (skipped, nothing changed): %s%s",
                          self.epoch, self._train_step, terms or "on another rank",
                          f"; batch files: {', '.join(files)}" if files else "")
        limit = self.cfg.optim.get("max_nonfinite_steps", 10)
        if self._nonfinite_streak >= limit:
            raise NonFiniteLossError(
                f"{self._nonfinite_streak} consecutive updates had non-finite losses (last at epoch {self.epoch}, "
                f"update {self._train_step}: {terms or 'on another rank'}). Stopping; lower optim.lr, enable "
                "gradient clipping (optim.max_norm) or check the data. The last good checkpoint is kept.")
        return False

    def _take_snapshot(self) -> dict:
        buffers = {name: [(key, buf.detach().clone()) for key, buf in entry.module.named_buffers()]
                   for name, entry in self.models.items() if entry.is_updated}
        adaptive = {name: copy.deepcopy(source.state_dict()) for name, source in self._adaptive.items()}
        return {"buffers": buffers, "adaptive": adaptive}

    @torch.no_grad()
    def _restore_snapshot(self, snapshot: dict) -> None:
        for name, saved in snapshot["buffers"].items():
            module = self.models[name].module
            current = dict(module.named_buffers())
            for key, value in saved:
                target = current.get(key)
                if target is not None and target.shape == value.shape:
                    target.copy_(value)
                else:
                    owner, _, leaf = key.rpartition(".")
                    setattr(module.get_submodule(owner) if owner else module, leaf, value.clone())
        for name, state in snapshot["adaptive"].items():
            self._adaptive[name].load_state_dict(copy.deepcopy(state))

    def _skip_update(self) -> None:
        for group in self.optim_groups.values():
            group.zero_grad()
        for entry in self.models.values():
            if entry.is_updated:
                entry.module.zero_grad(set_to_none=True)
        if self._snapshot is not None:
            self._restore_snapshot(self._snapshot)
        self._update_skipped = True

    def end_update(self) -> None:
        """Call once per micro-batch after the groups' ``step()``: at the end of an update the update
        counter, the fp16 scaler and the EMA advance (schedules advance in their own group)."""
        if not self.accumulation.is_last:
            return
        self._train_step += 1
        if self.scaler is not None:
            self.scaler.update()
        ema_cfg = self.cfg.optim.get("ema", {}) or {}
        if self.ema is not None and self._train_step % max(1, ema_cfg.get("updates", 1)) == 0:
            self.ema.step()

    def check_weights_synchronized(self) -> None:
        """In a distributed run, check that every rank holds the same weights and float buffers
        (cheap checksums) for every trainable model and adversary.

        Ranks drift apart when a gradient or buffer is not averaged; training on would silently
        waste the run, so this raises instead.
        """
        if not flashy.distrib.is_distributed():
            return
        for name, entry in self.models.items():
            if not entry.is_updated:
                continue
            tensors = [t.detach().double() for t in list(entry.module.parameters()) + list(entry.module.buffers())
                       if t.is_floating_point()]
            if not tensors:
                continue
            local = torch.stack([sum(t.sum() for t in tensors), sum(t.pow(2).sum() for t in tensors)])
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

    def set_train_mode(self, training: bool) -> None:
        """Trainable models and adversaries to train (or eval) mode; frozen models stay in eval."""
        for entry in self.models.values():
            if entry.is_updated:
                entry.module.train(training)

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

    def _average(self, metrics: dict, count: float) -> dict:
        return distrib.average_metrics(metrics, count, device=self.device)

    def train(self) -> dict:
        """``updates_per_epoch`` updates of ``accumulation_steps`` micro-batches each.

        A skipped (non-finite) update consumes its micro-batches and changes nothing; the summary
        reports ``skipped_updates`` and ``skipped_fraction``.
        """
        self.set_train_mode(True)
        self._set_epoch("train")
        steps = self.accumulation.steps
        updates = self.updates_per_epoch
        total = updates * steps
        progress = self.log_progress("train", _cycle(self.dataloaders["train"], total), total=total,
                                     updates=self.cfg.logging.log_updates)
        average = flashy.averager()
        metrics: dict = {}
        skipped, done, skipping = 0, 0, False
        for idx, batch in enumerate(progress):
            self.accumulation.micro = idx % steps
            if self.accumulation.is_first:
                skipping = False
                self._snapshot = self._take_snapshot()
            if skipping:
                continue
            self._update_skipped = False
            step_metrics = self.run_step(idx, batch, {})
            if self._update_skipped:
                skipping = True
                skipped += 1
                continue
            if self.accumulation.is_last:
                done += 1
            metrics = average(step_metrics)
            progress.update(**metrics)
        self._snapshot = None
        self.accumulation.micro = 0
        metrics = self._average(metrics, done)
        metrics["skipped_updates"] = float(skipped)
        metrics["skipped_fraction"] = skipped / max(1, updates)
        if skipped:
            self.logger.warning("Epoch %d: %d of %d updates skipped (non-finite losses).", self.epoch, skipped, updates)
        return metrics

    def valid(self) -> dict:
        self.set_train_mode(False)
        self._set_epoch("valid")
        loader = self.dataloaders["valid"]
        total = loader_length(loader)
        progress = self.log_progress("valid", loader, total=0 if total is None else total,
                                     updates=self.cfg.logging.log_updates)
        average = flashy.averager()
        metrics: dict = {}
        count = 0
        with torch.no_grad():
            for idx, batch in enumerate(progress):
                metrics = average(self.run_step(idx, batch, {}))
                progress.update(**metrics)
                count += 1
        return self._average(metrics, count)

    def should_run_stage(self, stage: str) -> bool:
        """evaluate/generate run every ``<stage>.every`` epochs and on the last epoch."""
        every = (self.cfg.get(stage) or {}).get("every")
        if stage not in self.dataloaders:
            return False
        is_last = self.epoch == self.cfg.optim.epochs
        return is_last or bool(every and self.epoch % every == 0)

    def update_best_state_from_stage(self, stage: str = "valid") -> None:
        """Take the best state from the `stage` metrics; never from a stage with a non-finite metric."""
        name = self.best_metric_name
        metrics = self._pending_metrics.get(stage, {})
        nonfinite = sorted(key for key, value in metrics.items()
                           if isinstance(value, float) and not math.isfinite(value))
        if nonfinite:
            self.logger.error("Not taking a best state from %s: non-finite metrics %s.", stage, nonfinite)
            return
        if name is None:
            self.best_state.update()
            return
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
            self.set_train_mode(False)
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
        self.set_train_mode(False)
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
        state["rng"] = distrib.gather_rng_states()
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        rng = state.pop("rng", None)
        for key in ("models", "upstream"):
            state.pop(key, None)
        unknown = sorted(set(state) - set(self.stateful.sources))
        if unknown:
            raise KeyError(f"The checkpoint holds entries this solver does not have: {unknown} (expected "
                           f"{sorted(self.stateful.sources)}). Was it written by another solver or version?")
        super().load_state_dict(state)
        if rng is not None:
            distrib.restore_rng_states(rng if isinstance(rng, list) else [rng])

    def commit(self, save_checkpoint: bool = True) -> None:
        """Append the epoch's metrics to the history, write the checkpoint(s) atomically, then the
        history file (a kill in between never leaves a history entry without its checkpoint).

        A state holding non-finite weights is never written: :class:`NonFiniteStateError` names the
        tensors and the previous checkpoint is kept.
        """
        self.history.append(self._pending_metrics)
        self._start_epoch()
        state = self.state_dict() if save_checkpoint else None  # collective: every rank takes part
        if not flashy.distrib.is_rank_zero():
            return
        if state is not None:
            bad = _nonfinite_tensors(state)
            if bad:
                self.history.pop()
                shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
                raise NonFiniteStateError(f"Not writing the checkpoint of epoch {self.epoch - 1}: non-finite values "
                                          f"in {shown}. The previous checkpoint is kept.")
            epoch = self.epoch - 1
            ckpt_cfg = self.cfg.checkpoint
            if ckpt_cfg.get("save_last", True):
                checkpoint.save_checkpoint(state, self.checkpoint_path)
            every = ckpt_cfg.get("save_every")
            if every and epoch % every == 0:
                checkpoint.save_checkpoint(state, self.folder / checkpoint.checkpoint_name(epoch))
                checkpoint.flush_stale_checkpoints(self.folder, ckpt_cfg.get("keep_last"))
        self.xp.link.update_history(self.history)

    def _load_own_checkpoint(self) -> tp.Optional[dict]:
        """The XP's latest loadable checkpoint: ``checkpoint.th``, or when it is corrupt the newest
        intact ``checkpoint_<epoch>.th`` (logged). None when the XP has none."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            return checkpoint.load_checkpoint(path)
        except checkpoint.CheckpointLoadError as err:
            for epoch, candidate in reversed(checkpoint.epoch_checkpoints(self.folder)):
                try:
                    state = checkpoint.load_checkpoint(candidate)
                except checkpoint.CheckpointLoadError:
                    continue
                self.logger.warning("%s cannot be loaded (%s). Resuming from the intact %s (epoch %d) instead.",
                                    path, err, candidate.name, epoch)
                return state
            raise checkpoint.CheckpointLoadError(
                f"{err} No intact checkpoint_<epoch>.th beside it to resume from: move {path} away to "
                "restart the XP from scratch.") from err

    def restore(self, load_best: bool = False, replay_metrics: bool = False,
                ignore_state_keys: tp.Sequence[str] = ()) -> bool:
        """Resume from the XP's checkpoint if it exists, else apply ``continue_from`` if set.

        Leftover temporary files of an interrupted save are removed first.

        Args:
            load_best: load the best weights into the models (for evaluation and export).
            replay_metrics: log the metrics of past epochs again.
            ignore_state_keys: top-level state entries not to restore.
        Returns:
            True if the XP's own checkpoint was loaded.
        """
        if flashy.distrib.is_rank_zero() and self.folder.exists():
            for leftover in checkpoint.leftover_temporary_files(self.folder):
                leftover.unlink(missing_ok=True)
                self.logger.info("Removed %s, left by an interrupted checkpoint write.", leftover.name)
        state = self._load_own_checkpoint()
        restored = state is not None
        if state is not None:
            for key in ignore_state_keys:
                state.pop(key, None)
            try:
                self.load_state_dict(state)
            except (RuntimeError, KeyError) as err:
                detail = str(err).strip().splitlines()
                shown = " ".join(line.strip() for line in detail[:2])
                raise checkpoint.CheckpointLoadError(
                    f"The checkpoint in {self.folder} does not fit the current config of XP {self.xp.sig} "
                    f"({shown[:600]}). The config files changed since it ran (a preset's values are not part "
                    "of the signature): restart it from scratch with `dora run --clear ...`, or move the "
                    "folder away.") from err
            self.logger.info("Restored checkpoint of epoch %d from %s", self.epoch - 1, self.folder)
        elif self.cfg.get("continue_from"):
            self.load_continue_from(str(self.cfg.continue_from))
            if self.ema is not None:
                self.ema = ModuleDictEMA(self._ema_sources, decay=self.ema.decay)  # restart from the loaded weights
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

    def load_continue_from(self, source: str) -> None:
        """Initialise the exported models from ``continue_from``: ``//sig/SIG`` or a checkpoint (its
        best states), an export, or ``//pretrained/NAME``. Keys must match exactly."""
        from .loading import read_model_states
        states = read_model_states(source)
        targets = {name: entry for name, entry in self.models.items() if entry.export or entry.best_state}
        used = [name for name in targets if name in states]
        if not used:
            raise ValueError(f"continue_from={source}: it holds the models {sorted(states)}, this solver "
                             f"trains {sorted(targets)}; none match.")
        for name in used:
            _load_strict(self.models[name].module, states[name], f"continue_from={source} (model {name!r})")
        self.logger.info("Initialised %s from %s", used, source)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / checkpoint.CHECKPOINT_NAME

    # ---------------------------------------------------------------- loading without the solver
    @classmethod
    def model_from_checkpoint(cls, source: tp.Union[str, Path], name: tp.Optional[str] = None,
                              device: tp.Union[str, torch.device] = "cpu") -> nn.Module:
        """A trained model (best weights, EMA when used) in eval mode on `device`, from ``//sig/SIG``, an
        XP folder, a checkpoint or export file, or ``//pretrained/NAME``. `name` picks one of the
        models of the checkpoint (default: :attr:`default_model_name`, or the only one)."""
        from .loading import load_model
        return load_model(str(source), name=name, device=device, default_name=cls.default_model_name)

    # ---------------------------------------------------------------- show
    def show(self) -> None:
        """Print every model with its role and parameter count, and the datasets (``show=true``)."""
        self.logger.info("Solver %s, XP %s", type(self).__name__, self.xp.sig)
        for name, entry in self.models.items():
            flags = [flag for flag in ("ema", "best_state", "export") if getattr(entry, flag)]
            self.logger.info("Model %s [%s%s]: %.3f M parameters\n%s", name, entry.role,
                             f", {', '.join(flags)}" if flags else "", entry.num_parameters / 1e6, entry.module)
        for name, group in self.optim_groups.items():
            self.logger.info("Optimizer group %s: %s, lr %g, max_norm %g, accumulation %d", name,
                             type(group.optimizer).__name__, group.lr, group.max_norm, self.accumulation.steps)
        if self.dataloaders:
            sizes = {stage: loader_length(loader) for stage, loader in self.dataloaders.items()}
            self.logger.info("Batches per stage: %s", sizes)


def _cycle(loader: tp.Iterable, total: int) -> tp.Iterator[tp.Any]:
    """`total` batches from `loader`, going through it again when it runs out (iterable datasets)."""
    produced = 0
    while produced < total:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            produced += 1
            if produced >= total:
                return
        if empty:
            raise RuntimeError("The train loader yielded no batch: check the dataset and dataset.batch_size.")


def _batch_paths(batch: tp.Any) -> tp.List[str]:
    if isinstance(batch, dict):
        return [str(path) for path in batch.get("paths", [])]
    return []


def _load_strict(module: nn.Module, state: tp.Dict[str, torch.Tensor], what: str) -> None:
    """`module.load_state_dict(state)`, with an error listing missing and unexpected keys and shape mismatches.

    A shape mismatch is only an error if the module refuses it: a module may size some buffers from the
    state it loads (e.g. a vocabulary stored as bytes), in its own ``_load_from_state_dict``.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(key for key in set(own) & set(state)
                        if isinstance(state[key], torch.Tensor) and state[key].shape != own[key].shape)

    def _show(keys: tp.List[str]) -> str:
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"
    message = (f"{what}: the weights do not match the model. Missing keys: {_show(missing)}. "
               f"Unexpected keys: {_show(unexpected)}. Shape mismatches: {_show(mismatched)}.")
    if missing or unexpected:
        raise ValueError(message)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        if mismatched:
            raise ValueError(message) from error
        raise


def _nonfinite_tensors(state: tp.Any, prefix: str = "") -> tp.List[str]:
    """Names of the floating-point tensors in a nested state holding NaN or inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [name for key, value in state.items()
                for name in _nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(state, (list, tuple)):
        return [name for index, value in enumerate(state) for name in _nonfinite_tensors(value, f"{prefix}[{index}]")]
    return []


def _clone_state(state: tp.Any) -> tp.Any:
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return type(state)((key, _clone_state(value)) for key, value in state.items())
    return state


def _fmt(value: tp.Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
