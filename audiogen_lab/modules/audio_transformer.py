"""Audio Spectrogram Transformer: a log-mel spectrogram cut into patches, embedded and encoded by a
transformer into one vector per clip.

Patches of ``patch_freq x patch_time`` log-mel values are taken without overlap, flattened, normalised
(pre-patch LayerNorm), projected and normalised again (post-patch LayerNorm); 2-D sine-cosine positions
(half the channels for the frequency row, half for the time column) are added, so any length is
accepted. Patches made only of padding frames are masked out of attention and pooling, so a clip padded
into a batch embeds as it does on its own. During training, patch dropout keeps a random subset of each
clip's patches (cheaper steps, a regulariser).
"""
from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from ..data.batch import lengths_to_mask
from .attention import TransformerStack


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sine-cosine embedding ``[N, dim]`` of float `positions` ``[N]`` (dim even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions[:, None].float() * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(rows: int, cols: int, dim: int, device: tp.Optional[torch.device] = None) -> torch.Tensor:
    """Positions ``[cols * rows, dim]`` of a ``rows x cols`` grid in column-major (time-major) order:
    the first ``dim / 2`` channels encode the row (frequency), the rest the column (time)."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine positions need a dimension divisible by 4, got {dim}.")
    row = sincos_1d(torch.arange(rows, device=device), dim // 2)
    col = sincos_1d(torch.arange(cols, device=device), dim // 2)
    grid = torch.cat([row[None, :, :].expand(cols, rows, -1), col[:, None, :].expand(cols, rows, -1)], dim=-1)
    return rearrange(grid, "t f d -> (t f) d")


def patch_dropout(tokens: torch.Tensor, mask: torch.Tensor, prob: float
                  ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Keep ``ceil((1 - prob) * N)`` random patches of each item, valid patches first.

    Args: `tokens` ``[B, N, D]``, `mask` ``[B, N]`` (True on valid patches). Returns the kept tokens
    ``[B, K, D]`` and their mask ``[B, K]`` (an item with fewer than K valid patches keeps all of them and
    some masked ones).
    """
    num = tokens.shape[1]
    keep = max(1, math.ceil((1.0 - prob) * num))
    if keep >= num:
        return tokens, mask
    scores = torch.rand(mask.shape, device=tokens.device) + (~mask).float() * 2.0  # padding ranked last
    index = scores.argsort(dim=1)[:, :keep]
    tokens = torch.gather(tokens, 1, index[:, :, None].expand(-1, -1, tokens.shape[-1]))
    return tokens, torch.gather(mask, 1, index)


class AudioSpectrogramTransformer(nn.Module):
    """Log-mel ``[B, n_mels, F]`` with frame lengths ``[B]`` -> clip embedding ``[B, dim]``.

    Args:
        n_mels: mel bands of the input (a multiple of `patch_freq`).
        dim: transformer width (a multiple of 4 and of `heads`).
        depth: transformer blocks.
        heads: attention heads.
        patch_freq: mel bands per patch.
        patch_time: frames per patch.
        ff_mult: feed-forward width as a multiple of `dim`.
        dropout: dropout in the transformer blocks.
        patch_dropout: fraction of the patches dropped in training mode.
    """

    def __init__(self, n_mels: int = 64, dim: int = 256, depth: int = 4, heads: int = 4, patch_freq: int = 16,
                 patch_time: int = 16, ff_mult: float = 4.0, dropout: float = 0.0, patch_dropout: float = 0.0
                 ) -> None:
        super().__init__()
        if n_mels % patch_freq:
            raise ValueError(f"n_mels={n_mels} must be a multiple of patch_freq={patch_freq}.")
        if not 0.0 <= patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {patch_dropout}.")
        self.n_mels, self.dim = n_mels, dim
        self.patch_freq, self.patch_time = patch_freq, patch_time
        self.patch_dropout = patch_dropout
        patch_dim = patch_freq * patch_time
        self.pre_norm = nn.LayerNorm(patch_dim)
        self.to_tokens = nn.Linear(patch_dim, dim)
        self.post_norm = nn.LayerNorm(dim)
        self.transformer = TransformerStack(dim, depth, heads, ff_mult=ff_mult, dropout=dropout)

    def patchify(self, spec: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor, int]:
        """Patches ``[B, N, patch_freq * patch_time]`` in time-major order, their mask ``[B, N]`` and the
        number of time columns (the spectrogram is padded with 0 to whole patches)."""
        if spec.dim() != 3 or spec.shape[1] != self.n_mels:
            raise ValueError(f"Expected a log-mel spectrogram [B, {self.n_mels}, F], got {tuple(spec.shape)}.")
        cols = max(1, math.ceil(spec.shape[-1] / self.patch_time))
        spec = F.pad(spec, (0, cols * self.patch_time - spec.shape[-1]))
        patches = rearrange(spec, "b (f pf) (t pt) -> b (t f) (pf pt)", pf=self.patch_freq, pt=self.patch_time)
        valid_cols = torch.div(frames + self.patch_time - 1, self.patch_time, rounding_mode="floor")
        rows = self.n_mels // self.patch_freq
        mask = lengths_to_mask(valid_cols, cols).repeat_interleave(rows, dim=1)
        return patches, mask, cols

    @property
    def time_stride(self) -> int:
        """Spectrogram frames per output frame of :meth:`frame_features`."""
        return self.patch_time

    @property
    def frame_dim(self) -> int:
        """Channels of the output frames of :meth:`frame_features`."""
        return self.dim

    def _embed(self, spec: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor, int]:
        """Patch tokens with their positions ``[B, N, dim]``, their mask ``[B, N]`` and the time columns."""
        patches, mask, cols = self.patchify(spec, frames)
        tokens = self.post_norm(self.to_tokens(self.pre_norm(patches)))
        positions = sincos_2d(self.n_mels // self.patch_freq, cols, self.dim, device=tokens.device)
        return tokens + positions.to(tokens.dtype), mask, cols

    def forward(self, spec: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        tokens, mask, _ = self._embed(spec, frames)
        if self.training and self.patch_dropout > 0:
            tokens, mask = patch_dropout(tokens, mask, self.patch_dropout)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("An item has no valid patch: its audio is shorter than one spectrogram frame.")
        tokens = self.transformer(tokens, mask)
        weights = mask.to(tokens.dtype)[:, :, None]
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1)

    def frame_features(self, spec: torch.Tensor, frames: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``[B, n_mels, F]`` with frame lengths ``[B]`` -> one vector per time column of patches
        ``[B, ceil(F / patch_time), dim]`` (the transformer's outputs averaged over the frequency rows) and the
        columns holding valid frames ``[B]``. No patch dropout: every patch is seen, as in eval mode."""
        tokens, mask, cols = self._embed(spec, frames)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("An item has no valid patch: its audio is shorter than one spectrogram frame.")
        tokens = self.transformer(tokens, mask)
        valid_cols = rearrange(mask, "b (t f) -> b t f", t=cols)[..., 0].sum(dim=-1)
        return reduce(tokens, "b (t f) d -> b t d", "mean", t=cols), valid_cols
