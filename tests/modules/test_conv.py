import itertools
import math

import pytest
import torch
from torch.nn.utils import parametrize

from audiogen_lab.modules.conv import (StreamableConv1d, StreamableConvTranspose1d,
                                       get_extra_padding_for_conv1d, pad1d, unpad1d)
from audiogen_lab.modules.lstm import StreamableLSTM


@pytest.mark.parametrize('kernel_size,stride,dilation', [(7, 1, 1), (3, 1, 4), (8, 4, 1), (10, 5, 1)])
@pytest.mark.parametrize('length', [40, 41, 57])
def test_conv_output_length_is_ceil_of_length_over_stride(kernel_size, stride, dilation, length):
    for causal in (False, True):
        conv = StreamableConv1d(2, 3, kernel_size, stride=stride, dilation=dilation, causal=causal,
                                pad_mode='constant')
        y = conv(torch.randn(2, 2, length))
        assert y.shape == (2, 3, math.ceil(length / stride))


@pytest.mark.parametrize('pad_mode', ['constant', 'replicate'])
@pytest.mark.parametrize('kernel_size,stride,dilation', [(7, 1, 1), (3, 1, 3), (8, 4, 1)])
def test_causal_conv_does_not_look_ahead(pad_mode, kernel_size, stride, dilation):
    torch.manual_seed(0)
    conv = StreamableConv1d(1, 4, kernel_size, stride=stride, dilation=dilation, causal=True, pad_mode=pad_mode)
    x = torch.randn(1, 1, 64)
    cut = 32
    x2 = x.clone()
    x2[..., cut:] = torch.randn(1, 1, 64 - cut) * 10
    y, y2 = conv(x), conv(x2)
    past = cut // stride  # frames i with (i + 1) * stride <= cut only see the unchanged samples
    torch.testing.assert_close(y[..., :past], y2[..., :past], rtol=0, atol=0)
    assert not torch.allclose(y[..., past:], y2[..., past:])


def test_non_causal_conv_looks_ahead():
    torch.manual_seed(0)
    conv = StreamableConv1d(1, 4, 7, causal=False, pad_mode='constant')
    x = torch.randn(1, 1, 64)
    x2 = x.clone()
    x2[..., 32:] += 1.
    assert not torch.allclose(conv(x)[..., 29:32], conv(x2)[..., 29:32])


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('kernel_size,stride', [(8, 4), (10, 5), (4, 2)])
def test_transposed_conv_restores_length(causal, kernel_size, stride):
    convtr = StreamableConvTranspose1d(3, 2, kernel_size, stride=stride, causal=causal)
    assert convtr(torch.randn(2, 3, 13)).shape == (2, 2, 13 * stride)


def test_causal_transposed_conv_does_not_look_ahead():
    torch.manual_seed(0)
    convtr = StreamableConvTranspose1d(2, 1, 8, stride=4, causal=True)
    z = torch.randn(1, 2, 10)
    z2 = z.clone()
    z2[..., 6:] = torch.randn(1, 2, 4)
    y, y2 = convtr(z), convtr(z2)
    torch.testing.assert_close(y[..., :6 * 4], y2[..., :6 * 4], rtol=0, atol=0)


def test_weight_norm_uses_parametrization():
    conv = StreamableConv1d(2, 3, 5, norm='weight_norm')
    convtr = StreamableConvTranspose1d(3, 2, 4, stride=2, norm='weight_norm')
    for module in (conv.conv.conv, convtr.convtr.convtr):
        assert parametrize.is_parametrized(module, 'weight')
    names = set(dict(conv.named_parameters()))
    assert {'conv.conv.parametrizations.weight.original0', 'conv.conv.parametrizations.weight.original1'} <= names
    # the weight is g * v / ||v||: rescaling v leaves the output unchanged
    x = torch.randn(1, 2, 20)
    y = conv(x)
    with torch.no_grad():
        conv.conv.conv.parametrizations.weight.original1.mul_(3.)
    torch.testing.assert_close(conv(x), y)
    assert not parametrize.is_parametrized(StreamableConv1d(2, 3, 5, norm='none').conv.conv)


def test_time_group_norm_normalizes_and_refuses_causal():
    conv = StreamableConv1d(2, 4, 3, norm='time_group_norm')
    y = conv(torch.randn(3, 2, 50) * 5 + 2)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match='causal'):
        StreamableConv1d(2, 4, 3, norm='time_group_norm', causal=True)
    with pytest.raises(ValueError, match='weight_norm'):
        StreamableConv1d(2, 4, 3, norm='spectral')
    with pytest.raises(ValueError, match='pad_mode'):
        StreamableConv1d(2, 4, 3, pad_mode='zeros')


def test_pad1d_reflect_on_short_input_and_unpad_round_trip():
    x = torch.arange(3.).view(1, 1, 3)
    y = pad1d(x, (4, 5), mode='reflect')
    assert y.shape[-1] == 3 + 9
    torch.testing.assert_close(unpad1d(y, (4, 5)), x)
    torch.testing.assert_close(pad1d(x, (2, 1), mode='reflect')[0, 0], torch.tensor([2., 1., 0., 1., 2., 1.]))
    torch.testing.assert_close(pad1d(x, (1, 2))[0, 0], torch.tensor([0., 0., 1., 2., 0., 0.]))


def test_extra_padding_completes_the_last_window():
    # kernel 4, stride 2, total padding 2: 10 samples fill 5 windows exactly, 11 need a 6th one
    assert get_extra_padding_for_conv1d(10, 4, 2, 2) == 0
    assert get_extra_padding_for_conv1d(11, 4, 2, 2) == 1


def test_lstm_skip_and_causality():
    torch.manual_seed(0)
    lstm = StreamableLSTM(4, num_layers=2, skip=True)
    x = torch.randn(2, 4, 12)
    x2 = x.clone()
    x2[..., 8:] += 1.
    y, y2 = lstm(x), lstm(x2)
    assert y.shape == x.shape
    torch.testing.assert_close(y[..., :8], y2[..., :8])
    with torch.no_grad():
        no_skip = StreamableLSTM(4, num_layers=2, skip=False)
        no_skip.load_state_dict(lstm.state_dict())
        torch.testing.assert_close(lstm(x) - no_skip(x), x)


@pytest.mark.parametrize('pad_mode', ['reflect', 'replicate', 'constant', 'circular'])
@pytest.mark.parametrize('causal', [True, False])
def test_conv_without_a_padded_copy_equals_conv_of_the_padded_input(pad_mode, causal):
    """The forward pads inside the convolution and recomputes only the edge frames: outputs and input gradients
    equal those of the convolution of the padded input, for every kernel, stride, dilation, norm and length."""
    torch.manual_seed(0)
    shortcut = 0
    for (kernel, stride, dilation), length, norm in itertools.product(
            [(1, 1, 1), (3, 1, 3), (7, 1, 1), (4, 2, 1), (10, 5, 1), (5, 3, 1)], [40, 57, 333],
            ['weight_norm'] + ([] if causal else ['time_group_norm'])):
        conv = StreamableConv1d(3, 4, kernel, stride=stride, dilation=dilation, causal=causal, pad_mode=pad_mode,
                                norm=norm)
        x = torch.randn(2, 3, length, requires_grad=True)
        left, right = conv._paddings(length)
        expected = conv.conv(pad1d(x, (left, right), mode=pad_mode))
        shortcut += conv._convolve_padded_in_place(x, left, right) is not None
        got = conv(x)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        grad, = torch.autograd.grad(got.pow(2).sum(), x)
        torch.testing.assert_close(grad, torch.autograd.grad(expected.pow(2).sum(), x)[0], atol=1e-4, rtol=1e-4)
    assert (shortcut == 0) == (pad_mode == 'circular')  # the shortcut served every mode it can
