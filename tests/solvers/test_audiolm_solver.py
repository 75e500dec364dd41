"""AudioLM's semantic stage end to end: token shards from a fitted log-mel semantic tokenizer, the producer
check, a first loss at ln V, EOS targets, learning below the unigram baseline, //sig/ loading and sampling."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.audio import audio_read
from audiogen_lab.data.audio_dataset import find_audio_files
from audiogen_lab.data.tokenize import tokenize_manifest
from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.semantic_tokenizer import LogMelFeatures, fit_semantic_tokenizer, save_semantic_tokenizer
from audiogen_lab.modules.lm_transformer import LMTransformer
from audiogen_lab.solvers.audiolm import IGNORE, AudioLMSolver
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.train import main
from audiogen_lab.utils import checkpoint

from ..conftest import experiments_folder, load_script

CLUSTERS = 16


def _codec_file(folder) -> str:
    """A compression/debug codec (random weights; 16 kHz, 100 Hz, 64 codes per level) saved as a checkpoint."""
    xp = main.get_xp(["solver=compression/debug"])
    torch.manual_seed(0)
    model = get_compression_model(xp.cfg)
    model.encode(torch.randn(4, 1, 16000))  # codebooks are initialised from the first batch
    path = folder / "codec" / checkpoint.CHECKPOINT_NAME
    checkpoint.save_checkpoint({"xp.cfg": OmegaConf.to_yaml(xp.cfg), "xp.sig": xp.sig,
                                "best_state": {"states": {"model": model.state_dict()}}}, path)
    return str(path)


@pytest.fixture(scope="module")
def semantic_tokens(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic_tokens")
    codec = _codec_file(root)
    clips = [audio_read(meta.path)[0] for meta in find_audio_files(tiny_dataset / "train")]
    tokenizer, _ = fit_semantic_tokenizer(LogMelFeatures(16000, frame_rate=50, n_mels=32),
                                          [torch.cat(clips)], CLUSTERS, seed=0, iters=30, restarts=1)
    path = root / "semantic.th"
    save_semantic_tokenizer(tokenizer, path)
    other, _ = fit_semantic_tokenizer(LogMelFeatures(16000, frame_rate=50, n_mels=32),
                                      [torch.cat(clips)], CLUSTERS + 1, seed=1, iters=5, restarts=1)
    save_semantic_tokenizer(other, root / "other.th")
    roots = {split: root / split for split in ("train", "valid")}
    for split, out in roots.items():
        tokenize_manifest(tiny_dataset / split / "data.jsonl", out, semantic_tokenizer=str(path),
                          compression_model=codec, n_q=4)
    return path, root / "other.th", {split: out / "semantic" for split, out in roots.items()}, roots, codec


def _args(semantic_tokens, *extra):
    path, _, folders, _, _ = semantic_tokens
    return ["solver=audiolm/semantic_debug", f"datasource.train={folders['train']}",
            f"datasource.valid={folders['valid']}", f"semantic_tokenizer_checkpoint={path}",
            "dataset.segment_duration=0.6", "optim.epochs=2", "optim.updates_per_epoch=40", *extra]


@pytest.fixture(scope="module")
def trained_xp(semantic_tokens, tmp_path_factory):
    with experiments_folder(tmp_path_factory.mktemp("dora")):
        xp = main.init_xp(main.get_xp(_args(semantic_tokens)))
        with xp.enter():
            solver = get_solver(xp.cfg)
            first = _first_batch_ce(solver)
            solver.run()
        yield xp, solver, first


def _first_batch_ce(solver: AudioLMSolver) -> float:
    batch = next(iter(solver.dataloaders["train"]))
    seq = solver.sequences_for("train", batch)
    with torch.no_grad():
        logits = solver.model(seq.inputs)
    valid = seq.targets != IGNORE
    return float(torch.nn.functional.cross_entropy(logits[valid], seq.targets[valid]))


def test_first_loss_is_ln_vocabulary(trained_xp):
    _, solver, first = trained_xp
    vocab = solver.plan.vocab.vocab_size
    assert vocab == CLUSTERS + 3
    assert abs(first - math.log(vocab)) < 0.1 * math.log(vocab)


def test_learns_below_the_unigram_baseline(trained_xp):
    _, solver, _ = trained_xp
    valid = solver.history[-1]["valid"]
    assert {"ce", "accuracy", "entropy", "unigram_ce"} <= set(valid)
    assert valid["ce"] < 0.8 * valid["unigram_ce"], valid
    assert solver.history[-1]["train"]["ce"] < solver.history[0]["train"]["ce"]


def test_targets_end_with_eos_only_where_an_item_ends(trained_xp):
    _, solver, _ = trained_xp
    layout = solver.plan.target
    crop = solver.dataloaders["train"].dataset.segment_frames  # 0.6 s at 50 Hz
    ids = torch.arange(crop).remainder(CLUSTERS)
    tokens = torch.stack([ids.masked_fill(torch.arange(crop) >= 3, 0), ids])[:, None]  # [2, 1, crop]
    mask = torch.stack([torch.arange(crop) < 3, torch.ones(crop, dtype=torch.bool)])
    seq = solver.sequences_for("train", {"tokens": tokens, "mask": mask})
    pads = [layout.pad_id] * (crop - 3)
    assert seq.inputs.tolist() == [[layout.bos_id, 0, 1, 2] + pads, [layout.bos_id] + ids.tolist()]
    assert seq.targets[0].tolist() == [0, 1, 2, layout.eos_id] + [IGNORE] * (crop - 3)  # ended inside the crop
    assert seq.targets[1].tolist() == ids.tolist() + [IGNORE]  # cut by the crop: no EOS


def test_shards_of_another_tokenizer_are_refused(semantic_tokens, tmp_path):
    other = semantic_tokens[1]
    with experiments_folder(tmp_path):
        xp = main.get_xp(_args(semantic_tokens, f"semantic_tokenizer_checkpoint={other}"))
        with xp.enter(), pytest.raises(ValueError, match="semantic_tokenizer_checkpoint"):
            get_solver(xp.cfg)


def test_sig_loading_and_sampling(trained_xp):
    xp, solver, _ = trained_xp
    with experiments_folder(xp.folder.parent.parent):
        model = AudioLMSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    assert isinstance(model, LMTransformer) and not model.training
    layout = solver.plan.target
    prompt = torch.full((2, 1), layout.bos_id)
    generator = torch.Generator().manual_seed(0)
    out = model.generate(prompt, 20, temperature=1.0, top_k=5, generator=generator)
    assert out.shape == (2, 21) and int(out[:, 1:].max()) < layout.vocab_size


def _train(args, tmp_path):
    with experiments_folder(tmp_path):
        xp = main.init_xp(main.get_xp(args))
        with xp.enter():
            solver = get_solver(xp.cfg)
            first = _first_batch_ce(solver)
            solver.run()
    return solver, first


@pytest.mark.slow
def test_fine_stage_learns_the_upper_levels_from_the_coarse_ones(semantic_tokens, tmp_path):
    _, _, _, roots, codec = semantic_tokens
    args = ["solver=audiolm/fine_debug", f"datasource.train={roots['train'] / 'acoustic'}",
            f"datasource.valid={roots['valid'] / 'acoustic'}", f"compression_model_checkpoint={codec}",
            "audiolm.num_coarse=2", "dataset.segment_duration=0.3", "optim.epochs=2", "optim.updates_per_epoch=40"]
    solver, first = _train(args, tmp_path)
    plan = solver.plan
    assert (plan.prefix.num_levels, plan.target.num_levels, plan.target.first_level) == (2, 2, 2)
    assert plan.vocab.vocab_size == 2 * (2 * 64 + 3)
    assert abs(first - math.log(plan.vocab.vocab_size)) < 0.1 * math.log(plan.vocab.vocab_size)
    valid = solver.history[-1]["valid"]
    for key in ("ce_level_0", "ce_level_1", "accuracy_level_0", "accuracy_level_1", "unigram_ce", "target_ce"):
        assert key in valid, key
    assert valid["target_ce"] < valid["unigram_ce"], valid
    batch = next(iter(solver.dataloaders["train"]))
    seq = solver.sequences_for("train", batch)
    fine_offset = plan.vocab.offset(1)
    row = seq.inputs[0]
    frames = int(batch["mask"][0].sum())
    assert row[0] == plan.bos_id and bool((row[1:1 + 2 * frames] < fine_offset).all())  # coarse prefix first
    assert bool((row[1 + 2 * frames:1 + 4 * frames] >= fine_offset).all())  # then the fine target


def test_acoustic_shards_of_another_codec_are_refused(semantic_tokens, tmp_path):
    _, _, _, roots, _ = semantic_tokens
    args = ["solver=audiolm/fine_debug", f"datasource.train={roots['train'] / 'acoustic'}",
            f"datasource.valid={roots['valid'] / 'acoustic'}",
            "compression_model_checkpoint=//pretrained/encodec_24khz"]
    with experiments_folder(tmp_path):
        xp = main.get_xp(args)
        with xp.enter(), pytest.raises(ValueError, match="compression_model_checkpoint"):
            get_solver(xp.cfg)


@pytest.mark.slow
def test_coarse_stage_models_the_first_levels_after_the_semantic_ids(semantic_tokens, tmp_path):
    path, _, _, roots, codec = semantic_tokens
    args = ["solver=audiolm/coarse_debug", f"datasource.train={roots['train']}", f"datasource.valid={roots['valid']}",
            f"semantic_tokenizer_checkpoint={path}", f"compression_model_checkpoint={codec}", "audiolm.num_coarse=2",
            "dataset.segment_duration=0.4", "optim.epochs=2", "optim.updates_per_epoch=40"]
    solver, first = _train(args, tmp_path)
    plan = solver.plan
    assert plan.vocab.vocab_size == (CLUSTERS + 3) + (2 * 64 + 3)
    assert abs(first - math.log(plan.vocab.vocab_size)) < 0.1 * math.log(plan.vocab.vocab_size)
    valid = solver.history[-1]["valid"]
    assert {"ce_level_0", "ce_level_1", "unigram_ce", "target_ce"} <= set(valid)
    assert valid["target_ce"] < valid["unigram_ce"], valid
    batch = next(iter(solver.dataloaders["train"]))
    seq = solver.sequences_for("train", batch)
    semantic_frames = int(batch["stream_masks"]["semantic"][0].sum())
    acoustic_frames = int(batch["stream_masks"]["acoustic"][0].sum())
    assert acoustic_frames == 2 * semantic_frames  # 100 Hz codes over the same seconds as 50 Hz ids
    row, offset = seq.inputs[0], plan.vocab.offset(1)
    assert bool((row[1:1 + semantic_frames] < CLUSTERS).all())
    assert bool((row[1 + semantic_frames:1 + semantic_frames + 2 * acoustic_frames] >= offset).all())
    assert seq.weights[0, :semantic_frames].eq(0.1).all()  # the auxiliary prefix loss of coarse_debug


@pytest.mark.slow
def test_three_stages_chained_by_sig_generate_audio_of_the_requested_duration(semantic_tokens, tmp_path):
    from audiogen_lab.models.audiolm import AudioLM
    path, _, folders, roots, codec = semantic_tokens
    short = ["optim.epochs=1", "optim.updates_per_epoch=3", "dataset.valid.num_samples=4"]
    stages = {
        "semantic": ["solver=audiolm/semantic_debug", f"datasource.train={folders['train']}",
                     f"datasource.valid={folders['valid']}", f"semantic_tokenizer_checkpoint={path}",
                     "dataset.segment_duration=0.6"],
        "coarse": ["solver=audiolm/coarse_debug", f"datasource.train={roots['train']}",
                   f"datasource.valid={roots['valid']}", f"semantic_tokenizer_checkpoint={path}",
                   f"compression_model_checkpoint={codec}", "audiolm.num_coarse=2", "dataset.segment_duration=0.4"],
        "fine": ["solver=audiolm/fine_debug", f"datasource.train={roots['train'] / 'acoustic'}",
                 f"datasource.valid={roots['valid'] / 'acoustic'}", f"compression_model_checkpoint={codec}",
                 "audiolm.num_coarse=2", "dataset.segment_duration=0.2"],
    }
    sigs = {}
    with experiments_folder(tmp_path):
        for stage, args in stages.items():
            xp = main.init_xp(main.get_xp(args + short))
            with xp.enter():
                get_solver(xp.cfg).run()
            sigs[stage] = f"//sig/{xp.sig}"
        lm = AudioLM.from_checkpoints(sigs["semantic"], sigs["coarse"], sigs["fine"])
        out = tmp_path / "samples"
        assert load_script("generate").main(["--semantic", sigs["semantic"], "--coarse", sigs["coarse"], "--fine",
                                             sigs["fine"], "--duration", "0.3", "--num-samples", "2", "--seed", "1",
                                             "--device", "cpu", "--out", str(out)]) == 0
    for index in range(2):
        wav, rate = audio_read(out / f"sample_{index:03d}.wav")
        assert rate == 16000 and wav.shape == (1, 30 * 160)
        assert (out / f"sample_{index:03d}.png").read_bytes()[:4] == b"\x89PNG"
    assert lm.semantic_rate == 50 and lm.fine.crop_seconds == 0.2
    audio = lm.generate(duration=0.5, num_samples=2, temperature=1.0, top_k=8, seed=0)
    assert audio.shape == (2, 1, 50 * 160)  # 0.5 s at 100 frames/s, hop 160: 16 kHz mono
    assert torch.isfinite(audio).all() and audio.abs().max() > 0
    again = lm.generate(duration=0.5, num_samples=2, temperature=1.0, top_k=8, seed=0)
    assert torch.equal(audio, again)  # seeded


def test_valid_reports_teacher_forced_reconstruction_with_a_frozen_codec(semantic_tokens, tmp_path):
    _, _, _, roots, codec = semantic_tokens
    args = ["solver=audiolm/fine_debug", f"datasource.train={roots['train'] / 'acoustic'}",
            f"datasource.valid={roots['valid'] / 'acoustic'}", f"compression_model_checkpoint={codec}",
            "audiolm.num_coarse=2", "dataset.segment_duration=0.2", "optim.epochs=1", "optim.updates_per_epoch=2",
            "dataset.valid.num_samples=4", "audiolm.reconstruction_items=2"]
    with experiments_folder(tmp_path):
        xp = main.init_xp(main.get_xp(args))
        with xp.enter():
            solver = get_solver(xp.cfg)
            solver.run()
            state = checkpoint.load_checkpoint(solver.checkpoint_path)
    entry = solver.models["codec"]
    assert entry.role == "frozen" and not entry.export and not any(p.requires_grad for p in entry.module.parameters())
    valid = solver.history[-1]["valid"]
    for key in ("recon_si_snr", "recon_mel", "recon_si_snr_shuffled", "recon_mel_shuffled"):
        assert math.isfinite(valid[key]), (key, valid)
    assert "recon_si_snr" not in solver.history[-1]["train"]
    assert set(state["best_state"]["states"]) == {"model"}  # the codec's weights stay in its own checkpoint
    assert state["upstream"] == {"compression_model_checkpoint": codec}


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_each_stage_overfits_one_batch(semantic_tokens, tmp_path, stage):
    """The stage's own rows (prefix, target, EOS, padding) of one batch are learnt to below 0.5 nats."""
    from audiogen_lab.models.token_sequences import weighted_ce
    path, _, folders, roots, codec = semantic_tokens
    args = {"semantic": _args(semantic_tokens),
            "coarse": ["solver=audiolm/coarse_debug", f"datasource.train={roots['train']}",
                       f"datasource.valid={roots['valid']}", f"semantic_tokenizer_checkpoint={path}",
                       f"compression_model_checkpoint={codec}", "audiolm.num_coarse=2", "dataset.segment_duration=0.3"],
            "fine": ["solver=audiolm/fine_debug", f"datasource.train={roots['train'] / 'acoustic'}",
                     f"datasource.valid={roots['valid'] / 'acoustic'}", f"compression_model_checkpoint={codec}",
                     "audiolm.num_coarse=2", "dataset.segment_duration=0.2"]}[stage]
    with experiments_folder(tmp_path):
        xp = main.get_xp(args + ["dataset.batch_size=4", "audiolm.reconstruction_metrics=false"])
        with xp.enter():
            solver = get_solver(xp.cfg)
    torch.manual_seed(0)
    seq = solver.sequences_for("train", next(iter(solver.dataloaders["train"])))
    model = solver.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = weighted_ce(model(seq.inputs), seq)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5, (stage, loss.item())
