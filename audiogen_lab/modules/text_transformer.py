"""Text tower of a contrastive audio-text model: token ids `[B, L]` -> one embedding `[B, D]` per text.

A learned CLS vector is prepended to the token embeddings (plus learned position embeddings), the
sequence goes through a pre-norm :class:`~audiogen_lab.modules.attention.TransformerStack` with a
key-padding mask, and the CLS output (after the final LayerNorm) is the text embedding. The CLS token
is always a valid key, so an item made only of padding (an empty caption) still gets a finite output.
Padding tokens never influence the result: the embedding of a text does not depend on how much padding
it was batched with.
"""
from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from .attention import TransformerStack
from .text_tokenizer import check_token_batch


class TextTransformer(nn.Module):
    """Transformer text encoder trained from scratch, `(tokens [B, L], mask [B, L]) -> [B, dim]`.

    Args:
        vocab_size: number of token ids (the tokenizer's `vocab_size`).
        dim: model width and output dimension.
        depth: transformer blocks.
        heads: attention heads; must divide `dim`.
        ff_mult: hidden width of the MLPs, as a multiple of `dim`.
        dropout: dropout inside the blocks (training only).
        max_length: longest token sequence accepted (size of the position table; the CLS token is extra).
    """

    def __init__(self, vocab_size: int, dim: int = 256, depth: int = 4, heads: int = 4, ff_mult: float = 4.0,
                 dropout: float = 0.0, max_length: int = 256) -> None:
        super().__init__()
        if vocab_size < 1 or max_length < 1:
            raise ValueError(f"vocab_size and max_length must be positive, got {vocab_size} and {max_length}.")
        self.vocab_size = vocab_size
        self.dim = dim
        self.max_length = max_length
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.empty(max_length, dim))
        self.cls = nn.Parameter(torch.empty(dim))
        for weight in (self.token_emb.weight, self.pos_emb, self.cls):
            nn.init.normal_(weight, std=0.02)
        self.transformer = TransformerStack(dim, depth, heads, ff_mult, dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`tokens [B, L]` long ids, `mask [B, L]` bool (True on real tokens) -> CLS embedding `[B, dim]`."""
        check_token_batch(tokens, mask, self.max_length)
        batch, length = tokens.shape
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"Token ids must lie in [0, vocab_size={self.vocab_size}), got ids in "
                             f"[{tokens.min().item()}, {tokens.max().item()}]: the tokenizer and vocab_size disagree.")
        x = self.token_emb(tokens) + self.pos_emb[:length]  # [B, L, D]
        x = torch.cat([repeat(self.cls, "d -> b 1 d", b=batch), x], dim=1)  # [B, 1 + L, D]
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)  # CLS is always a real key
        return self.transformer(x, mask)[:, 0]
