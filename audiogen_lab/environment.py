"""Team and cluster settings: where Dora keeps experiments, SLURM partitions and resources, reference files.

Read from ``config/teams/<team>.yaml``; the team is ``$AUDIOGEN_LAB_TEAM`` (default ``default``).
Environment variables override the file: ``$AUDIOGEN_LAB_DORA_DIR`` (experiment folder),
``$AUDIOGEN_LAB_REFERENCE_DIR`` (reference files), ``$AUDIOGEN_LAB_USE_RENDEZVOUS`` (file rendezvous for
distributed runs). Nothing here changes an experiment's results,
so none of it enters a signature.
"""
from __future__ import annotations

import os
import typing as tp
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


class AudioGenEnvironment:
    """Process-wide access to the team settings, loaded once and cached."""

    _instance: tp.Optional["AudioGenEnvironment"] = None

    def __init__(self) -> None:
        self.team: str = os.environ.get("AUDIOGEN_LAB_TEAM", "default")
        path = CONFIG_DIR / "teams" / f"{self.team}.yaml"
        if not path.exists():
            choices = sorted(p.stem for p in (CONFIG_DIR / "teams").glob("*.yaml"))
            raise FileNotFoundError(
                f"AUDIOGEN_LAB_TEAM={self.team!r} but {path} does not exist; choose one of {choices}.")
        teams = OmegaConf.load(path)
        if self.team not in teams:
            raise KeyError(f"{path} must define a top-level key {self.team!r}.")
        self.config: DictConfig = teams[self.team]

    @classmethod
    def instance(cls) -> "AudioGenEnvironment":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def reset(cls) -> None:
        """Forget the cached settings (after changing the environment variables)."""
        cls._instance = None

    @classmethod
    def get_dora_dir(cls) -> Path:
        """Absolute folder where Dora stores experiments."""
        value = os.environ.get("AUDIOGEN_LAB_DORA_DIR") or cls.instance().config.get("dora_dir", "outputs")
        return Path(value).expanduser().resolve()

    @classmethod
    def use_rendezvous(cls) -> bool:
        """Whether distributed runs meet through a file in the XP folder rather than a TCP store
        (``$AUDIOGEN_LAB_USE_RENDEZVOUS`` overrides the team's ``use_rendezvous``)."""
        value = os.environ.get("AUDIOGEN_LAB_USE_RENDEZVOUS")
        if value is not None:
            return value.lower() in ("1", "true", "yes")
        return bool(cls.instance().config.get("use_rendezvous", False))

    @classmethod
    def get_reference_dir(cls) -> tp.Optional[Path]:
        value = os.environ.get("AUDIOGEN_LAB_REFERENCE_DIR") or cls.instance().config.get("reference_dir")
        return Path(value).expanduser().resolve() if value else None

    @classmethod
    def get_slurm_partitions(cls, which: tp.Sequence[str] = ("global", "team")) -> tp.Optional[str]:
        """Comma-separated SLURM partitions for `which`, or None when the team defines none."""
        partitions = cls.instance().config.get("partitions", {}) or {}
        names = [partitions.get(key) for key in which if partitions.get(key)]
        return ",".join(names) if names else None

    @classmethod
    def get_slurm_config(cls) -> tp.Dict[str, tp.Any]:
        """The team's SLURM resources (``slurm`` in the team file, e.g. ``gpus``, ``mem_per_gpu``,
        ``cpus_per_gpu``, ``time``): what its cluster accepts, applied over the ``slurm`` defaults of
        config/config.yaml. Empty when the team sets none."""
        slurm = cls.instance().config.get("slurm") or {}
        return dict(OmegaConf.to_container(slurm, resolve=True)) if isinstance(slurm, DictConfig) else dict(slurm)
