"""Text tower: CLS embedding shape, padding invariance, gradients, length errors, and a small learning task."""
from __future__ import annotations

import time

import pytest
import torch

from audiogen_lab.modules.text_tokenizer import WordTokenizer
from audiogen_lab.modules.text_transformer import TextTransformer


def _tower(**kwargs) -> TextTransformer:
    torch.manual_seed(0)
    options = dict(vocab_size=20, dim=16, depth=2, heads=2, max_length=12)
    options.update(kwargs)
    return TextTransformer(**options)


def test_padding_does_not_change_the_embedding():
    tower = _tower().eval()
    tokens = torch.tensor([[3, 7, 5, 9]])
    padded = torch.tensor([[3, 7, 5, 9, 0, 0, 0], [4, 4, 0, 0, 0, 0, 0]])
    mask = padded != 0
    with torch.no_grad():
        alone = tower(tokens, torch.ones_like(tokens, dtype=torch.bool))
        batched = tower(padded, mask)
        # Pad ids other than 0 behind a False mask are ignored too.
        garbage = tower(torch.where(mask, padded, torch.full_like(padded, 13)), mask)
    assert alone.shape == (1, 16)
    assert torch.allclose(batched[:1], alone, atol=1e-5)
    assert torch.allclose(garbage, batched, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)


def test_order_matters_and_empty_text_is_finite():
    tower = _tower().eval()
    with torch.no_grad():
        out = tower(torch.tensor([[3, 7], [7, 3], [0, 0]]), torch.tensor([[True, True], [True, True], [False, False]]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # position embeddings
    assert torch.isfinite(out).all()  # an all-padding item still has its CLS token


def test_gradients_reach_embeddings_and_cls():
    tower = _tower()
    tokens = torch.tensor([[3, 7, 5, 0], [2, 2, 0, 0]])
    tower(tokens, tokens != 0).pow(2).sum().backward()
    grad = tower.token_emb.weight.grad
    assert grad[[2, 3, 5, 7]].abs().sum(dim=1).gt(0).all()
    assert grad[[0, 1, 4]].abs().sum() == 0  # ids that are absent or padding get no gradient
    assert tower.cls.grad.abs().sum() > 0
    assert tower.pos_emb.grad[:3].abs().sum(dim=1).gt(0).all() and tower.pos_emb.grad[3:].abs().sum() == 0


def test_input_errors_name_the_argument():
    tower = _tower(max_length=4)
    tokens = torch.ones(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="max_length"):
        tower(tokens, tokens > 0)
    tokens = torch.tensor([[3, 25]])
    with pytest.raises(ValueError, match="vocab_size"):
        tower(tokens, tokens > 0)
    with pytest.raises(TypeError, match="bool"):
        tower(tokens.clamp(max=5), torch.ones(1, 2))


def test_learns_word_order_with_a_linear_head():
    """Class 1 iff "loud" comes before "soft" in the caption: needs positions and attention, not a bag of words."""
    generator = torch.Generator().manual_seed(0)
    fillers = ["drums", "piano", "slow", "fast", "guitar", "bass"]
    texts, labels = [], []
    for i in range(64):
        words = [fillers[j] for j in torch.randint(len(fillers), (int(torch.randint(2, 6, (1,), generator=generator)),),
                                                    generator=generator)]
        first, second = sorted(torch.randperm(len(words) + 2, generator=generator)[:2].tolist())
        label = i % 2
        for position, word in ((first, "loud" if label else "soft"), (second, "soft" if label else "loud")):
            words.insert(position, word)
        texts.append(" ".join(words))
        labels.append(label)
    tokenizer = WordTokenizer.fit(texts)
    tokens, mask = tokenizer.encode(texts, max_length=12)
    labels = torch.tensor(labels, dtype=torch.float)
    torch.manual_seed(0)
    tower = TextTransformer(tokenizer.vocab_size, dim=32, depth=2, heads=4, max_length=12)
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.Adam([*tower.parameters(), *head.parameters()], lr=3e-3)
    start = time.perf_counter()
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(tower(tokens, mask)).squeeze(1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tower.eval()
    with torch.no_grad():
        accuracy = ((head(tower(tokens, mask)).squeeze(1) > 0).float() == labels).float().mean()
    assert accuracy == 1.0, f"accuracy {accuracy:.2f}, final loss {loss.item():.3f}"
    assert time.perf_counter() - start < 10
