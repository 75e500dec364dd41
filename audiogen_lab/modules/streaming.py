"""Chunk-by-chunk processing: layers that keep, from one call to the next, what they need of the past.

Offline, a layer sees the whole signal [B, C, T] at once. Inside ``with streaming(module):`` each call
receives the next chunk [B, C, T_i] of the same signal, and every :class:`StreamingModule` below
`module` keeps its own state (the input samples its next window still needs, the overlap of a
transposed convolution, an LSTM's hidden state, the frames attention looks back at) so that
concatenating the outputs along time gives the offline output. Leaving the block forgets every
state; outside it the layers run their offline code unchanged.
"""
from __future__ import annotations

import contextlib
import typing as tp

import torch
from torch import nn

#: layers that mix time steps: a streamed model must hold them only inside a StreamingModule
TEMPORAL_LAYERS: tp.Tuple[tp.Type[nn.Module], ...] = (nn.Conv1d, nn.ConvTranspose1d, nn.RNNBase,
                                                      nn.MultiheadAttention, nn.GroupNorm)

State = tp.Dict[str, tp.Any]


class StreamingModule(nn.Module):
    """A layer [B, C, T] -> [B, C', T'] that can also run chunk by chunk inside :func:`streaming`.

    Subclasses branch in `forward` on ``self.is_streaming``, keep what later chunks need in the dict
    returned by :meth:`_stream_state`, and override :meth:`check_streamable` when some configurations
    cannot stream (a non-causal convolution needs the future).
    """

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: tp.Optional[State] = None
        self._streaming_batch_size: tp.Optional[int] = None
        self._streaming_name: str = type(self).__name__

    @property
    def is_streaming(self) -> bool:
        """True inside a :func:`streaming` block."""
        return self._streaming_state is not None

    def check_streamable(self) -> None:
        """Raise ValueError, saying what to change, when this layer cannot run chunk by chunk."""

    def streaming(self, batch_size: tp.Optional[int] = None) -> tp.ContextManager[None]:
        """``with layer.streaming():`` streams this layer and the streaming layers inside it."""
        return streaming(self, batch_size)

    def _stream_state(self, x: torch.Tensor) -> State:
        """This layer's state for chunk `x` [B, ...], after checking that the batch size did not change."""
        state = self._streaming_state
        assert state is not None, f"{self._streaming_name} is not streaming"
        batch = state.setdefault('batch_size', x.shape[0])
        if x.shape[0] != batch:
            raise ValueError(f"{self._streaming_name}: a streamed chunk has batch size {x.shape[0]} but the "
                             f"stream has {batch}: keep the batch size fixed within a streaming() block.")
        return state

    def _fresh_state(self) -> State:
        return {} if self._streaming_batch_size is None else {'batch_size': self._streaming_batch_size}


def streaming_layers(module: nn.Module) -> tp.List[tp.Tuple[str, StreamingModule]]:
    """(name, layer) of every :class:`StreamingModule` in `module`, itself included."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, StreamingModule)]


def check_streamable(module: nn.Module) -> None:
    """Raise ValueError when `module` cannot stream: one of its streaming layers refuses, or a layer that
    mixes time steps (convolution, RNN, attention, group norm) sits outside every streaming layer and
    would silently process each chunk as a whole signal."""
    layers = streaming_layers(module)
    for name, layer in layers:
        layer._streaming_name = f"{name or 'the module'} ({type(layer).__name__})"
        layer.check_streamable()
    names = [name for name, _ in layers]
    for name, child in module.named_modules():
        inside = any(owner == '' or name.startswith(f"{owner}.") for owner in names)
        if isinstance(child, TEMPORAL_LAYERS) and not inside:
            raise ValueError(f"{name} ({type(child).__name__}) mixes time steps but is not inside a streaming "
                             "layer (StreamingModule): it would treat every chunk as a whole signal, so this "
                             "model cannot stream.")


@contextlib.contextmanager
def streaming(module: nn.Module, batch_size: tp.Optional[int] = None) -> tp.Iterator[None]:
    """Within the block, calls of `module` (or of its parts) process consecutive chunks of one signal.

    Args:
        module: any module; every :class:`StreamingModule` inside it streams.
        batch_size: the batch size B of every chunk, checked on each call (None: set by the first chunk).
    Raises:
        ValueError: `module` cannot stream (see :func:`check_streamable`).
        RuntimeError: `module` is already streaming.
    """
    layers = [layer for _, layer in streaming_layers(module)]
    check_streamable(module)
    if any(layer.is_streaming for layer in layers):
        raise RuntimeError("Already streaming: leave the current streaming() block before opening another one.")
    try:
        for layer in layers:
            layer._streaming_batch_size = batch_size
            layer._streaming_state = layer._fresh_state()
        yield
    finally:
        for layer in layers:
            layer._streaming_state = None
            layer._streaming_batch_size = None


def reset_streaming(module: nn.Module) -> None:
    """Forget the past of every streaming layer of `module`: the next chunk starts a new signal.
    Only valid inside a :func:`streaming` block."""
    layers = [layer for _, layer in streaming_layers(module)]
    if not any(layer.is_streaming for layer in layers):
        raise RuntimeError("reset_streaming() is only meaningful inside a streaming() block.")
    for layer in layers:
        layer._streaming_state = layer._fresh_state()
