"""Contrastive losses: hand-computed values, alignment ordering, the temperature clamp, gradients, and
equality with the single-process loss when the batch is split over two gloo processes."""
from __future__ import annotations

import itertools
import math

import flashy.distrib
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from audiogen_lab.losses.contrastive import (DecoupledContrastiveLoss, SigmoidContrastiveLoss,
                                             SoftmaxContrastiveLoss, get_contrastive_loss)

from ..distributed import run_ranks

# audio rows a1 = (1, 0), a2 = (0, 1); text rows t1 = (0.6, 0.8), t2 = (0, 1); all unit norm.
# Similarities s_ij = a_i . t_j: s11 = 0.6, s12 = 0.0, s21 = 0.8, s22 = 1.0 (not symmetric, so the
# audio->text and text->audio directions differ).
AUDIO = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXT = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
S11, S12, S21, S22 = 0.6, 0.0, 0.8, 1.0
T = 0.5


def _ce(positive: float, negative: float) -> float:
    """Cross entropy of a two-way softmax whose target logit is `positive`."""
    return -positive + math.log(math.exp(positive) + math.exp(negative))


def _logsigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def test_softmax_hand_computed():
    a2t = (_ce(S11 / T, S12 / T) + _ce(S22 / T, S21 / T)) / 2  # audio row i against texts j
    t2a = (_ce(S11 / T, S21 / T) + _ce(S22 / T, S12 / T)) / 2  # text column j against audio i
    loss, info = SoftmaxContrastiveLoss(init_temperature=T)(AUDIO, TEXT)
    assert loss.item() == pytest.approx((a2t + t2a) / 2, rel=1e-6)
    assert info["temperature"].item() == pytest.approx(T)


def test_sigmoid_hand_computed():
    bias = -1.0
    z = {ij: s / T + bias for ij, s in {"11": S11, "12": S12, "21": S21, "22": S22}.items()}
    expected = -(_logsigmoid(z["11"]) + _logsigmoid(z["22"]) + _logsigmoid(-z["12"]) + _logsigmoid(-z["21"])) / 2
    loss, info = SigmoidContrastiveLoss(init_temperature=T, init_bias=bias)(AUDIO, TEXT)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert info["bias"].item() == pytest.approx(bias) and info["temperature"].item() == pytest.approx(T)


def test_decoupled_hand_computed():
    # With B = 2, each row has a single negative: -pos/t + log(exp(neg/t)).
    a2t = ((-S11 + T * math.log(math.exp(S12 / T))) / T + (-S22 + T * math.log(math.exp(S21 / T))) / T) / 2
    t2a = ((-S11 + T * math.log(math.exp(S21 / T))) / T + (-S22 + T * math.log(math.exp(S12 / T))) / T) / 2
    loss, _ = DecoupledContrastiveLoss(init_temperature=T)(AUDIO, TEXT)
    assert loss.item() == pytest.approx((a2t + t2a) / 2, rel=1e-6)


def test_decoupled_excludes_positive_from_denominator():
    """DCL equals InfoNCE minus the positive's share: per row `ce + log(1 - softmax_pos)`."""
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(5, 3, generator=gen), dim=-1)
    text = F.normalize(torch.randn(5, 3, generator=gen), dim=-1)
    targets = torch.arange(5)

    def direction(logits):
        ce = F.cross_entropy(logits, targets, reduction="none")
        return (ce + torch.log1p(-logits.softmax(-1)[targets, targets])).mean()

    expected = 0.5 * (direction(audio @ text.T / 0.2) + direction(text @ audio.T / 0.2))
    loss, _ = DecoupledContrastiveLoss(init_temperature=0.2)(audio, text)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "decoupled"])
def test_aligned_pairs_beat_every_shuffled_pairing(name):
    embeddings = torch.eye(4)  # audio == text, orthogonal rows
    loss_fn = get_contrastive_loss(name)
    aligned, _ = loss_fn(embeddings, embeddings)
    for perm in itertools.permutations(range(4)):
        if list(perm) == [0, 1, 2, 3]:
            continue
        shuffled, _ = loss_fn(embeddings, embeddings[list(perm)])
        assert aligned.item() < shuffled.item(), perm


def test_softmax_reaches_its_minimum_as_temperature_goes_to_min():
    embeddings = torch.eye(4)
    values = [SoftmaxContrastiveLoss(init_temperature=t)(embeddings, embeddings)[0].item()
              for t in (1.0, 0.3, 0.1, 0.01)]
    assert values == sorted(values, reverse=True)
    # log(1 + 3 exp(-1/t)) at t = 1: the exact value at the largest temperature
    assert values[0] == pytest.approx(math.log(1 + 3 * math.exp(-1.0)), rel=1e-6)
    assert values[-1] < 1e-12  # the infimum of a cross entropy is 0


@pytest.mark.parametrize("cls", [SoftmaxContrastiveLoss, SigmoidContrastiveLoss, DecoupledContrastiveLoss])
def test_temperature_is_clamped_and_gets_no_gradient_outside_range(cls):
    loss_fn = cls(min_temperature=0.05, max_temperature=0.5)
    for pushed, bound in ((1e-4, 0.05), (100.0, 0.5)):
        with torch.no_grad():
            loss_fn.log_temperature.fill_(math.log(pushed))
        loss_fn.zero_grad()
        loss, info = loss_fn(AUDIO, TEXT)
        loss.backward()
        assert info["temperature"].item() == pytest.approx(bound)
        at_bound = cls(init_temperature=bound, min_temperature=0.05, max_temperature=0.5)
        if isinstance(loss_fn, SigmoidContrastiveLoss):
            at_bound.bias.data.copy_(loss_fn.bias.data)
        assert loss.item() == pytest.approx(at_bound(AUDIO, TEXT)[0].item(), rel=1e-6)
        assert loss_fn.log_temperature.grad.item() == 0.0
        assert loss_fn.log_temperature.item() == pytest.approx(math.log(pushed))  # parameter untouched


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "decoupled"])
def test_gradients_finite_and_float32(name):
    gen = torch.Generator().manual_seed(1)
    audio = F.normalize(torch.randn(6, 8, generator=gen), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(6, 8, generator=gen), dim=-1).requires_grad_()
    loss_fn = get_contrastive_loss(name, min_temperature=0.01)
    loss, _ = loss_fn(audio, text)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for grad in (audio.grad, text.grad, loss_fn.log_temperature.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    half_loss, _ = loss_fn(audio.detach().bfloat16(), text.detach().bfloat16())
    assert half_loss.dtype == torch.float32


def test_fixed_temperature_is_a_buffer():
    loss_fn = SigmoidContrastiveLoss(learn_temperature=False, learn_bias=False)
    assert list(loss_fn.parameters()) == []
    assert set(dict(loss_fn.named_buffers())) == {"log_temperature", "bias"}
    learned = SoftmaxContrastiveLoss()
    assert [name for name, _ in learned.named_parameters()] == ["log_temperature"]


def test_bad_arguments():
    with pytest.raises(KeyError, match=r"contrastive\.loss.*'decoupled', 'sigmoid', 'softmax'"):
        get_contrastive_loss("triplet")
    with pytest.raises(AssertionError, match="init_temperature"):
        SoftmaxContrastiveLoss(init_temperature=2.0)
    with pytest.raises(AssertionError, match=r"\[B, D\]"):
        SoftmaxContrastiveLoss()(torch.ones(2, 3), torch.ones(3, 3))
    with pytest.raises(AssertionError, match="at least two pairs"):
        DecoupledContrastiveLoss()(torch.ones(1, 3), torch.ones(1, 3))


# ---------------------------------------------------------------- two gloo processes

WORLD, LOCAL_BATCH, DIM = 2, 3, 4
CONFIGS = {"softmax": dict(init_temperature=0.2), "sigmoid": dict(init_temperature=0.3, init_bias=-2.0),
           "decoupled": dict(init_temperature=0.2)}


def _global_batch():
    gen = torch.Generator().manual_seed(7)
    audio = F.normalize(torch.randn(WORLD * LOCAL_BATCH, DIM, generator=gen), dim=-1)
    text = F.normalize(torch.randn(WORLD * LOCAL_BATCH, DIM, generator=gen), dim=-1)
    return audio, text


def _body(rank: int) -> dict:
    assert flashy.distrib.rank() == rank and flashy.distrib.is_distributed()
    audio, text = _global_batch()
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    results = {}
    for name, kwargs in CONFIGS.items():
        local_audio = audio[rows].clone().requires_grad_()
        local_text = text[rows].clone().requires_grad_()
        loss_fn = get_contrastive_loss(name, **kwargs)
        loss, _ = loss_fn(local_audio, local_text)
        loss.backward()
        param_grads = {}
        for pname, param in loss_fn.named_parameters():  # what DDP / flashy do to parameter gradients
            grad = param.grad.clone()
            dist.all_reduce(grad)
            param_grads[pname] = grad / WORLD
        results[name] = {"loss": loss.detach(), "audio_grad": local_audio.grad, "text_grad": local_text.grad,
                         "param_grads": param_grads}
    return results


def test_two_ranks_match_single_process_global_batch(tmp_path):
    ranks = run_ranks(_body, tmp_path, world=WORLD)
    audio, text = _global_batch()
    for name, kwargs in CONFIGS.items():
        audio_ref, text_ref = audio.clone().requires_grad_(), text.clone().requires_grad_()
        loss_fn = get_contrastive_loss(name, **kwargs)
        reference, _ = loss_fn(audio_ref, text_ref)
        reference.backward()
        # The mean of the per-rank losses is the global loss (each is a mean over its local rows).
        mean_loss = sum(r[name]["loss"] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, reference.detach())
        # A rank's input gradient is the gradient of the SUM of the W per-rank losses (the gather's
        # backward sums what every rank sends), i.e. W * d(global loss)/d(its inputs); once the encoder
        # gradients are averaged over the W ranks this gives exactly d(global loss)/d(encoder).
        for rank, result in enumerate(ranks):
            rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            torch.testing.assert_close(result[name]["audio_grad"], WORLD * audio_ref.grad[rows])
            torch.testing.assert_close(result[name]["text_grad"], WORLD * text_ref.grad[rows])
            # Loss parameters: the rank-averaged gradient equals the single-process gradient.
            for pname, param in loss_fn.named_parameters():
                torch.testing.assert_close(result[name]["param_grads"][pname], param.grad)
