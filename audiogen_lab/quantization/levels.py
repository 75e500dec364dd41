"""Helpers shared by the wrappers of vector-quantize-pytorch's residual quantizers.

The library's residual quantizers (``ResidualVQ``, ``ResidualFSQ``, ``ResidualLFQ``) keep their levels in
a ``layers`` ModuleList and their count in ``num_quantizers``; the helpers here run a prefix of those
levels, read codewords back from codes, and build the straight-through term the wrappers add.
"""
from __future__ import annotations

import contextlib
import typing as tp

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F


def straight_through(x: torch.Tensor) -> torch.Tensor:
    """Zero-valued tensor whose gradient with respect to `x` is the identity."""
    return x - x.detach()


@contextlib.contextmanager
def first_levels(residual: nn.Module, n: int) -> tp.Iterator[None]:
    """Make the library residual quantizer `residual` run (and draw quantizer dropout over) its first `n`
    levels only inside the block; the full list of levels is restored afterwards."""
    layers, total = residual.layers, residual.num_quantizers
    assert 1 <= n <= total, f"cannot run {n} levels of a residual quantizer holding {total}"
    if n == total:
        yield
        return
    residual.layers = layers[:n]
    residual.num_quantizers = n
    try:
        yield
    finally:
        residual.layers = layers
        residual.num_quantizers = total


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> tp.Iterator[None]:
    """Run `module` in eval mode inside the block (no codebook updates, no quantizer dropout)."""
    was_training = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)


def levels_used(indices: torch.Tensor) -> int:
    """Number of levels that ran, from library indices [..., Q] where dropped levels hold -1."""
    assert indices.numel() > 0, "cannot count the levels used on an empty batch: give at least one frame"
    return int((rearrange(indices, '... q -> (...) q') >= 0).any(dim=0).sum())


def lookup_levels(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Codewords [B, K, T, C] of `codes` [B, K, T], row k reading `codebooks[k]` ([K, N, C]: N entries of
    dimension C per row)."""
    assert codes.dim() == 3 and codebooks.dim() == 3 and codes.shape[1] == codebooks.shape[0], \
        f"expected codes [B, K, T] and codebooks [K, N, C], got {tuple(codes.shape)} and {tuple(codebooks.shape)}"
    rows, entries = codebooks.shape[:2]
    offsets = torch.arange(rows, device=codes.device) * entries
    table = rearrange(codebooks, 'k n c -> (k n) c')
    return F.embedding(codes.long() + rearrange(offsets, 'k -> 1 k 1'), table)


def check_codes(codes: torch.Tensor, max_rows: int) -> None:
    """Assert `codes` are integer codes [B, K, T] with 1 <= K <= `max_rows`."""
    assert codes.dim() == 3 and 1 <= codes.shape[1] <= max_rows, \
        f"expected codes [B, K, T] with 1 <= K <= {max_rows}, got shape {tuple(codes.shape)}"
    assert not codes.is_floating_point(), f"codes must be integers, got {codes.dtype}"
