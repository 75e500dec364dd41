"""ConditionedLM: the conditioning prefix, its dropout to the null prefix, batched classifier-free guidance
(one forward pass equals two separate ones, cached sampling equals uncached) and gradients to the table."""
from __future__ import annotations

import pytest
import torch

from audiogen_lab.models.conditioned_lm import ConditionedLM, guided_logits
from audiogen_lab.modules.lm_transformer import LMTransformer

VOCAB, LEVELS, CODES = 23, 3, 5


def _model(namespace: str = "coarse") -> ConditionedLM:
    torch.manual_seed(0)
    model = ConditionedLM(LMTransformer(VOCAB, dim=32, depth=2, heads=4, max_length=64), LEVELS, CODES, namespace)
    with torch.no_grad():  # a trained-looking table and null prefix: conditioning changes the logits a lot
        model.conditioning.tables[namespace].embedding.weight.normal_(std=1.0)
        model.null.normal_(std=1.0)
    return model.eval()


def _inputs(batch: int = 2, length: int = 7):
    gen = torch.Generator().manual_seed(1)
    return (torch.randint(0, VOCAB, (batch, length), generator=gen),
            torch.randint(0, CODES, (batch, LEVELS), generator=gen))


def test_logits_cover_the_token_positions_and_depend_on_the_conditioning():
    model = _model()
    tokens, cond = _inputs()
    logits = model(tokens, cond)
    assert logits.shape == (2, 7, VOCAB)
    other = model(tokens, (cond + 1) % CODES)
    assert not torch.allclose(logits, other)
    prefix = model.conditioning(cond, "coarse")
    assert torch.allclose(logits, model.lm(tokens, prefix_embeddings=prefix)[:, LEVELS:])


def test_dropped_rows_read_the_null_prefix():
    model = _model()
    tokens, cond = _inputs()
    drop = torch.tensor([True, False])
    mixed = model(tokens, cond, drop)
    assert torch.allclose(mixed[0], model(tokens[:1], None)[0], atol=1e-5)
    assert torch.allclose(mixed[1], model(tokens[1:], cond[1:])[0], atol=1e-5)


def test_batched_guidance_equals_two_separate_passes():
    model = _model()
    tokens, cond = _inputs()
    scale = 3.0
    batched = model.guided_forward(tokens, cond, scale)
    conditional, null = model(tokens, cond), model(tokens, None)
    assert torch.allclose(batched, null + scale * (conditional - null), atol=1e-4)
    assert torch.allclose(guided_logits(torch.cat([conditional, null]), 1.0), conditional, atol=1e-6)
    with pytest.raises(ValueError, match="even batch"):
        guided_logits(conditional[:1], 2.0)


def test_guided_sampling_with_the_cache_equals_the_step_by_step_reference():
    model = _model()
    prompt, cond = _inputs(length=2)
    out = model.generate(prompt, 10, cond=cond, cfg_scale=2.5, temperature=0.0)
    uncached = model.generate(prompt, 10, cond=cond, cfg_scale=2.5, temperature=0.0, use_cache=False)
    assert torch.equal(out, uncached)
    sequence = prompt
    for _ in range(10):  # two separate passes per step, guided greedy choice
        step = guided_logits(torch.cat([model(sequence, cond), model(sequence, None)])[:, -1], 2.5)
        sequence = torch.cat([sequence, step.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, sequence)
    unguided = model.generate(prompt, 10, cond=cond, temperature=0.0)
    assert not torch.equal(out, unguided)  # guidance changes the choices of this model


def test_the_table_and_the_null_prefix_receive_gradients():
    model = _model().train()
    tokens, cond = _inputs()
    loss = model(tokens, cond, torch.tensor([True, False])).logsumexp(-1).mean()
    loss.backward()
    table = model.conditioning.tables["coarse"].embedding.weight.grad
    rows = (cond[1] + torch.arange(LEVELS) * CODES)
    assert table[rows].abs().sum(-1).gt(0).all()  # the rows of the kept conditioning
    assert model.null.grad.abs().sum() > 0
    assert any(key.startswith("conditioning.tables.coarse.") for key in model.state_dict())


def test_conditioning_of_another_width_is_refused():
    model = _model()
    tokens, cond = _inputs()
    with pytest.raises(ValueError, match="coarse stage"):
        model(tokens, cond[:, :2])
