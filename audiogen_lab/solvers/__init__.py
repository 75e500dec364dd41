"""Training recipes. Families are registered by name (``solver: NAME`` in the config) with the path of
their class, imported on demand: a new family adds one line here, and no module imports another
family's solver to find it."""
from __future__ import annotations

import importlib
import typing as tp

SOLVERS: tp.Dict[str, str] = {
    "compression": "audiogen_lab.solvers.compression:CompressionSolver",
    "consistency_ae": "audiogen_lab.solvers.consistency_ae:ConsistencyAESolver",
    "mulan": "audiogen_lab.solvers.mulan:MuLaNSolver",
    "audiolm": "audiogen_lab.solvers.audiolm:AudioLMSolver",
    "semantic_kmeans": "audiogen_lab.solvers.semantic_kmeans:SemanticKMeansSolver",
    "latent_gan": "audiogen_lab.solvers.latent_gan:LatentGANSolver",
}


def get_solver_class(name: str) -> tp.Type[tp.Any]:
    """The solver class registered as `name` (the config's ``solver`` value)."""
    if name not in SOLVERS:
        raise KeyError(f"solver={name!r} is unknown; registered solvers: {sorted(SOLVERS)}.")
    module, _, attr = SOLVERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
