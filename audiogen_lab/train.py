"""Entry point for ``dora run`` / ``dora grid`` and the helpers to get a solver back from an XP.

    dora run solver=compression/debug
    dora run -d solver=compression/encodec_mmd_32khz        # all local GPUs (CPU: --ddp_workers N)
    dora grid compression.encodec_mmd                        # sweep on SLURM

In a notebook::

    from audiogen_lab.train import get_solver_from_sig
    solver = get_solver_from_sig('SIG')                      # restored, with its best weights loaded
"""
from __future__ import annotations

import logging
import os
import typing as tp
from pathlib import Path

import dora
import flashy
import torch
from dora import hydra_main
from omegaconf import DictConfig, OmegaConf

from .environment import AudioGenEnvironment
from .solvers.builders import get_solver
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


@hydra_main(config_path="../config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> tp.Any:
    init_seed_and_system(cfg)
    init_logging(cfg)
    init_distributed(cfg)
    if cfg.get("show"):
        solver = get_solver(cfg)
        solver.show()
        return None
    solver = get_solver(cfg)
    return solver.run()


main.dora.dir = AudioGenEnvironment.get_dora_dir()
main.dora.use_rendezvous = AudioGenEnvironment.use_rendezvous()
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


if __name__ == "__main__":
    os.environ.setdefault("DORA_PACKAGE", "audiogen_lab")
    main()
