"""Entry point for ``dora run`` / ``dora grid`` and the helpers to get a solver back from an XP.

    dora run solver=compression/debug
    dora run -d solver=compression/encodec_mmd_32khz        # all local GPUs (CPU: --ddp_workers N)
    dora grid compression.encodec_mmd                        # sweep on SLURM

In a notebook::

    from audiogen_lab.train import get_solver_from_sig
    solver = get_solver_from_sig('SIG')                      # restored, with its best weights loaded

Before anything is written to the XP folder, ``dora run`` checks the command line and the config
(:mod:`audiogen_lab.config_check`: values of the common keys, keys added with ``+`` that no config
defines, unknown solver names, ``device=cuda`` without a GPU, a ``continue_from`` that is not a
checkpoint) and rank 0 takes the XP's lock (:class:`~audiogen_lab.utils.lock.XPLock`, ``run.lock`` in
the XP folder): a second run of the same XP, here or on another machine sharing the folder, is
refused while the first one is alive. A lock left by a killed run is taken over (see
:mod:`audiogen_lab.utils.lock`); to run anyway, set ``AUDIOGEN_LAB_FORCE_RUN=1`` or delete the file.
These user errors print one line, without a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import typing as tp
from pathlib import Path

import dora
import dora.distrib
import flashy
import torch
from dora.hydra import HydraMain
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_check import (ConfigError, check_added_keys, check_checkpoint_reference, closest_keys,
                           split_added_keys, unknown_option_message, validate_config)
from .environment import AudioGenEnvironment
from .solvers.builders import get_solver
from .utils.checkpoint import CHECKPOINT_NAME, CheckpointLoadError
from .utils.lock import XPLock, XPLockedError
from .utils.utils import pick_device, seed_everything

logger = logging.getLogger(__name__)


def init_seed_and_system(cfg: DictConfig) -> None:
    """Seed every RNG, set the number of threads and the multiprocessing start method."""
    seed_everything(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    if cfg.get("mp_start_method"):
        import multiprocessing
        try:
            multiprocessing.set_start_method(cfg.mp_start_method)
        except RuntimeError:
            pass  # already set in this process


def init_logging(cfg: DictConfig) -> None:
    log_name = f"{cfg.execute_only}.log.{{rank}}" if cfg.get("execute_only") else "solver.log.{rank}"
    flashy.setup_logging(level=str(cfg.logging.level).upper(), log_name=log_name)


def init_distributed(cfg: DictConfig) -> None:
    """Start torch.distributed when several processes run (torchrun, ``dora run -d``, SLURM)."""
    spec = dora.distrib.get_distrib_spec()
    if spec.world_size > 1:
        backend = "nccl" if pick_device(cfg.device).startswith("cuda") else "gloo"
        flashy.distrib.init(backend=backend)


#: Errors caused by what the user asked for: printed as one line, without a traceback.
USER_ERRORS: tp.Tuple[tp.Type[BaseException], ...] = (ConfigError, XPLockedError, CheckpointLoadError)


def lock_name(cfg: DictConfig) -> tp.Optional[str]:
    """The lock a run of `cfg` takes in its XP folder, or None (``show=true``).

    Training takes ``run.lock``. ``execute_only=STAGE`` takes ``execute_only_STAGE.lock`` instead: it
    only reads the checkpoint (written atomically) and never writes the history or the checkpoint, so
    it may run while the XP trains, but two runs of the same stage would write the same
    ``STAGE.log.{rank}`` and samples.
    """
    if cfg.get("show"):
        return None
    if cfg.get("execute_only"):
        return f"execute_only_{cfg.execute_only}.lock"
    return "run.lock"


#: The lock held by the run of this process (rank 0 of a training or ``execute_only`` run), else None.
held_lock: tp.Optional[XPLock] = None


@contextlib.contextmanager
def xp_lock(xp: dora.XP) -> tp.Iterator[tp.Optional[XPLock]]:
    """Hold the lock of `xp` on rank 0 (see :func:`lock_name`); nothing on other ranks and for ``show=true``.

    The lock refreshes its heartbeat from a background thread: the solver has nothing to call.
    """
    global held_lock
    name = lock_name(xp.cfg)
    if name is None or dora.distrib.get_distrib_spec().rank > 0:
        yield None
        return
    with XPLock(xp.folder, name=name, description=f"XP {xp.sig}") as lock:
        held_lock = lock
        try:
            yield lock
        finally:
            held_lock = None


class AudioGenMain(HydraMain):
    """Dora's Hydra entry point, with the command line checked and the XP locked before anything is written.

    Dora writes ``.argv.json`` (which also stores keys outside the signature, such as ``device``) in
    :meth:`init_xp`, and Hydra writes ``.hydra/`` and the logs when the task starts; both come after
    the checks and the lock, so a refused run leaves the XP folder untouched.
    """

    def get_xp(self, argv: tp.Sequence[str]) -> dora.XP:
        try:
            return super().get_xp(argv)
        except (HydraException, OmegaConfBaseException) as err:
            raise self._command_line_error(err, list(argv)) from err

    def check_xp(self, xp: dora.XP, runtime: bool = True) -> None:
        """Values of the config, keys added with ``+``, and with `runtime` (when the run happens
        here) the device and the checkpoints it starts from (``continue_from`` unless the XP resumes
        from its own checkpoint, top-level ``*_checkpoint`` keys)."""
        kept, added = split_added_keys(xp.argv, self._config_groups)
        if added:
            check_added_keys(added, self._get_config(kept))
        validate_config(xp.cfg, check_device=runtime)
        if runtime:
            for key in xp.cfg.keys():
                if str(key).endswith("_checkpoint") or (key == "continue_from" and not
                                                        (xp.folder / CHECKPOINT_NAME).exists()):
                    check_checkpoint_reference(str(key), xp.cfg.get(key))

    def init_xp(self, xp: dora.XP) -> dora.XP:
        """Checks (without the device: grids are often prepared on a machine without GPU), then Dora's."""
        self.check_xp(xp, runtime=False)
        return super().init_xp(xp)

    def __call__(self) -> tp.Any:
        argv = self._get_argv()
        if not self._is_active(argv):
            return self._main()
        xp = self.get_xp(argv)
        self.check_xp(xp, runtime=True)
        with xp_lock(xp):
            HydraMain.init_xp(self, xp)
            with xp.enter():
                return self._main()

    def _command_line_error(self, err: Exception, argv: tp.List[str]) -> ConfigError:
        """One line for a Hydra or OmegaConf composition error."""
        if isinstance(err, MissingConfigException) and err.missing_cfg_file:
            group, _, option = err.missing_cfg_file.partition("/")
            if option and (Path(self.full_config_path) / group).is_dir():
                return ConfigError(unknown_option_message(group, option, Path(self.full_config_path)))
        if isinstance(err, OverrideParseException):
            return ConfigError(f"Invalid override {err.override!r}: {_first_line(err.message)}")
        cause = err.__cause__
        key = getattr(cause, "full_key", None) if cause is not None else None
        text = _first_line(str(err))
        if key and "not in struct" in str(cause):
            arg = next((a for a in argv if a.split("=", 1)[0].lstrip("+~") == key), key)
            reference, _ = self._get_base_config(argv)
            close = closest_keys(key, reference)
            hint = f"did you mean {', '.join(close)}?" if close else "no existing key is close."
            return ConfigError(f"Unknown config key {key!r} in {arg!r}; {hint}")
        return ConfigError(f"Invalid command line: {text}")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def audiogen_main(config_name: str, config_path: str, **kwargs: tp.Any) -> tp.Callable[[tp.Callable], AudioGenMain]:
    """Like :func:`dora.hydra_main`, with :class:`AudioGenMain`."""
    return lambda fn: AudioGenMain(fn, config_name=config_name, config_path=config_path, **kwargs)


@audiogen_main(config_path="../config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> tp.Any:
    try:
        init_seed_and_system(cfg)
        init_logging(cfg)
        if held_lock is not None and held_lock.took_over:
            logger.warning("Took over the lock %s: %s.", held_lock.path, held_lock.took_over)
        init_distributed(cfg)
        if cfg.get("show"):
            solver = get_solver(cfg)
            solver.show()
            return None
        solver = get_solver(cfg)
        return solver.run()
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # One line on the console and in the XP's log (the run's only record on a cluster), no traceback.
        logger.error("%s", err)
        raise SystemExit(1) from err


main.dora.dir = AudioGenEnvironment.get_dora_dir()
main.dora.use_rendezvous = AudioGenEnvironment.use_rendezvous()
for _key, _value in AudioGenEnvironment.get_slurm_config().items():
    if _key not in main._base_cfg.slurm:
        raise KeyError(f"config/teams/{AudioGenEnvironment.instance().team}.yaml sets slurm.{_key}, which is not a key "
                       f"of `slurm` in config/config.yaml; choose one of {sorted(main._base_cfg.slurm)}.")
    main._base_cfg.slurm[_key] = _value
_slurm_partition = AudioGenEnvironment.get_slurm_partitions()
if _slurm_partition:
    main._base_cfg.slurm.partition = _slurm_partition


def get_solver_from_xp(xp: dora.XP, override_cfg: tp.Optional[tp.Union[dict, DictConfig]] = None,
                       restore: bool = True, load_best: bool = True,
                       ignore_state_keys: tp.Sequence[str] = ()) -> tp.Any:
    """Instantiate the solver of `xp` (with `override_cfg` merged in) and restore its checkpoint.

    Args:
        xp: a Dora XP, e.g. ``main.get_xp_from_sig(sig)``.
        override_cfg: config values to change (e.g. ``{'dataset': {'num_workers': 0}}``).
        restore: load the XP's checkpoint.
        load_best: put the best weights into the models (what you want for evaluation).
        ignore_state_keys: checkpoint entries not to restore (e.g. ``['optimizer']``).
    """
    cfg = xp.cfg
    if override_cfg is not None:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(override_cfg))
    with xp.enter():
        solver = get_solver(cfg)
        if restore:
            solver.restore(load_best=load_best, ignore_state_keys=ignore_state_keys)
    return solver


def get_solver_from_sig(sig: str, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
    """Like :func:`get_solver_from_xp`, from a signature (``SIG`` or ``//sig/SIG``)."""
    sig = sig[len("//sig/"):] if sig.startswith("//sig/") else sig
    xp = main.get_xp_from_sig(sig)
    return get_solver_from_xp(xp, *args, **kwargs)


def xp_folder(sig: str) -> Path:
    """The folder of the XP with signature `sig`."""
    return Path(main.dora.dir) / "xps" / sig


_FULL_ERROR_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def _print_user_errors(kind: tp.Type[BaseException], value: BaseException, tb: tp.Any) -> None:
    """Excepthook of the command line: user errors as one line, the rest (or HYDRA_FULL_ERROR=1) as usual."""
    if issubclass(kind, USER_ERRORS) and os.environ.get("HYDRA_FULL_ERROR") != "1":
        sys.stderr.write(f"Error: {value}\n{_FULL_ERROR_HINT}\n")
        return
    _previous_excepthook(kind, value, tb)


def _from_command_line() -> bool:
    """Whether this process is the ``dora`` command or ``python -m audiogen_lab.train``."""
    entry = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return entry == "dora" or (spec is not None and spec.name in ("dora.__main__", "audiogen_lab.train"))


_previous_excepthook = sys.excepthook
if _from_command_line():
    sys.excepthook = _print_user_errors


if __name__ == "__main__":
    os.environ.setdefault("DORA_PACKAGE", "audiogen_lab")
    main()
