"""Bidirectional multi-head self-attention with a key-padding mask, and the pre-norm transformer built on it.

Shared by the encoders that read a whole padded sequence at once (the text tower and the audio
spectrogram tower of a contrastive audio-text model): every token attends to every real token of
its item, and padded tokens are ignored as keys.

Mask convention: `mask [B, N]` is a bool tensor, True on real tokens. It is passed to
`torch.nn.functional.scaled_dot_product_attention` as a bool `attn_mask` of shape `[B, 1, 1, N]`
(True = may attend), broadcast over heads and queries. Outputs at padded positions are computed
(they attend to the real tokens) but carry no meaning; callers ignore them. An item whose tokens are
all padding has no key to attend to and its softmax is NaN: each item must hold at least one real
token (the text tower guarantees it with its always-valid CLS token).
"""
from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _check_mask(x: torch.Tensor, mask: tp.Optional[torch.Tensor]) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True on real tokens), got dtype {mask.dtype}.")
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must have shape [B, N] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}.")


class SelfAttention(nn.Module):
    """Multi-head self-attention `[B, N, D] -> [B, N, D]` with a fused q/k/v projection.

    Args:
        dim: model width `D`.
        heads: attention heads; must divide `dim`.
        dropout: dropout on the attention weights and on the output projection (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}.")
        self.heads = heads
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x [B, N, D]`, `mask [B, N]` bool (True = real token, None = all real) -> `[B, N, D]`."""
        _check_mask(x, mask)
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn_mask = None if mask is None else rearrange(mask, "b n -> b 1 1 n")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_dropout(self.to_out(rearrange(out, "b h n d -> b n (h d)")))


def feed_forward(dim: int, ff_mult: float = 4.0, dropout: float = 0.0) -> nn.Sequential:
    """The GELU MLP of a transformer block, `[..., dim] -> [..., dim]` through `int(dim * ff_mult)` hidden units,
    with dropout after each layer (training only)."""
    hidden = int(dim * ff_mult)
    if hidden < 1:
        raise ValueError(f"ff_mult={ff_mult} gives an empty MLP for dim={dim}; use a larger ff_mult.")
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block `[B, N, D] -> [B, N, D]`: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

    Args:
        dim: model width `D`.
        heads: attention heads; must divide `dim`.
        ff_mult: hidden width of the GELU MLP, as a multiple of `dim`.
        dropout: dropout in the attention and after each MLP layer (training only).
    """

    def __init__(self, dim: int, heads: int, ff_mult: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout=dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = feed_forward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x [B, N, D]`, `mask [B, N]` bool (True = real token) -> `[B, N, D]`."""
        x = x + self.attn(self.attn_norm(x), mask)
        return x + self.ff(self.ff_norm(x))


class TransformerStack(nn.Module):
    """`depth` pre-norm :class:`TransformerBlock` followed by a final LayerNorm, `[B, N, D] -> [B, N, D]`."""

    def __init__(self, dim: int, depth: int, heads: int, ff_mult: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}.")
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, ff_mult, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x [B, N, D]`, `mask [B, N]` bool (True = real token) -> `[B, N, D]`."""
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)
