"""Local self-attention over channel-first sequences: the optional bottleneck transformer of SoundStream.

Each frame attends to a window of nearby frames only (the past `window` frames, itself included, when
causal; `window` frames on each side otherwise), so the cost grows linearly with the length and a long
file gives the same output as its frames would in a short one. Positions enter as ALiBi biases
(Press et al., 2022): each head subtracts ``slope * distance`` from its attention scores, which needs
no positional table and so no maximum length.

A causal transformer streams: each layer keeps the last ``window - 1`` frames its attention looks
back at (after its input normalisation), and new frames attend to them and to each other.
"""
from __future__ import annotations

import math
import typing as tp

import torch
from einops import rearrange
from torch import nn

from .streaming import StreamingModule


def alibi_slopes(heads: int) -> torch.Tensor:
    """Per-head slopes [heads]: the geometric sequence ``2 ** (-8 * (h + 1) / heads)``."""
    return torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)])


def local_attention_bias(length: int, window: int, causal: bool, slopes: torch.Tensor) -> torch.Tensor:
    """Additive attention bias [heads, T, T]: ``-slope * |i - j|`` inside the window, ``-inf`` outside
    it (and, when causal, for every future frame ``j > i``)."""
    positions = torch.arange(length, device=slopes.device)
    distance = positions[:, None] - positions[None, :]  # i - j: > 0 for past frames
    allowed = distance.abs() < window
    if causal:
        allowed &= distance >= 0
    bias = -slopes[:, None, None] * distance.abs().to(slopes.dtype)
    return bias.masked_fill(~allowed, -math.inf)


class LocalTransformer(StreamingModule):
    """Pre-norm transformer layers with local ALiBi attention on [B, C, T] -> [B, C, T].

    Streaming (causal only): chunks [B, C, T_i] of any length; only the new frames are computed, their
    keys and values cover the ``window - 1`` frames kept from earlier chunks.

    Args:
        dimension: channels `C` (the model width).
        num_layers: transformer layers.
        num_heads: attention heads; must divide `dimension`.
        window: frames each frame attends to on each allowed side (itself included).
        causal: attend to past frames only, so that the output at frame `i` depends on frames ``<= i``.
        dim_feedforward: hidden width of the feed-forward blocks (default ``4 * dimension``).
        dropout: dropout in attention and feed-forward blocks.
    """

    def __init__(self, dimension: int, num_layers: int = 1, num_heads: int = 4, window: int = 64,
                 causal: bool = True, dim_feedforward: int = 0, dropout: float = 0.0):
        super().__init__()
        if dimension % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the transformer dimension ({dimension}).")
        assert num_layers >= 1 and window >= 1, f"num_layers and window must be >= 1, got {num_layers}, {window}"
        self.dimension, self.num_heads, self.window, self.causal = dimension, num_heads, window, causal
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dimension, num_heads, dim_feedforward or 4 * dimension, dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(num_layers)])
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def check_streamable(self) -> None:
        if not self.causal:
            raise ValueError(f"{self._streaming_name} is not causal: its frames attend to later frames, so it "
                             "cannot stream. Build it with causal=True.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3 and x.shape[1] == self.dimension, \
            f"expected [B, {self.dimension}, T], got shape {tuple(x.shape)}"
        if self.is_streaming:
            return self._forward_streaming(x)
        batch, _, length = x.shape
        bias = local_attention_bias(length, self.window, self.causal, self.slopes.float())
        mask = bias.repeat(batch, 1, 1)  # [B * heads, T, T], batch-major as nn.MultiheadAttention expects
        y = rearrange(x, "b c t -> b t c")
        for layer in self.layers:
            y, _ = _pre_norm_layer(layer, y, None, mask.to(y.dtype))
        return rearrange(y, "b t c -> b c t")

    def _forward_streaming(self, x: torch.Tensor) -> torch.Tensor:
        """The next frames [B, C, T_i] -> their outputs [B, C, T_i]; each layer's past lives in the state."""
        state = self._stream_state(x)
        batch, _, length = x.shape
        if length == 0:
            return x
        y = rearrange(x, "b c t -> b t c")
        for index, layer in enumerate(self.layers):
            past = state.get(f"context{index}")
            span = length + (0 if past is None else past.shape[1])
            bias = local_attention_bias(span, self.window, True, self.slopes.float())[:, -length:]
            mask = bias.repeat(batch, 1, 1).to(y.dtype)  # [B * heads, T_i, P + T_i]
            y, context = _pre_norm_layer(layer, y, past, mask)
            state[f"context{index}"] = context[:, max(0, span - (self.window - 1)):]
        return rearrange(y, "b t c -> b c t")


def _pre_norm_layer(layer: nn.TransformerEncoderLayer, y: torch.Tensor, past: tp.Optional[torch.Tensor],
                    mask: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """One pre-norm layer on frames `y` [B, T, C]: ``y + attention(norm1(y))``, then
    ``+ feed_forward(norm2(.))``, where the keys and values are ``[past, norm1(y)]`` [B, P + T, C].

    `mask` [B * heads, T, P + T] is added to the attention scores. Returns the output [B, T, C] and the
    normalised frames [B, P + T, C] (the past of the next chunk when streaming).

    The layer's own ``forward`` is not used: in eval mode without gradients it takes a fused path that
    reads a float mask as a boolean one (every non-zero bias masks its key), which would drop the ALiBi
    biases and let each frame attend to itself only.
    """
    normed = layer.norm1(y)
    context = normed if past is None else torch.cat([past, normed], dim=1)
    attended = layer.self_attn(normed, context, context, attn_mask=mask, need_weights=False)[0]
    y = y + layer.dropout1(attended)
    hidden = layer.dropout(layer.activation(layer.linear1(layer.norm2(y))))
    return y + layer.dropout2(layer.linear2(hidden)), context
