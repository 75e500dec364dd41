"""Fréchet Audio Distance (FAD): the Fréchet distance between Gaussians fitted to audio embeddings.

With `(mu1, S1)` and `(mu2, S2)` the means and covariances of the embeddings of two sets of clips,

    FAD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

`tr((S1 S2)^(1/2))` equals the trace of the square root of the symmetric PSD matrix
`S1^(1/2) S2 S1^(1/2)`, so it is computed with two symmetric eigendecompositions in float64, which
stays real and finite for singular covariances. Lower is better; 0 for identical Gaussians.

:class:`FrechetAudioDistance` streams embeddings into float64 sums (`sum x` and `sum x x^T`), so memory
does not grow with the number of clips, and sums them across ranks when `torch.distributed` is
initialized. Reference statistics of a dataset are computed once and saved with
:class:`GaussianStats`.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..utils.checkpoint import load_checkpoint, save_checkpoint

if tp.TYPE_CHECKING:
    from .embedders import AudioEmbedder

ArrayLike = tp.Union[torch.Tensor, np.ndarray, tp.Sequence[float], float]
_STATS_KEYS = ("mean", "cov", "count")


def _as_float64(value: ArrayLike, name: str, dim: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
    tensor = tensor.reshape(1) if dim == 1 and tensor.dim() == 0 else tensor
    tensor = tensor.reshape(1, 1) if dim == 2 and tensor.dim() == 0 else tensor
    assert tensor.dim() == dim, f"Expected {name} with {dim} dimension(s), got shape {tuple(tensor.shape)}."
    assert torch.isfinite(tensor).all(), f"{name} contains NaN or infinite values."
    return tensor


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root `[D, D]` of a symmetric PSD matrix `[D, D]` (eigenvalues clamped at 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def _trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """`tr((S1 S2)^(1/2))` via the symmetric form `S1^(1/2) S2 S1^(1/2)`, float64."""
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = 0.5 * (middle + middle.T)
    return float(torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum())


def _check_psd(sigma: torch.Tensor, name: str, tolerance: float = 1e-6) -> None:
    scale = max(float(sigma.abs().max()), 1e-300)
    asymmetry = float((sigma - sigma.T).abs().max())
    assert asymmetry <= tolerance * scale, f"{name} is not symmetric (max |S - S^T| = {asymmetry:.3g})."
    lowest = float(torch.linalg.eigvalsh(sigma).min())
    assert lowest >= -tolerance * scale, (
        f"{name} is not positive semi-definite (smallest eigenvalue {lowest:.3g}); pass a covariance matrix.")


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`, in float64.

    Args:
        mu1, mu2: means `[D]` (tensors, arrays or sequences).
        sigma1, sigma2: symmetric positive semi-definite covariances `[D, D]`.
        eps: if the eigendecomposition fails or gives a non-finite value (ill-conditioned input),
            `eps * I` is added to both covariances and the computation is retried.
    Returns:
        The distance as a Python float, >= 0 (round-off below 0 is clamped).
    """
    m1, m2 = _as_float64(mu1, "mu1", 1), _as_float64(mu2, "mu2", 1)
    s1, s2 = _as_float64(sigma1, "sigma1", 2), _as_float64(sigma2, "sigma2", 2)
    dim = m1.shape[0]
    for name, shape, expected in (("mu2", m2.shape, (dim,)), ("sigma1", s1.shape, (dim, dim)),
                                  ("sigma2", s2.shape, (dim, dim))):
        assert tuple(shape) == expected, f"Expected {name} of shape {expected} to match mu1, got {tuple(shape)}."
    _check_psd(s1, "sigma1")
    _check_psd(s2, "sigma2")
    s1, s2 = 0.5 * (s1 + s1.T), 0.5 * (s2 + s2.T)
    try:
        trace_sqrt = _trace_sqrt_product(s1, s2)
    except torch.linalg.LinAlgError:
        trace_sqrt = float("nan")
    if not np.isfinite(trace_sqrt):
        offset = eps * torch.eye(dim, dtype=torch.float64)
        trace_sqrt = _trace_sqrt_product(s1 + offset, s2 + offset)
    distance = float((m1 - m2).pow(2).sum()) + float(s1.trace()) + float(s2.trace()) - 2.0 * trace_sqrt
    return max(distance, 0.0)


@dataclass
class GaussianStats:
    """Mean `[D]` and covariance `[D, D]` (float64) of `count` embeddings: one side of a FAD.

    Reference statistics are computed once per dataset and stored with :meth:`save`; the file is a
    NumPy `.npz` (keys `mean`, `cov`, `count`) or, for any other suffix, a torch file of the same
    dict, read back with `weights_only=True`.
    """
    mean: torch.Tensor
    cov: torch.Tensor
    count: int

    def __post_init__(self) -> None:
        self.mean = _as_float64(self.mean, "mean", 1)
        self.cov = _as_float64(self.cov, "cov", 2)
        self.count = int(self.count)
        dim = self.mean.shape[0]
        assert self.cov.shape == (dim, dim), (
            f"GaussianStats: cov must be [{dim}, {dim}] to match mean [{dim}], got {tuple(self.cov.shape)}.")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_embeddings(cls, embeddings: torch.Tensor) -> "GaussianStats":
        """Statistics of embeddings `[N, D]` (N >= 2); unbiased covariance (divides by N - 1)."""
        assert embeddings.dim() == 2, f"Expected embeddings [N, D], got shape {tuple(embeddings.shape)}."
        return MomentSums.from_embeddings(embeddings).stats()

    def distance(self, other: "GaussianStats", eps: float = 1e-6) -> float:
        """Fréchet distance to `other`."""
        return frechet_distance(self.mean, self.cov, other.mean, other.cov, eps=eps)

    def save(self, path: tp.Union[str, Path]) -> Path:
        """Write to `path` (`.npz` -> NumPy archive, else torch file written atomically). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            with open(path, "wb") as f:
                np.savez(f, mean=self.mean.numpy(), cov=self.cov.numpy(), count=np.int64(self.count))
        else:
            save_checkpoint({"mean": self.mean, "cov": self.cov, "count": self.count}, path)
        return path

    @classmethod
    def load(cls, path: tp.Union[str, Path]) -> "GaussianStats":
        """Read statistics written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"FAD statistics file {path} does not exist.")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {key: archive[key] for key in archive.files}
        else:
            content = load_checkpoint(path)
        if not isinstance(content, dict):
            raise ValueError(f"FAD statistics file {path} must hold a dict with keys {_STATS_KEYS}.")
        missing = [key for key in _STATS_KEYS if key not in content]
        if missing:
            raise KeyError(f"FAD statistics file {path} lacks key(s) {missing}; expected {_STATS_KEYS}.")
        return cls(mean=content["mean"], cov=content["cov"], count=int(content["count"]))


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class MomentSums:
    """Streaming float64 sums of embeddings `[N, D]`: `total [D]`, `outer [D, D]` and `count`.

    The dimension is taken from the first batch unless given. The sums live on the CPU.
    """

    def __init__(self, dim: tp.Optional[int] = None) -> None:
        self.total: tp.Optional[torch.Tensor] = None
        self.outer: tp.Optional[torch.Tensor] = None
        self.count = 0
        if dim is not None:
            self._allocate(dim)

    def _allocate(self, dim: int) -> None:
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    @property
    def dim(self) -> tp.Optional[int]:
        return None if self.total is None else int(self.total.shape[0])

    @classmethod
    def from_embeddings(cls, embeddings: torch.Tensor) -> "MomentSums":
        sums = cls()
        sums.update(embeddings)
        return sums

    def update(self, embeddings: torch.Tensor) -> None:
        """Add embeddings `[N, D]`."""
        assert embeddings.dim() == 2, f"Expected embeddings [N, D], got shape {tuple(embeddings.shape)}."
        emb = embeddings.detach().to(device="cpu", dtype=torch.float64)
        assert torch.isfinite(emb).all(), "Embeddings contain NaN or infinite values; check the audio and embedder."
        if self.total is None:
            self._allocate(emb.shape[1])
        assert self.total is not None and self.outer is not None
        assert emb.shape[1] == self.dim, f"Embedding dimension changed from {self.dim} to {emb.shape[1]}."
        self.total += emb.sum(dim=0)
        self.outer += emb.T @ emb
        self.count += emb.shape[0]

    def all_reduced(self) -> "MomentSums":
        """A copy summed over all ranks when `torch.distributed` is initialized, else a plain copy.

        Every rank must call it (it is a collective); a rank that saw no embedding contributes zeros.
        """
        reduced = MomentSums(self.dim)
        if self.total is not None and self.outer is not None:
            reduced.total, reduced.outer, reduced.count = self.total.clone(), self.outer.clone(), self.count
        if not (dist.is_available() and dist.is_initialized()):
            return reduced
        device = _collective_device()
        dims = torch.tensor([reduced.dim or 0, -(reduced.dim or 0)], dtype=torch.int64, device=device)
        dist.all_reduce(dims[:1], op=dist.ReduceOp.MAX)
        dist.all_reduce(dims[1:], op=dist.ReduceOp.MIN)
        dim, lowest = int(dims[0]), -int(dims[1])
        if reduced.dim not in (None, dim) or (lowest not in (0, dim)):
            raise RuntimeError(f"FAD embedding dimensions differ across ranks (up to {dim}); use one embedder.")
        if dim == 0:
            return reduced
        if reduced.total is None:
            reduced._allocate(dim)
        assert reduced.total is not None and reduced.outer is not None
        count = torch.tensor([float(reduced.count)], dtype=torch.float64, device=device)
        total, outer = reduced.total.to(device), reduced.outer.to(device)
        for tensor in (count, total, outer):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        reduced.total, reduced.outer, reduced.count = total.cpu(), outer.cpu(), int(round(float(count)))
        return reduced

    def stats(self) -> GaussianStats:
        """Mean and unbiased covariance of everything added so far (needs at least 2 embeddings)."""
        if self.total is None or self.outer is None or self.count < 2:
            raise ValueError(f"FAD needs at least 2 embeddings per set to estimate a covariance, got {self.count}.")
        mean = self.total / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return GaussianStats(mean=mean, cov=0.5 * (cov + cov.T), count=self.count)


class FrechetAudioDistance:
    """Streaming FAD between "real" (reference) and "fake" (generated) audio.

    Args:
        embedder: turns audio `[B, C, T]` at any sample rate into embeddings `[N, D]`.
        reference: precomputed statistics of the real set; when given, :meth:`update_real` is refused
            and the real side of every :meth:`compute` is these statistics.
        eps: passed to :func:`frechet_distance`.

    Example::

        fad = FrechetAudioDistance(get_embedder("logmel"), reference=GaussianStats.load("ref.npz"))
        for batch in loader:
            fad.update_fake(model.generate(...), sample_rate=32000)
        score = fad.compute()  # sums over ranks when torch.distributed is initialized
    """

    def __init__(self, embedder: "AudioEmbedder", reference: tp.Optional[GaussianStats] = None,
                 eps: float = 1e-6) -> None:
        self.embedder = embedder
        self.reference = reference
        self.eps = eps
        self._real = MomentSums()
        self._fake = MomentSums()

    def update(self, wav: torch.Tensor, sample_rate: int, which: str = "fake") -> None:
        """Embed audio `[B, C, T]` at `sample_rate` and add it to the `which` ("real" or "fake") set."""
        self.update_embeddings(self.embedder.embed(wav, sample_rate), which)

    def update_real(self, wav: torch.Tensor, sample_rate: int) -> None:
        self.update(wav, sample_rate, which="real")

    def update_fake(self, wav: torch.Tensor, sample_rate: int) -> None:
        self.update(wav, sample_rate, which="fake")

    def update_embeddings(self, embeddings: torch.Tensor, which: str = "fake") -> None:
        """Add precomputed embeddings `[N, D]` to the `which` ("real" or "fake") set."""
        self._sums(which).update(embeddings)

    def _sums(self, which: str) -> MomentSums:
        if which == "real":
            if self.reference is not None:
                raise ValueError("This FrechetAudioDistance uses precomputed reference statistics; "
                                 "real audio cannot be added (drop `reference` to accumulate it).")
            return self._real
        if which == "fake":
            return self._fake
        raise ValueError(f"`which` must be 'real' or 'fake', got {which!r}.")

    def real_stats(self) -> GaussianStats:
        """Statistics of the real side (the reference if given), summed over ranks. Collective."""
        return self.reference if self.reference is not None else self._real.all_reduced().stats()

    def fake_stats(self) -> GaussianStats:
        """Statistics of the generated side, summed over ranks. Collective."""
        return self._fake.all_reduced().stats()

    def all_reduce(self) -> tp.Tuple[MomentSums, MomentSums]:
        """Real and fake sums added over all ranks (copies; the local sums are untouched, so calling it
        again never double counts). No-op copies when `torch.distributed` is not initialized."""
        return self._real.all_reduced(), self._fake.all_reduced()

    def compute(self) -> float:
        """FAD between the real (or reference) and fake sets seen so far on all ranks. Collective."""
        real, fake = self.all_reduce()
        real_stats = self.reference if self.reference is not None else real.stats()
        fake_stats = fake.stats()
        assert real_stats.dim == fake_stats.dim, (
            f"Reference statistics have dimension {real_stats.dim} but the embedder gives {fake_stats.dim}; "
            "recompute the reference with the same embedder.")
        return real_stats.distance(fake_stats, eps=self.eps)

    def reset(self) -> None:
        """Forget the accumulated real and fake embeddings (precomputed reference statistics are kept)."""
        self._real = MomentSums()
        self._fake = MomentSums()
