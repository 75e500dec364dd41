"""Small helpers shared by solvers: device choice, RNG state, config conversion."""
from __future__ import annotations

import random
import typing as tp

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf


def pick_device(device: tp.Optional[str]) -> str:
    """``auto`` (or None) picks ``cuda`` when available, else ``cpu``; other values are kept."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def dict_from_config(cfg: tp.Union[DictConfig, ListConfig, dict, None]) -> dict:
    """A plain, resolved dict from a config node (for ``**kwargs``)."""
    if cfg is None:
        return {}
    if isinstance(cfg, (DictConfig, ListConfig)):
        out = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(out, dict), f"Expected a mapping, got {type(out)}"
        return out
    return dict(cfg)


def get_rng_state() -> tp.Dict[str, tp.Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) in a ``weights_only``-loadable form."""
    np_state = np.random.get_state()
    state: tp.Dict[str, tp.Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: tp.Dict[str, tp.Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: tp.Any) -> tp.Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def metrics_as_floats(metrics: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """`metrics` with every tensor value detached and turned into a Python float (for logs and history)."""
    return {key: float(value.detach()) if isinstance(value, torch.Tensor) else value for key, value in metrics.items()}
