"""Local ALiBi attention: the bias matrix, causality, the window, and length independence."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.modules.transformer import LocalTransformer, alibi_slopes, local_attention_bias


def test_bias_values_window_and_causal_mask():
    slopes = alibi_slopes(2)
    bias = local_attention_bias(5, window=2, causal=True, slopes=slopes)
    assert bias.shape == (2, 5, 5)
    assert bias[0, 3, 3] == 0 and bias[1, 3, 2] == pytest.approx(-slopes[1].item())
    assert bias[0, 3, 1] == -math.inf  # two frames back: outside a window of 2
    assert bias[0, 2, 3] == -math.inf  # the future, when causal
    both = local_attention_bias(5, window=2, causal=False, slopes=slopes)
    assert both[0, 2, 3] == pytest.approx(-slopes[0].item()) and both[0, 2, 4] == -math.inf
    assert slopes[0] > slopes[1] > 0


def _model(causal: bool, window: int = 4) -> LocalTransformer:
    torch.manual_seed(0)
    return LocalTransformer(16, num_layers=2, num_heads=4, window=window, causal=causal).eval()


def test_causal_output_ignores_the_future_and_frames_beyond_the_window():
    model = _model(causal=True, window=4)
    x = torch.randn(2, 16, 30)
    y = model(x)
    changed = x.clone()
    changed[..., 20:] = torch.randn(2, 16, 10)
    torch.testing.assert_close(model(changed)[..., :20], y[..., :20])
    assert not torch.allclose(model(changed)[..., 20:], y[..., 20:])
    old = x.clone()
    old[..., :5] = torch.randn(2, 16, 5)  # two layers of window 4 see back 6 frames: frame 11 onwards is unaffected
    torch.testing.assert_close(model(old)[..., 11:], y[..., 11:])
    assert not torch.allclose(model(old)[..., 5:11], y[..., 5:11])


def test_non_causal_sees_both_sides_and_length_does_not_matter_inside():
    model = _model(causal=False, window=3)
    x = torch.randn(1, 16, 40)
    y = model(x)
    changed = x.clone()
    changed[:, :, 25] += torch.randn(1, 16)  # not a constant shift, which the layer norm would remove
    assert not torch.allclose(model(changed)[..., 24], y[..., 24])  # the next frame is seen
    # a frame far from both ends depends only on its neighbourhood, not on how long the sequence is
    torch.testing.assert_close(model(x[..., 5:35])[..., 15], y[..., 20])


def test_heads_must_divide_the_dimension():
    with pytest.raises(ValueError, match="num_heads"):
        LocalTransformer(10, num_heads=4)


def test_inference_without_gradients_matches_training_math():
    """torch's fused encoder-layer path (eval, no grad) reads a float mask as boolean, which drops the
    ALiBi biases; the transformer must give the same output with and without gradients."""
    model = _model(causal=True, window=4)
    x = torch.randn(2, 16, 20)
    with_grad = model(x)
    with torch.no_grad():
        torch.testing.assert_close(model(x), with_grad.detach())
