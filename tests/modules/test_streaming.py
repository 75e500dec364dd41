"""Streaming layers: chunk by chunk equals offline for every streamable layer, and the refusals."""
from __future__ import annotations

import typing as tp

import pytest
import torch
from torch import nn

from audiogen_lab.modules.conv import StreamableConv1d, StreamableConvTranspose1d
from audiogen_lab.modules.lstm import StreamableLSTM
from audiogen_lab.modules.streaming import reset_streaming, streaming
from audiogen_lab.modules.transformer import LocalTransformer

CHUNKINGS = [[1], [3, 7], [5, 1, 2], [1000]]


def _streamed(module: nn.Module, x: torch.Tensor, sizes: tp.Sequence[int]) -> torch.Tensor:
    """Feed `x` [B, C, T] to `module` in chunks whose lengths cycle through `sizes`; concatenate."""
    outputs, start, index = [], 0, 0
    with torch.no_grad(), streaming(module, batch_size=x.shape[0]):
        while start < x.shape[-1]:
            size = sizes[index % len(sizes)]
            outputs.append(module(x[..., start:start + size]))
            start, index = start + size, index + 1
    return torch.cat(outputs, dim=-1)


@pytest.mark.parametrize('sizes', CHUNKINGS)
@pytest.mark.parametrize('kernel_size,stride,dilation,pad_mode', [
    (7, 1, 1, 'constant'), (3, 1, 4, 'replicate'), (8, 4, 1, 'constant'), (10, 5, 1, 'replicate')])
def test_causal_conv_streams_like_offline(sizes, kernel_size, stride, dilation, pad_mode):
    torch.manual_seed(0)
    conv = StreamableConv1d(2, 3, kernel_size, stride=stride, dilation=dilation, causal=True, pad_mode=pad_mode,
                            norm='weight_norm')
    x = torch.randn(2, 2, 60)  # a multiple of every stride: every frame comes out
    with torch.no_grad():
        expected = conv(x)
    torch.testing.assert_close(_streamed(conv, x, sizes), expected, rtol=0, atol=1e-6)


def test_conv_keeps_an_incomplete_stride_for_the_next_chunk():
    torch.manual_seed(0)
    conv = StreamableConv1d(1, 2, 8, stride=4, causal=True, pad_mode='constant')
    x = torch.randn(1, 1, 16)
    with torch.no_grad():
        expected = conv(x)
        with conv.streaming():
            first, second = conv(x[..., :6]), conv(x[..., 6:])
    assert first.shape[-1] == 1 and second.shape[-1] == 3
    torch.testing.assert_close(torch.cat([first, second], dim=-1), expected, rtol=0, atol=1e-6)


def test_reflect_padding_streams_when_the_first_chunk_is_long_enough():
    torch.manual_seed(0)
    conv = StreamableConv1d(1, 2, 7, causal=True, pad_mode='reflect')
    x = torch.randn(1, 1, 40)
    with torch.no_grad():
        expected = conv(x)
    torch.testing.assert_close(_streamed(conv, x, [7, 1, 3]), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"reflect.*more than 6 samples.*got 4"):
        _streamed(conv, x, [4])


@pytest.mark.parametrize('sizes', CHUNKINGS)
@pytest.mark.parametrize('kernel_size,stride', [(8, 4), (10, 5), (4, 4)])
def test_causal_transposed_conv_streams_like_offline(sizes, kernel_size, stride):
    torch.manual_seed(0)
    convtr = StreamableConvTranspose1d(3, 2, kernel_size, stride=stride, causal=True, norm='weight_norm')
    z = torch.randn(2, 3, 13)
    with torch.no_grad():
        expected = convtr(z)
    streamed = _streamed(convtr, z, sizes)
    assert streamed.shape == expected.shape == (2, 2, 13 * stride)
    torch.testing.assert_close(streamed, expected, rtol=0, atol=1e-6)


def test_transposed_conv_holds_back_its_overlap_without_bias():
    """The first chunk's samples are final; its spill reaches the next chunk once, bias not repeated."""
    torch.manual_seed(0)
    convtr = StreamableConvTranspose1d(1, 1, 8, stride=4, causal=True)
    with torch.no_grad():
        convtr.convtr.convtr.bias.fill_(10.)
        z = torch.randn(1, 1, 4)
        expected = convtr(z)
        with convtr.streaming():
            first = convtr(z[..., :1])
            torch.testing.assert_close(first, expected[..., :4], rtol=0, atol=1e-6)
            rest = convtr(z[..., 1:])
    torch.testing.assert_close(rest, expected[..., 4:], rtol=0, atol=1e-6)


@pytest.mark.parametrize('sizes', CHUNKINGS)
def test_lstm_streams_like_offline(sizes):
    torch.manual_seed(0)
    lstm = StreamableLSTM(4, num_layers=2)
    x = torch.randn(2, 4, 17)
    with torch.no_grad():
        expected = lstm(x)
    torch.testing.assert_close(_streamed(lstm, x, sizes), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize('sizes', CHUNKINGS)
@pytest.mark.parametrize('window', [1, 4])
def test_causal_transformer_streams_with_its_windowed_past(sizes, window):
    torch.manual_seed(0)
    transformer = LocalTransformer(16, num_layers=2, num_heads=4, window=window, causal=True).eval()
    x = torch.randn(2, 16, 30)
    with torch.no_grad():
        expected = transformer(x)
    torch.testing.assert_close(_streamed(transformer, x, sizes), expected, rtol=1e-5, atol=1e-5)


def test_transformer_needs_its_past_frames():
    """Without the kept frames (a reset at every chunk) the streamed output differs: the state matters."""
    torch.manual_seed(0)
    transformer = LocalTransformer(16, num_layers=1, num_heads=4, window=4, causal=True).eval()
    x = torch.randn(1, 16, 12)
    with torch.no_grad():
        expected = transformer(x)
        with transformer.streaming():
            pieces = []
            for start in range(0, 12, 3):
                reset_streaming(transformer)
                pieces.append(transformer(x[..., start:start + 3]))
    assert not torch.allclose(torch.cat(pieces, dim=-1), expected, atol=1e-3)


def test_state_is_forgotten_when_the_block_ends_or_on_reset():
    torch.manual_seed(0)
    stack = nn.Sequential(StreamableConv1d(1, 4, 5, causal=True, pad_mode='constant'), StreamableLSTM(4, 1),
                          StreamableConvTranspose1d(4, 1, 4, stride=2, causal=True))
    a, b = torch.randn(1, 1, 20), torch.randn(1, 1, 20)
    with torch.no_grad():
        expected = stack(b)
        _streamed(stack, a, [3])
        assert not any(getattr(m, 'is_streaming', False) for m in stack.modules())
        torch.testing.assert_close(_streamed(stack, b, [3]), expected, rtol=0, atol=1e-6)
        with streaming(stack):
            stack(a)
            continued = stack(b)  # b heard as the continuation of a
            reset_streaming(stack)
            stack(a)
            reset_streaming(stack)
            restarted = stack(b)
    assert not torch.allclose(continued, expected, atol=1e-3)
    torch.testing.assert_close(restarted, expected, rtol=0, atol=1e-6)


def test_refusals():
    with pytest.raises(ValueError, match='not causal'):
        with StreamableConv1d(1, 1, 3, causal=False).streaming():
            pass
    with pytest.raises(ValueError, match='causal=True and trim_right_ratio=1'):
        with StreamableConvTranspose1d(1, 1, 4, stride=2, causal=True, trim_right_ratio=0.5).streaming():
            pass
    with pytest.raises(ValueError, match='not causal'):
        with LocalTransformer(8, num_heads=2, causal=False).streaming():
            pass
    with pytest.raises(ValueError, match=r"1 \(Conv1d\) mixes time steps"):
        with streaming(nn.Sequential(StreamableLSTM(2, 1), nn.Conv1d(2, 2, 3))):
            pass
    conv = StreamableConv1d(1, 1, 3, causal=True, pad_mode='constant')
    with conv.streaming(batch_size=2):
        with pytest.raises(RuntimeError, match='Already streaming'):
            with conv.streaming():
                pass
        with pytest.raises(ValueError, match='batch size 1 but the stream has 2'):
            conv(torch.randn(1, 1, 4))
    with pytest.raises(RuntimeError, match='inside a streaming'):
        reset_streaming(conv)
