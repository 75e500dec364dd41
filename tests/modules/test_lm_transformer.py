import math

import pytest
import torch
import torch.nn.functional as F

from audiogen_lab.modules.lm_transformer import (CausalSelfAttention, LMTransformer, apply_rotary,
                                                 apply_rotary_tables, causal_mask, sample_next_token)

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 32


def _model(seed: int = 0, vocab: int = VOCAB, dim: int = 32, depth: int = 2, heads: int = 4,
           max_length: int = 64) -> LMTransformer:
    """A small random model whose head is scaled up so that its logits are far from uniform."""
    torch.manual_seed(seed)
    model = LMTransformer(vocab, dim=dim, depth=depth, heads=heads, ff_mult=2.0, max_length=max_length).eval()
    with torch.no_grad():
        model.head.weight.normal_(std=0.5)
    return model


def _tokens(shape, seed: int, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("with_prefix", [False, True])
def test_cached_greedy_generation_equals_uncached(with_prefix):
    model = _model()
    prompt = _tokens((3, 5), seed=1)
    prefix = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(2)) if with_prefix else None
    fast = model.generate(prompt, 12, temperature=0.0, use_cache=True, prefix_embeddings=prefix)
    slow = model.generate(prompt, 12, temperature=0.0, use_cache=False, prefix_embeddings=prefix)
    assert fast.shape == (3, 17)
    assert torch.equal(fast[:, :5], prompt)
    assert torch.equal(fast, slow)
    # Greedy means argmax of the forward logits at every step.
    logits = model(fast[:, :-1], prefix_embeddings=prefix)
    num_prefix = 0 if prefix is None else 2
    assert torch.equal(logits[:, num_prefix + 4:].argmax(-1), fast[:, 5:])
    # The prefix conditions the output.
    if with_prefix:
        assert not torch.equal(fast, model.generate(prompt, 12, temperature=0.0))


def test_generation_from_prefix_only():
    model = _model()
    prefix = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(3))
    empty = torch.zeros(2, 0, dtype=torch.long)
    fast = model.generate(empty, 6, temperature=0.0, prefix_embeddings=prefix)
    slow = model.generate(empty, 6, temperature=0.0, prefix_embeddings=prefix, use_cache=False)
    assert fast.shape == (2, 6) and torch.equal(fast, slow)


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = _model()
    tokens = _tokens((2, 10), seed=4)
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % VOCAB
    prefix = torch.randn(2, 2, 32)
    for pre in (None, prefix):
        a, b = model(tokens, prefix_embeddings=pre), model(changed, prefix_embeddings=pre)
        split = 6 + (0 if pre is None else 2)
        assert torch.equal(a[:, :split], b[:, :split])
        # From the changed token on, every position sees it.
        assert not torch.isclose(a[:, split:], b[:, split:], atol=1e-4).all(dim=-1).any()


def test_cached_step_by_step_logits_equal_full_sequence_logits():
    model = _model()
    tokens = _tokens((2, 12), seed=5)
    prefix = torch.randn(2, 3, 32)
    full = model(tokens, prefix_embeddings=prefix)  # [B, 15, V]
    cache = model.new_cache(2, 20)
    # Prefix and first 4 tokens at once, then chunks of 1 and 3 tokens: offsets must carry the positions.
    parts = [model(tokens[:, :4], cache=cache, prefix_embeddings=prefix)]
    parts += [model(tokens[:, i:i + 1], cache=cache) for i in range(4, 9)]
    parts.append(model(tokens[:, 9:], cache=cache))
    assert cache.length == 15
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    # Positions matter: the same tokens fed at shifted positions give different logits.
    shifted = model.new_cache(2, 20)
    model(tokens[:, :2], cache=shifted)
    assert not torch.allclose(model(tokens[:, 4:5], cache=shifted), full[:, 7:8], atol=1e-3)


def test_rotary_is_a_rotation_and_depends_only_on_relative_position():
    attn = CausalSelfAttention(8, 1)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def rotated(x, pos):
        cos, sin = attn.rotary(torch.tensor([[pos]]), pos + 1)
        return apply_rotary(x, cos, sin)

    torch.testing.assert_close(rotated(q, 7).norm(), q.norm())
    torch.testing.assert_close(rotated(q, 0), q)
    score = (rotated(q, 5) * rotated(k, 2)).sum()
    torch.testing.assert_close((rotated(q, 103) * rotated(k, 100)).sum(), score, atol=1e-5, rtol=0)
    assert not torch.allclose((rotated(q, 6) * rotated(k, 2)).sum(), score, atol=1e-3)


def test_causal_mask_aligns_queries_to_the_last_positions():
    mask = causal_mask(2, 4, None, torch.device("cpu"))
    assert torch.equal(mask[0, 0], torch.tensor([[True, True, True, False], [True, True, True, True]]))
    padded = causal_mask(3, 3, torch.tensor([[False, True, True]]), torch.device("cpu"))
    # A padded query sees itself only; real queries never see the padded key.
    assert torch.equal(padded[0, 0], torch.tensor([[True, False, False], [False, True, False], [False, True, True]]))


@pytest.mark.parametrize("vocab", [500, 8192])
def test_first_loss_is_close_to_log_vocab(vocab):
    torch.manual_seed(0)
    model = LMTransformer(vocab, dim=64, depth=2, heads=4)
    tokens = _tokens((4, 32), seed=6, vocab=vocab)
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(loss.item() - math.log(vocab)) < 0.1 * math.log(vocab)
    assert logits.std() < 0.1


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = LMTransformer(VOCAB, dim=32, depth=2, heads=2, ff_mult=2.0, max_length=32)
    tokens = _tokens((4, 16), seed=7)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.5


def test_top_k_sampling_is_reproducible_and_stays_in_the_top_k():
    model = _model()
    prompt = _tokens((4, 3), seed=8)
    favoured = torch.tensor([3, 17, 9, 25, 30])

    def favour(logits, step):  # five nearly equally likely tokens, in decreasing order, and no others
        fixed = torch.full_like(logits, -30.0)
        fixed[:, favoured] = 5.0 - 0.1 * torch.arange(5.0)
        return fixed

    def run(seed, top_k=3):
        return model.generate(prompt, 40, top_k=top_k, generator=torch.Generator().manual_seed(seed),
                              logits_processor=favour)

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    new = first[:, 3:]
    assert torch.isin(new, favoured[:3]).all()
    assert len(new.unique()) == 3  # the three are close to equally likely: all are drawn
    assert len(run(0, top_k=None)[:, 3:].unique()) == 5  # without top-k, the other two appear


def test_sample_next_token_greedy_and_top_1():
    logits = torch.randn(5, 11)
    assert torch.equal(sample_next_token(logits, temperature=0.0), logits.argmax(-1))
    assert torch.equal(sample_next_token(logits, temperature=1.0, top_k=1), logits.argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(logits, temperature=-1.0)


def test_left_padded_prompt_gives_the_logits_of_the_unpadded_prompt():
    model = _model()
    short, long = _tokens((1, 4), seed=9), _tokens((1, 7), seed=10)
    batch = torch.cat([torch.cat([_tokens((1, 3), seed=11), short], dim=1), long])  # pad values are arbitrary
    mask = torch.tensor([[False] * 3 + [True] * 4, [True] * 7])
    prefix = torch.randn(2, 2, 32)
    for pre in (None, prefix):
        logits = model(batch, prefix_embeddings=pre, key_padding_mask=mask)
        assert torch.isfinite(logits).all()
        alone_short = model(short, prefix_embeddings=None if pre is None else pre[:1])
        alone_long = model(long, prefix_embeddings=None if pre is None else pre[1:])
        torch.testing.assert_close(logits[0, -4:], alone_short[0, -4:], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[1], alone_long[0], atol=1e-5, rtol=0)
        # Batched, padded generation (cached or not) continues each prompt as it would alone.
        generated = model.generate(batch, 8, temperature=0.0, key_padding_mask=mask, prefix_embeddings=pre)
        slow = model.generate(batch, 8, temperature=0.0, key_padding_mask=mask, prefix_embeddings=pre,
                              use_cache=False)
        assert torch.equal(generated, slow)
        assert torch.equal(generated[0, 3:], model.generate(short, 8, temperature=0.0,
                                                            prefix_embeddings=None if pre is None else pre[:1])[0])
        assert torch.equal(generated[1], model.generate(long, 8, temperature=0.0,
                                                        prefix_embeddings=None if pre is None else pre[1:])[0])


def test_errors_name_the_argument_to_change():
    model = _model(max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        model(_tokens((1, 9), seed=0))
    cache = model.new_cache(1, 4)
    with pytest.raises(ValueError, match="max_length"):
        model(_tokens((1, 5), seed=0), cache=cache)
    with pytest.raises(ValueError, match="key_padding_mask"):
        model(_tokens((1, 5), seed=0), key_padding_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="heads"):
        LMTransformer(10, dim=12, heads=4)


def test_full_width_rotary_tables_rotate_like_the_half_tables():
    attn = CausalSelfAttention(16, 2)
    x = torch.randn(2, 3, 5, 8)  # [B, H, T, Dh]
    positions = torch.tensor([[0, 4, 9, 2, 30]])
    cos, sin = attn.rotary(positions, 31)
    full_cos, full_sin = attn.rotary.tables(positions, 5, 31, torch.float32)
    expected = apply_rotary(x, cos, sin)
    torch.testing.assert_close(apply_rotary_tables(x, full_cos[:, None], full_sin[:, None]), expected)
    # consecutive positions as an int: a slice of the same tables
    sliced = attn.rotary.tables(7, 5, 12, torch.float32)
    gathered = attn.rotary.tables(torch.arange(7, 12)[None], 5, 12, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(sliced, gathered))


def test_generated_tokens_and_grown_tables_are_usable_in_training():
    model = _model()
    out = model.eval().generate(_tokens((2, 3), seed=9), 5)
    assert not out.is_inference() and out.shape == (2, 8)
    # the rotary tables were grown inside generate's inference mode; training must still work after it
    model.train()
    long_tokens = _tokens((2, 40), seed=10)
    loss = F.cross_entropy(model(long_tokens[:, :-1]).flatten(0, 1), long_tokens[:, 1:].flatten())
    loss.backward()
    assert model.token_emb.weight.grad is not None
    F.cross_entropy(model(out[:, :-1]).flatten(0, 1), out[:, 1:].flatten()).backward()
