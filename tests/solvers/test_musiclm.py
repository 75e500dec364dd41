"""MusicLM: MuLaN tokens in the token shards, the mulan stream read per crop, conditioned AudioLM stages whose
tables are trained, the producer check of MuLaN tokens, and text-to-audio generation with guidance and
MuLaN reranking from three stages chained by //sig/."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.audio import audio_read
from audiogen_lab.data.audio_dataset import find_audio_files
from audiogen_lab.data.paired_token_dataset import PairedTokenDataset
from audiogen_lab.data.token_dataset import load_token_meta
from audiogen_lab.data.tokenize import tokenize_manifest
from audiogen_lab.models.conditioned_lm import ConditionedLM
from audiogen_lab.models.mulan_builder import get_mulan_model
from audiogen_lab.models.mulan_conditioner import load_mulan_conditioner, quantizer_path
from audiogen_lab.models.semantic_tokenizer import LogMelFeatures, fit_semantic_tokenizer, save_semantic_tokenizer
from audiogen_lab.modules.text_tokenizer import get_tokenizer
from audiogen_lab.quantization.mulan_embed import MuLaNEmbedQuantizer, save_quantizer
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint

from ..conftest import experiments_folder, load_script
from .test_audiolm_solver import _codec_file

LEVELS, CODES = 3, 8


def _mulan_file(folder, clips) -> str:
    """A small MuLaN (random weights, byte tokenizer) saved as a checkpoint, and its quantizer fitted on the
    embeddings of `clips`."""
    xp = main.get_xp(["solver=mulan/debug", "ast.depth=1", "text_transformer.depth=1"])
    torch.manual_seed(0)
    model = get_mulan_model(xp.cfg, tokenizer=get_tokenizer("bytes")).eval()
    path = folder / "mulan" / checkpoint.CHECKPOINT_NAME
    checkpoint.save_checkpoint({"xp.cfg": OmegaConf.to_yaml(xp.cfg), "xp.sig": xp.sig,
                                "best_state": {"states": {"model": model.state_dict()}}}, path)
    pieces = [clip[:, start:start + 8000] for clip in clips for start in (0, 8000)]
    embeddings = model.get_audio_embeddings(torch.stack(pieces), 16000)
    quantizer = MuLaNEmbedQuantizer(model.dim, LEVELS, CODES)
    quantizer.fit(embeddings, iters=5, seed=0)
    save_quantizer(quantizer, quantizer_path(str(path)), source=str(path))
    return str(path)


@pytest.fixture(scope="module")
def music_tokens(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("music_tokens")
    codec = _codec_file(root)
    clips = [audio_read(meta.path)[0] for meta in find_audio_files(tiny_dataset / "train")]
    mulan = _mulan_file(root, clips)
    tokenizer, _ = fit_semantic_tokenizer(LogMelFeatures(16000, frame_rate=50, n_mels=32), [torch.cat(clips)], 16,
                                          seed=0, iters=20, restarts=1)
    semantic = root / "semantic.th"
    save_semantic_tokenizer(tokenizer, semantic)
    roots = {split: root / split for split in ("train", "valid")}
    for split, out in roots.items():
        tokenize_manifest(tiny_dataset / split / "data.jsonl", out, compression_model=codec, n_q=4,
                          semantic_tokenizer=str(semantic), mulan=mulan, mulan_window=0.5)
    return dict(codec=codec, mulan=mulan, semantic=str(semantic), roots=roots, clips=clips)


def _stage_args(music_tokens, stage: str, *extra) -> list:
    roots = music_tokens["roots"]
    crops = {"semantic": 0.6, "coarse": 0.4, "fine": 0.2}
    return [f"solver=musiclm/{stage}_debug", f"datasource.train={roots['train']}", f"datasource.valid={roots['valid']}",
            f"semantic_tokenizer_checkpoint={music_tokens['semantic']}",
            f"compression_model_checkpoint={music_tokens['codec']}", f"mulan_checkpoint={music_tokens['mulan']}",
            "audiolm.num_coarse=2", f"dataset.segment_duration={crops[stage]}",
            "dataset.valid.num_samples=4", *extra]


def test_mulan_tokens_are_a_conditioning_stream_of_the_shards(music_tokens):
    roots = music_tokens["roots"]
    meta, shards = load_token_meta(roots["train"] / "mulan")
    assert meta.extra["kind"] == "mulan" and meta.extra["conditioning"]
    assert (meta.num_codebooks, meta.cardinality, meta.frame_rate) == (LEVELS, CODES, 2.0)  # 0.5 s windows
    assert sum(s["frames"] for s in shards) == 8 * 2  # eight 1 s clips
    conditioner = load_mulan_conditioner(music_tokens["mulan"])
    clip = music_tokens["clips"][0]
    expected = torch.stack([conditioner.tokens_from_audio(clip[None, :, :8000], 16000)[0],
                            conditioner.tokens_from_audio(clip[None, :, 8000:], 16000)[0]], dim=-1)
    dataset = PairedTokenDataset({"semantic": roots["train"] / "semantic", "mulan": roots["train"] / "mulan"},
                                 segment_duration=0.4, shuffle=False)
    assert dataset.durations[0] == pytest.approx(1.0)  # the conditioning stream does not shorten items
    item = dataset.get(0)
    assert item["streams"]["mulan"].shape == (LEVELS, 1) and item["stream_lengths"]["mulan"] == 1
    assert item["streams"]["semantic"].shape == (1, 20)
    column = 0 if item["path"].endswith("clip_000.wav") else None
    if column is not None:  # unshuffled: the first item's crop starts at 0, its middle (0.2 s) is in window 0
        assert torch.equal(item["streams"]["mulan"][:, 0], expected[:, 0])


def test_conditioned_stage_trains_its_table_and_uses_dropout(music_tokens, tmp_path):
    with experiments_folder(tmp_path):
        xp = main.init_xp(main.get_xp(_stage_args(music_tokens, "coarse", "optim.epochs=1",
                                                  "optim.updates_per_epoch=8", "audiolm.cond_drop_prob=0.5")))
        with xp.enter():
            solver = get_solver(xp.cfg)
            model = solver.model
            assert isinstance(model, ConditionedLM) and model.namespace == "coarse"
            table = model.conditioning.tables["coarse"].embedding.weight.detach().clone()
            null = model.null.detach().clone()
            solver.run()
    assert not torch.allclose(model.conditioning.tables["coarse"].embedding.weight, table)
    assert not torch.allclose(model.null, null)
    train = solver.history[-1]["train"]
    assert 0.0 < train["cond_dropped"] < 1.0
    assert solver.history[-1]["valid"]["cond_dropped"] == 0.0


def test_a_conditioned_stage_needs_the_mulan_stream_and_its_producer(music_tokens, tmp_path, tiny_dataset):
    with experiments_folder(tmp_path):
        xp = main.get_xp(_stage_args(music_tokens, "semantic", "dataset.streams=[semantic]"))
        with xp.enter(), pytest.raises(ValueError, match="dataset.streams"):
            get_solver(xp.cfg)
    other = _mulan_file(tmp_path / "other", music_tokens["clips"][:2])
    with experiments_folder(tmp_path):
        xp = main.get_xp(_stage_args(music_tokens, "semantic", f"mulan_checkpoint={other}"))
        with xp.enter(), pytest.raises(ValueError, match="mulan_checkpoint"):
            get_solver(xp.cfg)


@pytest.mark.slow
def test_musiclm_generates_from_text_with_guidance_and_reranking(music_tokens, tmp_path, tiny_dataset):
    from audiogen_lab.models.audiolm import MusicLM
    sigs = {}
    with experiments_folder(tmp_path):
        for stage in ("semantic", "coarse", "fine"):
            xp = main.init_xp(main.get_xp(_stage_args(music_tokens, stage, "optim.epochs=1",
                                                      "optim.updates_per_epoch=3")))
            with xp.enter():
                get_solver(xp.cfg).run()
            sigs[stage] = f"//sig/{xp.sig}"
        lm = MusicLM.from_checkpoints(sigs["semantic"], sigs["coarse"], sigs["fine"])
        out = tmp_path / "samples"
        clip = find_audio_files(tiny_dataset / "train")[0].path
        assert load_script("generate").main(["--semantic", sigs["semantic"], "--coarse", sigs["coarse"], "--fine",
                                             sigs["fine"], "--duration", "0.6", "--text", "a drone", "--text", "noise",
                                             "--num-candidates", "2", "--cfg", "2", "--prompt", str(clip),
                                             "--prompt-seconds", "0.3", "--seed", "0", "--device", "cpu",
                                             "--out", str(out)]) == 0
    for index in range(2):  # one sample per text, each continuing the prompt
        wav, rate = audio_read(out / f"sample_{index:03d}.wav")
        assert rate == 16000 and wav.shape == (1, 60 * 160)
        assert (out / f"sample_{index:03d}.png").exists()
    with pytest.raises(ValueError, match="namespace"):
        _swap_namespace(lm)
    texts = ["a low organ drone", "bright noise bursts"]
    audio = lm.generate(0.3, num_samples=2, text=texts, cfg=2.0, num_candidates=3, top_k=8, seed=0)
    assert audio.shape == (4, 1, 30 * 160)  # 0.3 s at 100 frames/s, hop 160
    assert torch.isfinite(audio).all()
    scores = lm.last_scores
    assert scores.shape == (2, 2, 3)
    again = lm.generate(0.3, num_samples=2, text=texts, cfg=2.0, num_candidates=3, top_k=8, seed=0)
    assert torch.equal(audio, again)
    # the kept sample of each request is its best-scored candidate
    mulan = lm.conditioner.mulan
    kept = torch.nn.functional.cosine_similarity(mulan.get_audio_embeddings(audio, 16000),
                                                 mulan.get_text_embeddings(texts).repeat_interleave(2, 0), dim=-1)
    assert torch.allclose(kept, scores.max(-1).values.flatten(), atol=1e-4)
    unconditional = lm.generate(0.3, num_samples=1, seed=0)
    assert unconditional.shape == (1, 1, 30 * 160)
    # continuation: the prompt's tokens start the sequences and its region is its own reconstruction
    prompt = music_tokens["clips"][0][:, :8000]  # 0.5 s
    continued = lm.generate(1.0, num_samples=2, text=texts[:1], prompt_wave=prompt, seed=0)
    assert continued.shape == (2, 1, 100 * 160)
    codes, _ = lm.codec.encode(prompt[None])
    own = lm.codec.decode(codes[:, :4], None)  # the 4 levels of the shards
    head = 3200  # 0.2 s, far from the join at 0.5 s
    assert torch.allclose(continued[:, :, :head], own[:, :, :head].expand(2, -1, -1), atol=1e-4)


def _swap_namespace(lm):
    """Build an AudioLM with the fine stage in the coarse role: refused by namespace."""
    from audiogen_lab.models.audiolm import AudioLM, Stage
    fake = Stage(lm.fine.model, lm.coarse.plan, lm.coarse.crop_seconds)
    return AudioLM(lm.semantic, fake, lm.fine, lm.codec, lm.semantic_rate)
