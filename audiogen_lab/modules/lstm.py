"""LSTM over channel-first sequences, with an optional skip connection."""
from __future__ import annotations

import typing as tp

import torch
from einops import rearrange
from torch import nn

from .streaming import StreamingModule


class StreamableLSTM(StreamingModule):
    """Unidirectional LSTM on [B, C, T] -> [B, C, T], so it is causal and can run frame by frame.

    Streaming: the hidden and cell states after each chunk are the initial states of the next one.

    Args:
        dimension: number of channels `C` (input and hidden size).
        num_layers: stacked LSTM layers.
        skip: add the input to the output (residual connection).
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        assert num_layers >= 1, f"num_layers must be >= 1, got {num_layers}"
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3, f"expected [B, C, T], got shape {tuple(x.shape)}"
        seq = rearrange(x, 'b c t -> b t c')
        if self.is_streaming:
            state = self._stream_state(x)
            if x.shape[-1] == 0:
                return x
            hidden: tp.Optional[tp.Tuple[torch.Tensor, torch.Tensor]] = state.get('hidden')
            y, state['hidden'] = self.lstm(seq, hidden)
        else:
            y, _ = self.lstm(seq)
        if self.skip:
            y = y + seq
        return rearrange(y, 'b t c -> b c t')
