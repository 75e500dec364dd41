"""The CPU rewrites of 1-D convolutions equal ``F.conv1d``: values and every gradient."""
import itertools
import typing as tp

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from audiogen_lab.modules import cpu_conv
from audiogen_lab.modules.cpu_conv import conv1d, few_outputs_conv1d, module_conv1d, phase_strided_conv1d


def _compare(fn: tp.Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
             bias: tp.Optional[torch.Tensor], **kwargs: tp.Any) -> None:
    """`fn` and F.conv1d give the same output and the same gradients of x, weight and bias."""
    inputs = [t.requires_grad_() for t in (x, weight, bias) if t is not None]
    expected = F.conv1d(x, weight, bias, **kwargs)
    got = fn(x, weight, bias, **kwargs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(expected)
    for ours, theirs in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(ours, theirs)


def _tensors(batch: int, in_channels: int, out_channels: int, kernel: int, length: int, bias: bool):
    x = torch.randn(batch, in_channels, length, dtype=torch.float64)
    weight = torch.randn(out_channels, in_channels, kernel, dtype=torch.float64)
    return x, weight, torch.randn(out_channels, dtype=torch.float64) if bias else None


@pytest.mark.parametrize("in_channels,out_channels,length,bias", list(itertools.product(
    [1, 5, 32], [1, 7, 32], [1, 9, 64], [True, False])))
def test_pointwise_equals_conv1d(in_channels: int, out_channels: int, length: int, bias: bool) -> None:
    _compare(cpu_conv.pointwise_conv1d, *_tensors(2, in_channels, out_channels, 1, length, bias))


@pytest.mark.parametrize("out_channels,kernel,padding,dilation,length,bias", list(itertools.product(
    [1, 2], [1, 3, 7], [0, 1, 3, 6], [1, 2], [13, 50], [True, False])))
def test_few_outputs_equals_conv1d(out_channels: int, kernel: int, padding: int, dilation: int, length: int,
                                   bias: bool) -> None:
    tensors = _tensors(3, 16, out_channels, kernel, length, bias)
    _compare(few_outputs_conv1d, *tensors, padding=padding, dilation=dilation)


def test_few_outputs_refuses_inputs_shorter_than_the_kernel() -> None:
    x, weight, bias = _tensors(1, 8, 1, 7, 4, True)
    with pytest.raises(AssertionError, match="shorter than the kernel"):
        few_outputs_conv1d(x, weight, bias)


@pytest.mark.parametrize("stride,taps,padding_blocks,blocks,bias", list(itertools.product(
    [2, 3, 8], [1, 2, 3], [0, 1, 2], [3, 10], [True, False])))
def test_phase_strided_equals_conv1d(stride: int, taps: int, padding_blocks: int, blocks: int, bias: bool) -> None:
    if blocks + 2 * padding_blocks < taps:
        pytest.skip("input shorter than the kernel")
    tensors = _tensors(2, 6, 5, taps * stride, blocks * stride, bias)
    _compare(phase_strided_conv1d, *tensors, stride=stride, padding=padding_blocks * stride)


def test_phase_strided_refuses_misaligned_shapes() -> None:
    x, weight, bias = _tensors(1, 4, 4, 4, 21, True)
    with pytest.raises(AssertionError, match="multiples of the stride 2"):
        phase_strided_conv1d(x, weight, bias, 2)


@pytest.mark.parametrize("in_channels,out_channels,kernel,stride,padding,dilation,groups,length", [
    (32, 32, 1, 1, 0, 1, 1, 40),  # pointwise
    (32, 32, 1, 1, 1, 1, 1, 40),  # kernel 1 with padding: F.conv1d
    (32, 1, 7, 1, 3, 1, 1, 40),  # few outputs
    (32, 2, 3, 1, 2, 2, 1, 40),  # few outputs, dilated
    (4, 8, 3, 1, 1, 1, 1, 40),  # many outputs: F.conv1d
    (8, 16, 4, 2, 2, 1, 1, 40),  # phases
    (8, 16, 4, 2, 1, 1, 1, 40),  # padding not a multiple of the stride: F.conv1d
    (8, 16, 4, 2, 2, 1, 1, 41),  # length not a multiple of the stride: F.conv1d
    (8, 16, 5, 2, 2, 1, 1, 40),  # kernel not a multiple of the stride: F.conv1d
    (8, 16, 4, 2, 2, 1, 2, 40),  # grouped: F.conv1d
    (8, 1, 4, 2, 0, 1, 1, 40),  # few outputs but strided: phases
])
def test_dispatch_equals_conv1d(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
                                dilation: int, groups: int, length: int) -> None:
    x = torch.randn(2, in_channels, length, dtype=torch.float64)
    weight = torch.randn(out_channels, in_channels // groups, kernel, dtype=torch.float64)
    bias = torch.randn(out_channels, dtype=torch.float64)
    _compare(conv1d, x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("kernel,stride,out_channels", [(1, 1, 32), (7, 1, 1), (4, 2, 16)])
def test_dispatch_takes_the_rewrite_on_cpu_only(monkeypatch: pytest.MonkeyPatch, kernel: int, stride: int,
                                                out_channels: int) -> None:
    calls: tp.List[str] = []
    for name in ("pointwise_conv1d", "few_outputs_conv1d", "phase_strided_conv1d"):
        original = getattr(cpu_conv, name)
        def counted(*args: tp.Any, _f: tp.Callable = original, _n: str = name, **kwargs: tp.Any) -> torch.Tensor:
            calls.append(_n)
            return _f(*args, **kwargs)
        monkeypatch.setattr(cpu_conv, name, counted)
    weight = torch.randn(out_channels, 32, kernel)
    conv1d(torch.randn(1, 32, 64), weight, None, stride, 0)
    assert len(calls) == 1
    on_meta = conv1d(torch.randn(1, 32, 64, device="meta"), weight.to("meta"), None, stride, 0)
    assert len(calls) == 1, "a rewrite ran off the CPU"
    assert on_meta.shape == F.conv1d(torch.randn(1, 32, 64), weight, None, stride, 0).shape


@pytest.mark.parametrize("kernel,stride,padding", [(1, 1, 0), (7, 1, 3), (4, 2, 2)])
def test_module_conv1d_applies_weight_norm(kernel: int, stride: int, padding: int) -> None:
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(32, 1 if kernel == 7 else 16, kernel, stride, padding))
    x = torch.randn(2, 32, 48, requires_grad=True)
    expected = conv(x)
    got = module_conv1d(conv, x)
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(expected)
    params = [x] + list(conv.parameters())
    for ours, theirs in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_module_conv1d_keeps_other_padding_modes() -> None:
    conv = nn.Conv1d(32, 32, 1, padding=2, padding_mode="reflect")
    x = torch.randn(2, 32, 20)
    torch.testing.assert_close(module_conv1d(conv, x), conv(x))
    same = nn.Conv1d(32, 1, 3, padding="same")
    torch.testing.assert_close(module_conv1d(same, x), same(x))


def test_rewrites_follow_bf16_autocast() -> None:
    x, weight = torch.randn(2, 32, 40), torch.randn(1, 32, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.conv1d(x, weight, None, 1, 3)
        got = conv1d(x, weight, None, 1, 3)
    assert got.dtype == expected.dtype == torch.bfloat16
    reference = F.conv1d(x, weight, None, 1, 3)
    torch.testing.assert_close(got.float(), reference, rtol=0.05, atol=0.05 * reference.abs().max().item())
