"""Conditioning tokens from MuLaN embeddings: a frozen residual quantizer and the LM-side token tables.

MusicLM-style language models are conditioned on a joint audio/text embedding (MuLaN), an
L2-normalised vector [B, D] (D=128 by default). The embedding is turned into a few discrete tokens by
residual vector quantization (RVQ): level l picks the codeword of its codebook nearest to the residual
left by the levels before it, giving codes [B, L]. The codebooks are fitted once, offline, on a set of
embeddings (level by level, k-means on the residuals) and then frozen: the same embedding always gives
the same tokens, whatever model consumes them.

The fitting is a seeded Lloyd k-means written here rather than the k-means of vector-quantize-pytorch:
that one draws its initial centroids from the global random generator, builds the full [N, K] distance
matrix in one go (about 0.4 GB per iteration for N=100k, K=1024) and leaves empty clusters where they
were. ``ResidualVQ`` trains its codebooks online by EMA, which does not give a reproducible offline fit.

The token embedding tables (:class:`ConditioningEmbedding`, :class:`NamespacedConditioning`) are the
other half: they are owned and trained by the LM that reads the tokens.
"""
from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from ..utils.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

QUANTIZER_KIND = "mulan_embed_quantizer"
_DISTANCE_BUDGET = 1 << 22  # entries of one [chunk, K] distance block (16 MB in float32)
_INIT_NOISE = 1e-2  # std of the noise on duplicated initial centroids, relative to the residuals' RMS norm


def _chunk_rows(codebook_size: int) -> int:
    return max(1, _DISTANCE_BUDGET // codebook_size)


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword of each row of `x` [N, D] in `codebook` [K, D], by blocks of rows.

    Returns the codes [N] (long; the lowest index on ties) and the squared distances [N] to the chosen
    codewords.
    """
    codeword_sq = codebook.pow(2).sum(dim=-1)  # [K]
    codes, dists = [], []
    for block in x.split(_chunk_rows(codebook.shape[0])):
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; the first term does not change the argmin.
        partial = torch.addmm(codeword_sq[None, :], block, codebook.t(), alpha=-2.0)  # [n, K]
        index = partial.argmin(dim=-1)
        codes.append(index)
        # Measured directly (not from the expansion above) so that an exact match gives exactly 0.
        dists.append((block - codebook[index]).pow(2).sum(dim=-1))
    return torch.cat(codes), torch.cat(dists)


def _cluster_sums(x: torch.Tensor, codes: torch.Tensor, codebook_size: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Sum [K, D] and count [K] of the rows of `x` [N, D] assigned to each code.

    One-hot matmuls by blocks rather than ``index_add_``: same result on every run, on CPU and GPU.
    """
    sums = x.new_zeros(codebook_size, x.shape[1])
    counts = x.new_zeros(codebook_size)
    rows = _chunk_rows(codebook_size)
    for block, block_codes in zip(x.split(rows), codes.split(rows)):
        one_hot = F.one_hot(block_codes, codebook_size).to(x.dtype)  # [n, K]
        sums += one_hot.t() @ block
        counts += one_hot.sum(dim=0)
    return sums, counts


def _initial_centroids(x: torch.Tensor, codebook_size: int, generator: torch.Generator) -> torch.Tensor:
    """`codebook_size` starting centroids [K, D] drawn from the rows of `x` [N, D] with `generator`.

    With N >= K: K distinct rows. With N < K: every row once, then K - N rows drawn with replacement
    plus small Gaussian noise (std `_INIT_NOISE` times the rows' RMS norm), so that the copies differ.
    """
    num = x.shape[0]
    if num >= codebook_size:
        return x[torch.randperm(num, generator=generator)[:codebook_size].to(x.device)].clone()
    extra = codebook_size - num
    picks = torch.randint(num, (extra,), generator=generator)
    noise = torch.randn(extra, x.shape[1], generator=generator).to(x)
    scale = _INIT_NOISE * x.pow(2).sum(dim=-1).mean().sqrt()
    order = torch.randperm(num, generator=generator)
    return torch.cat([x[order.to(x.device)], x[picks.to(x.device)] + scale * noise])


def seeded_kmeans(x: torch.Tensor, codebook_size: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd k-means of the rows of `x` [N, D] into `codebook_size` centroids [K, D], reproducibly.

    Initialisation as in :func:`_initial_centroids`. Each iteration assigns every row to its nearest
    centroid and moves each centroid to the mean of its rows; a centroid left without rows is moved onto
    the row currently worst represented (largest distance, first such row on ties) unless every row is
    already represented exactly. Stops early once the assignment no longer changes.
    """
    centroids = _initial_centroids(x, codebook_size, generator)
    previous = None
    for _ in range(iters):
        codes, dists = _nearest(x, centroids)
        if previous is not None and torch.equal(codes, previous):
            break
        previous = codes
        sums, counts = _cluster_sums(x, codes, codebook_size)
        filled = counts > 0
        centroids = torch.where(filled[:, None], sums / counts.clamp(min=1)[:, None], centroids)
        empty = (~filled).nonzero().squeeze(-1)
        if len(empty) > 0:
            worst = torch.sort(dists, descending=True, stable=True).indices[:len(empty)]
            worst = worst[dists[worst] > 0]
            centroids[empty[:len(worst)]] = x[worst]
    return centroids


class MuLaNEmbedQuantizer(nn.Module):
    """Residual vector quantization of MuLaN embeddings [B, D] into conditioning tokens [B, L].

    Codebooks are fitted offline with :meth:`fit`, then frozen (they are buffers, not parameters, so no
    optimizer ever sees them). Encoding is deterministic: at each level, the nearest codeword to the
    residual (lowest index on ties). Inputs are quantized as given (MuLaN embeddings are already
    L2-normalised; nothing is re-normalised here, so that ``decode`` inverts exactly what it encodes).

    Buffers (saved in the state dict, loadable with ``torch.load(weights_only=True)``):
        codebooks: [L, K, D] float32 codewords of each level.
        fitted: bool scalar, True once :meth:`fit` ran or fitted codebooks were loaded.

    Args:
        dim: embedding dimension D.
        num_levels: number of RVQ levels L (tokens per embedding).
        codebook_size: codewords per level K.
    """

    codebooks: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, dim: int = 128, num_levels: int = 12, codebook_size: int = 1024) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_levels", num_levels), ("codebook_size", codebook_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.dim = dim
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.source: tp.Optional[str] = None  # where the codebooks come from, set by load_quantizer
        self.register_buffer("codebooks", torch.zeros(num_levels, codebook_size, dim))
        self.register_buffer("fitted", torch.tensor(False))

    # -- checks ------------------------------------------------------------------------------------

    def _check_embeddings(self, embeddings: torch.Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[-1] != self.dim:
            raise ValueError(
                f"Expected embeddings [B, {self.dim}] (dim={self.dim}), got shape {tuple(embeddings.shape)}; "
                f"build the quantizer with dim={embeddings.shape[-1]} or pass embeddings of dimension {self.dim}.")

    def _levels(self, num_levels: tp.Optional[int]) -> int:
        if num_levels is None:
            return self.num_levels
        if not 1 <= num_levels <= self.num_levels:
            raise ValueError(f"num_levels must be in [1, {self.num_levels}], got {num_levels}.")
        return num_levels

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError(
                "MuLaNEmbedQuantizer is not fitted: call fit(embeddings) or load fitted codebooks "
                "(load_quantizer(path) or load_state_dict) before quantizing.")

    # -- fitting -----------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, iters: int = 20, seed: int = 0) -> tp.Dict[str, float]:
        """Fit the codebooks on `embeddings` [N, D], level by level, with seeded k-means on the residuals.

        Level l runs `iters` Lloyd iterations (see :func:`seeded_kmeans`) on the residuals left by
        levels 0..l-1, then those residuals are updated with the nearest codewords, exactly as
        :meth:`quantize` does. The same data, `iters` and `seed` give the same codebooks.

        When N < codebook_size, fitting still works: each level starts from every residual once plus
        residuals drawn with replacement (seeded) and moved by small seeded noise; the surplus codewords
        then stay near copies of data points.

        Returns:
            ``{"level_1": e_1, ..., "level_L": e_L}`` where ``e_l`` is the relative reconstruction error
            with the first l levels, ``sum ||x - x_hat_l||^2 / sum ||x||^2`` over the data.
        """
        self._check_embeddings(embeddings)
        if embeddings.shape[0] < 1:
            raise ValueError("fit needs at least one embedding, got embeddings of shape "
                             f"{tuple(embeddings.shape)}.")
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}.")
        x = embeddings.detach().to(self.codebooks)
        if not torch.isfinite(x).all():
            raise ValueError("embeddings passed to fit contain NaN or infinite values.")
        generator = torch.Generator().manual_seed(seed)
        total = x.pow(2).sum().clamp(min=torch.finfo(x.dtype).tiny)
        residual = x.clone()
        errors: tp.Dict[str, float] = {}
        for level in range(self.num_levels):
            codebook = seeded_kmeans(residual, self.codebook_size, iters, generator)
            self.codebooks[level].copy_(codebook)
            codes, _ = _nearest(residual, codebook)
            residual = residual - codebook[codes]
            errors[f"level_{level + 1}"] = (residual.pow(2).sum() / total).item()
        self.fitted.fill_(True)
        logger.info("Fitted %d-level MuLaN embedding quantizer (K=%d) on %d embeddings: relative error %.4f "
                    "with 1 level, %.4f with %d.", self.num_levels, self.codebook_size, x.shape[0],
                    errors["level_1"], errors[f"level_{self.num_levels}"], self.num_levels)
        return errors

    # -- encoding and decoding ---------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor, num_levels: tp.Optional[int] = None) -> torch.Tensor:
        """Codes [B, n] (long) of `embeddings` [B, D], with the first `num_levels` levels (all by default)."""
        self._check_embeddings(embeddings)
        self._check_fitted()
        levels = self._levels(num_levels)
        residual = embeddings.detach().to(self.codebooks)
        codes = []
        for level in range(levels):
            level_codes, _ = _nearest(residual, self.codebooks[level])
            residual = residual - self.codebooks[level][level_codes]
            codes.append(level_codes)
        return torch.stack(codes, dim=-1)

    def quantize(self, embeddings: torch.Tensor, num_levels: tp.Optional[int] = None) -> torch.Tensor:
        """Alias of :meth:`forward`: codes [B, n] of `embeddings` [B, D]."""
        return self(embeddings, num_levels=num_levels)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, num_levels: tp.Optional[int] = None) -> torch.Tensor:
        """Embeddings [B, D] (float32) from `codes` [B, n]: the sum of the chosen codewords, level 0 first.

        The first `num_levels` columns of `codes` are used (all n by default; n <= L).
        """
        self._check_fitted()
        if codes.dim() != 2 or not 1 <= codes.shape[1] <= self.num_levels:
            raise ValueError(f"Expected codes [B, n] with 1 <= n <= {self.num_levels}, got shape {tuple(codes.shape)}.")
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}.")
        levels = codes.shape[1] if num_levels is None else self._levels(num_levels)
        if levels > codes.shape[1]:
            raise ValueError(f"num_levels={levels} but codes have only {codes.shape[1]} levels (shape "
                             f"{tuple(codes.shape)}).")
        codes = codes[:, :levels].long().to(self.codebooks.device)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got values in "
                             f"[{codes.min().item()}, {codes.max().item()}].")
        out = self.codebooks.new_zeros(codes.shape[0], self.dim)
        for level in range(levels):
            out = out + self.codebooks[level][codes[:, level]]
        return out


class ConditioningEmbedding(nn.Module):
    """Learned vectors for conditioning tokens: codes [B, L] -> embeddings [B, L, dim].

    One table of `num_levels * codebook_size` rows; code k at level l reads row
    ``l * codebook_size + k``, so the same code at two levels gives two unrelated vectors. This table
    belongs to, and is trained with, the LM that consumes the tokens (the quantizer that produced the
    codes stays frozen). Codes with fewer than `num_levels` columns use the first levels' rows.
    """

    offsets: torch.Tensor

    def __init__(self, num_levels: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        for name, value in (("num_levels", num_levels), ("codebook_size", codebook_size), ("dim", dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.dim = dim
        self.embedding = nn.Embedding(num_levels * codebook_size, dim)
        self.register_buffer("offsets", torch.arange(num_levels) * codebook_size, persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2 or not 1 <= codes.shape[1] <= self.num_levels:
            raise ValueError(f"Expected codes [B, n] with 1 <= n <= {self.num_levels}, got shape {tuple(codes.shape)}.")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}) (codebook_size), got values in "
                             f"[{codes.min().item()}, {codes.max().item()}].")
        offsets = rearrange(self.offsets[:codes.shape[1]], "l -> 1 l")
        return self.embedding(codes.long() + offsets)


class NamespacedConditioning(nn.Module):
    """One :class:`ConditioningEmbedding` per namespace: ``forward(codes [B, L], namespace) -> [B, L, dim]``.

    The stages of a MusicLM-style model (semantic, coarse and fine acoustic LMs) each learn their own
    vectors for the same conditioning tokens; a namespace names the stage. These tables belong to, and
    are trained with, the LM that uses them; the quantizer producing the codes stays frozen.
    """

    def __init__(self, namespaces: tp.Sequence[str] = ("semantic", "coarse", "fine"), num_levels: int = 12,
                 codebook_size: int = 1024, dim: int = 1024) -> None:
        super().__init__()
        names = list(namespaces)
        if not names:
            raise ValueError("namespaces must name at least one namespace.")
        if len(set(names)) != len(names):
            raise ValueError(f"namespaces must be unique, got {names}.")
        for name in names:
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"Each namespace must be a non-empty string without '.', got {name!r}.")
        self.tables = nn.ModuleDict({name: ConditioningEmbedding(num_levels, codebook_size, dim) for name in names})

    @property
    def namespaces(self) -> tp.List[str]:
        return list(self.tables.keys())

    def forward(self, codes: torch.Tensor, namespace: str) -> torch.Tensor:
        if namespace not in self.tables:
            raise KeyError(f"Unknown conditioning namespace {namespace!r}; known namespaces: {self.namespaces}.")
        return self.tables[namespace](codes)


def save_quantizer(quantizer: MuLaNEmbedQuantizer, path: tp.Union[str, Path], source: str) -> Path:
    """Write a fitted quantizer to `path` atomically, as tensors and plain values only.

    `source` records where the codebooks come from (the embedding set, the fitting run...).
    """
    if not bool(quantizer.fitted):
        raise RuntimeError("Refusing to save an unfitted MuLaNEmbedQuantizer: call fit(embeddings) first.")
    payload = {
        "kind": QUANTIZER_KIND,
        "dim": quantizer.dim,
        "num_levels": quantizer.num_levels,
        "codebook_size": quantizer.codebook_size,
        "state": {key: value.detach().cpu().clone() for key, value in quantizer.state_dict().items()},
        "source": str(source),
    }
    return save_checkpoint(payload, path)


def load_quantizer(path: tp.Union[str, Path]) -> MuLaNEmbedQuantizer:
    """Read a quantizer written by :func:`save_quantizer` (``torch.load(weights_only=True)``), on CPU.

    The `source` it was saved with is available as the returned module's ``source`` attribute.
    """
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("kind") != QUANTIZER_KIND:
        kind = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a MuLaN embedding quantizer file (kind {kind!r}, expected "
                         f"{QUANTIZER_KIND!r}); write one with save_quantizer.")
    missing = [key for key in ("dim", "num_levels", "codebook_size", "state", "source") if key not in payload]
    if missing:
        raise ValueError(f"{path} is an incomplete MuLaN embedding quantizer file: missing {missing}.")
    quantizer = MuLaNEmbedQuantizer(payload["dim"], payload["num_levels"], payload["codebook_size"])
    try:
        quantizer.load_state_dict(payload["state"])
    except RuntimeError as err:
        raise ValueError(f"{path} holds a quantizer state that does not match its own sizes: {err}") from err
    quantizer.source = payload["source"]
    return quantizer.eval()
