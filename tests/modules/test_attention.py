"""Masked self-attention against a naive implementation, and padding invariance of the transformer stack."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.modules.attention import SelfAttention, TransformerBlock, TransformerStack


def _naive_attention(attn: SelfAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) with masked keys at -inf) V, one batch item and head at a time."""
    batch, length, dim = x.shape
    head_dim = dim // attn.heads
    q, k, v = attn.to_qkv(x).split(dim, dim=-1)
    out = torch.zeros(batch, length, dim)
    for b in range(batch):
        for h in range(attn.heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            scores = q[b, :, cols] @ k[b, :, cols].t() / math.sqrt(head_dim)
            scores = scores.masked_fill(~mask[b][None, :], -math.inf)
            out[b, :, cols] = scores.softmax(dim=-1) @ v[b, :, cols]
    return attn.to_out(out)


def test_self_attention_matches_naive_masked_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(8, heads=2).eval()
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [False, True, False, True, False]])
    with torch.no_grad():
        assert torch.allclose(attn(x, mask), _naive_attention(attn, x, mask), atol=1e-5)
        full = torch.ones(3, 5, dtype=torch.bool)
        assert torch.allclose(attn(x), _naive_attention(attn, x, full), atol=1e-5)


def test_masked_keys_do_not_change_real_outputs():
    torch.manual_seed(0)
    stack = TransformerStack(8, depth=2, heads=2).eval()
    x = torch.randn(2, 4, 8)
    padded = torch.cat([x, 100 * torch.randn(2, 3, 8)], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    with torch.no_grad():
        out = stack(padded, mask)
        assert torch.allclose(out[:, :4], stack(x), atol=1e-5)
        assert torch.isfinite(out).all()


def test_block_is_residual_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = TransformerBlock(8, heads=2, ff_mult=2.0)
    for module in (block.attn.to_out, block.ff[3]):  # zero the last layer of both branches
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)
    x = torch.randn(2, 4, 8)
    assert torch.equal(block(x), x)
    fresh = TransformerBlock(8, heads=2)
    fresh(x, torch.tensor([[True, True, False, True]] * 2)).pow(2).sum().backward()
    for name, param in fresh.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="heads"):
        SelfAttention(10, heads=4)
    attn = SelfAttention(8, heads=2)
    with pytest.raises(TypeError, match="bool"):
        attn(torch.randn(1, 3, 8), torch.ones(1, 3))
    with pytest.raises(ValueError, match="mask"):
        attn(torch.randn(1, 3, 8), torch.ones(1, 4, dtype=torch.bool))
