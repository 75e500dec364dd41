"""AudioLM's semantic stage end to end: token shards from a fitted log-mel semantic tokenizer, the producer
check, a first loss at ln V, EOS targets, learning below the unigram baseline, //sig/ loading and sampling."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.data.audio import audio_read
from audiogen_lab.data.audio_dataset import find_audio_files
from audiogen_lab.data.tokenize import tokenize_manifest
from audiogen_lab.models.semantic_tokenizer import LogMelFeatures, fit_semantic_tokenizer, save_semantic_tokenizer
from audiogen_lab.modules.lm_transformer import LMTransformer
from audiogen_lab.solvers.audiolm import IGNORE, AudioLMSolver
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.train import main

from ..conftest import experiments_folder

CLUSTERS = 16


@pytest.fixture(scope="module")
def semantic_tokens(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic_tokens")
    clips = [audio_read(meta.path)[0] for meta in find_audio_files(tiny_dataset / "train")]
    tokenizer, _ = fit_semantic_tokenizer(LogMelFeatures(16000, frame_rate=50, n_mels=32),
                                          [torch.cat(clips)], CLUSTERS, seed=0, iters=30, restarts=1)
    path = root / "semantic.th"
    save_semantic_tokenizer(tokenizer, path)
    other, _ = fit_semantic_tokenizer(LogMelFeatures(16000, frame_rate=50, n_mels=32),
                                      [torch.cat(clips)], CLUSTERS + 1, seed=1, iters=5, restarts=1)
    save_semantic_tokenizer(other, root / "other.th")
    folders = {split: tokenize_manifest(tiny_dataset / split / "data.jsonl", root / split,
                                        semantic_tokenizer=str(path))["semantic"] for split in ("train", "valid")}
    return path, root / "other.th", folders


def _args(semantic_tokens, *extra):
    path, _, folders = semantic_tokens
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
    inputs, targets = solver.sequences_for("train", batch)
    with torch.no_grad():
        logits = solver.model(inputs)
    valid = targets != IGNORE
    return float(torch.nn.functional.cross_entropy(logits[valid], targets[valid]))


def test_first_loss_is_ln_vocabulary(trained_xp):
    _, solver, first = trained_xp
    vocab = solver.layout.vocab_size
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
    layout = solver.layout
    batch = {"tokens": torch.tensor([[[3, 4, 5, 0]], [[6, 7, 8, 9]]]),
             "mask": torch.tensor([[True, True, True, False], [True] * 4])}
    inputs, targets = solver.sequences_for("train", batch)
    assert inputs.tolist() == [[layout.bos_id, 3, 4, 5, layout.pad_id], [layout.bos_id, 6, 7, 8, 9]]
    assert targets.tolist() == [[3, 4, 5, layout.eos_id, IGNORE], [6, 7, 8, 9, IGNORE]]  # the 2nd was cut


def test_shards_of_another_tokenizer_are_refused(semantic_tokens, tmp_path):
    _, other, _ = semantic_tokens
    with experiments_folder(tmp_path):
        xp = main.get_xp(_args(semantic_tokens, f"semantic_tokenizer_checkpoint={other}"))
        with xp.enter(), pytest.raises(ValueError, match="semantic_tokenizer_checkpoint"):
            get_solver(xp.cfg)


def test_sig_loading_and_sampling(trained_xp):
    xp, solver, _ = trained_xp
    with experiments_folder(xp.folder.parent.parent):
        model = AudioLMSolver.model_from_checkpoint(f"//sig/{xp.sig}")
    assert isinstance(model, LMTransformer) and not model.training
    layout = solver.layout
    prompt = torch.full((2, 1), layout.bos_id)
    generator = torch.Generator().manual_seed(0)
    out = model.generate(prompt, 20, temperature=1.0, top_k=5, generator=generator)
    assert out.shape == (2, 21) and int(out[:, 1:].max()) < layout.vocab_size
