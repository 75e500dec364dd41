"""solver=semantic/kmeans end to end on generated clips: the tokenizer file and its metrics, deterministic ids,
//sig/ naming the tokenizer wherever one is accepted, no refit of a finished XP, config errors naming the key,
and the HuBERT, MuLaN and consistency autoencoder feature sources."""
from __future__ import annotations

import math

import pytest
import torch

from audiogen_lab.data.audio import audio_read
from audiogen_lab.data.audio_dataset import find_audio_files
from audiogen_lab.data.tokenize import check_token_producer, tokenize_manifest
from audiogen_lab.models.semantic_features import ConsistencyAEFeatures, MuLaNFeatures
from audiogen_lab.models.semantic_tokenizer import (TOKENIZER_FILE, HuBERTFeatures, LogMelFeatures,
                                                    load_semantic_tokenizer, read_semantic_tokenizer_file,
                                                    resolve_semantic_tokenizer_path)
from audiogen_lab.quantization.kmeans import cluster_usage
from audiogen_lab.solvers import semantic_kmeans
from audiogen_lab.solvers.builders import get_solver
from audiogen_lab.solvers.semantic_kmeans import SemanticKMeansSolver
from audiogen_lab.train import main

from ..conftest import experiments_folder
from ..models.test_semantic_features import save_consistency_ae, save_mulan

pytestmark = pytest.mark.usefixtures("one_thread")

CLUSTERS = 16
SMALL = ["dataset.batch_size=4", "dataset.segment_duration=1.0", "dataset.valid.num_samples=null",
         "kmeans.num_batches=4", "kmeans.iters=20", f"semantic.num_clusters={CLUSTERS}"]


def _args(dataset, *extra):
    return ["solver=semantic/kmeans_debug", f"datasource.train={dataset / 'train'}",
            f"datasource.valid={dataset / 'valid'}", *SMALL, *extra]


def _run(args):
    xp = main.init_xp(main.get_xp(args))
    with xp.enter():
        solver = get_solver(xp.cfg)
        solver.run()
    return xp, solver


@pytest.fixture(scope="module")
def fitted_xp(tiny_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dora")
    with experiments_folder(folder):  # xp.folder and //sig/ resolve there in the tests
        xp, solver = _run(_args(tiny_dataset))
        yield folder, xp, solver


def _clips(dataset, split="valid"):
    return torch.cat([audio_read(meta.path)[0] for meta in find_audio_files(dataset / split)])  # [8, 16000]


def test_fit_writes_a_loadable_tokenizer(fitted_xp):
    _, xp, solver = fitted_xp
    assert isinstance(solver, SemanticKMeansSolver) and len(solver.history) == 1
    path = xp.folder / TOKENIZER_FILE
    tokenizer = load_semantic_tokenizer(path)
    assert isinstance(tokenizer.extractor, LogMelFeatures) and tokenizer.extractor.dim == 32
    assert (tokenizer.cardinality, tokenizer.frame_rate, tokenizer.sample_rate) == (CLUSTERS, 50, 16000)
    torch.testing.assert_close(tokenizer.centroids, solver.kmeans.centroids, rtol=0, atol=0)
    assert not solver.kmeans.centroids.eq(0).all()


def test_metrics_on_train_and_valid(fitted_xp, tiny_dataset):
    _, _, solver = fitted_xp
    train, valid = solver.history[0]["train"], solver.history[0]["valid"]
    for metrics in (train, valid):
        assert 1 < metrics["perplexity"] <= CLUSTERS
        assert 0 < metrics["used_fraction"] <= 1 and metrics["mean_sq_distance"] > 0
        assert all(math.isfinite(value) for value in metrics.values())
    # 4 batches of 4 segments of at most 1 s (random offsets: padded items are cut to their audio) at 50 Hz
    assert 0 < train["audio_seconds"] <= 16
    assert train["num_frames"] == pytest.approx(train["audio_seconds"] * 50, abs=16)
    assert train["inertia"] == pytest.approx(train["mean_sq_distance"] * train["num_frames"])
    assert valid["num_frames"] == 8 * 50 and 0 < valid["dedup_ratio"] <= 1  # every valid clip, whole
    # The valid metrics are those of the ids of the valid clips under the written tokenizer.
    tokenizer = load_semantic_tokenizer(solver.tokenizer_path)
    ids = tokenizer.encode(_clips(tiny_dataset), 16000)
    assert ids.shape == (8, 50)
    assert cluster_usage(ids, CLUSTERS)["perplexity"] == pytest.approx(valid["perplexity"])


def test_ids_are_deterministic(fitted_xp, tiny_dataset, tmp_path):
    _, xp, _ = fitted_xp
    first = load_semantic_tokenizer(xp.folder / TOKENIZER_FILE)
    with experiments_folder(tmp_path):
        again, _ = _run(_args(tiny_dataset))  # the same XP in another experiments folder: fitted anew
    second = load_semantic_tokenizer(again.folder / TOKENIZER_FILE)
    assert again.sig == xp.sig and second.id == first.id
    clips = _clips(tiny_dataset)
    assert torch.equal(first.encode(clips, 16000), second.encode(clips, 16000))
    assert torch.equal(first.encode(clips, 16000), first.encode(clips, 16000))


def test_sig_names_the_tokenizer_file(fitted_xp, tiny_dataset, tmp_path):
    folder, xp, solver = fitted_xp
    sig = f"//sig/{xp.sig}"
    identity = read_semantic_tokenizer_file(solver.tokenizer_path)["id"]
    with experiments_folder(folder):
        assert resolve_semantic_tokenizer_path(sig) == xp.folder / TOKENIZER_FILE
        assert resolve_semantic_tokenizer_path(xp.folder) == xp.folder / TOKENIZER_FILE
        assert load_semantic_tokenizer(sig).id == identity == read_semantic_tokenizer_file(xp.folder)["id"]
        out = tokenize_manifest(tiny_dataset / "valid" / "data.jsonl", tmp_path / "tokens", semantic_tokenizer=sig)
        meta = check_token_producer(out["semantic"], sig, "semantic")
        assert meta.model == identity and meta.extra["tokenizer"] == str((xp.folder / TOKENIZER_FILE).resolve())
        check_token_producer(out["semantic"], str(solver.tokenizer_path), "semantic")  # a file path still works
        with pytest.raises(FileNotFoundError, match="semantic/kmeans"):
            load_semantic_tokenizer("//sig/00000000")
    assert resolve_semantic_tokenizer_path(str(solver.tokenizer_path)) == solver.tokenizer_path


def test_finished_xp_is_not_fitted_again(fitted_xp, monkeypatch, tiny_dataset):
    folder, xp, solver = fitted_xp

    def refuse(*args, **kwargs):
        raise AssertionError("a finished XP was fitted again")

    monkeypatch.setattr(semantic_kmeans, "fit_semantic_tokenizer", refuse)
    identity = read_semantic_tokenizer_file(solver.tokenizer_path)["id"]
    with experiments_folder(folder):
        (xp.folder / TOKENIZER_FILE).unlink()  # lost: written again from the checkpoint's centroids
        again, resumed = _run(_args(tiny_dataset))
    assert again.sig == xp.sig and len(resumed.history) == 1
    assert read_semantic_tokenizer_file(xp.folder / TOKENIZER_FILE)["id"] == identity
    torch.testing.assert_close(resumed.kmeans.centroids, solver.kmeans.centroids, rtol=0, atol=0)


@pytest.mark.parametrize("extra, key", [
    (["semantic.features=hubert"], "semantic.hubert_checkpoint"),
    (["semantic.features=wav2vec"], "semantic.features"),
    (["semantic.features=mulan", "semantic.frame_rate=null"], "mulan_checkpoint"),
    (["semantic.features=consistency_ae"], "compression_model_checkpoint"),
    (["optim.epochs=2"], "optim.epochs"),
    (["semantic.frame_rate=12.5"], "semantic.frame_rate"),
])
def test_bad_config_names_the_key(tiny_dataset, tmp_path, extra, key):
    with experiments_folder(tmp_path):
        xp = main.get_xp(_args(tiny_dataset, *extra))
        with xp.enter(), pytest.raises(ValueError, match=key.replace(".", r"\.")):
            get_solver(xp.cfg)


def test_too_few_frames_names_the_keys(tiny_dataset, tmp_path):
    with experiments_folder(tmp_path):
        xp = main.init_xp(main.get_xp(_args(tiny_dataset, "semantic.num_clusters=2000")))
        with xp.enter(), pytest.raises(ValueError, match=r"semantic\.num_clusters=2000.*kmeans\.num_batches"):
            get_solver(xp.cfg).run()


def test_hubert_features(tiny_dataset, tmp_path):
    """A tiny HuBERT-like model (20 samples per frame: 800 Hz, pooled to 400 Hz) from a local weights file."""
    import torchaudio
    from ..models.test_semantic_tokenizer_io import TINY
    torch.manual_seed(0)
    weights = tmp_path / "hubert.pt"
    torch.save(torchaudio.models.wav2vec2_model(**TINY).state_dict(), weights)
    layers = ",".join(f"[{a},{b},{c}]" for a, b, c in TINY["extractor_conv_layer_config"])
    arch = ",".join(f"{key}:{value}" for key, value in TINY.items() if key != "extractor_conv_layer_config")
    arch = arch.replace("None", "null").replace("False", "false")
    with experiments_folder(tmp_path / "dora"):
        xp, solver = _run(_args(tiny_dataset, "semantic.features=hubert", f"semantic.hubert_checkpoint={weights}",
                                "semantic.layer=1", "semantic.frame_rate=400",
                                f"semantic.hubert_architecture={{{arch},extractor_conv_layer_config:[{layers}]}}"))
        tokenizer = load_semantic_tokenizer(f"//sig/{xp.sig}")
        assert read_semantic_tokenizer_file(solver.tokenizer_path)["extractor"]["args"]["checkpoint"] == str(weights)
    assert isinstance(tokenizer.extractor, HuBERTFeatures) and tokenizer.frame_rate == 400
    assert solver.history[0]["valid"]["num_frames"] == 8 * (799 // 2)  # 799 frames of 1 s, averaged in pairs
    assert 1 < solver.history[0]["valid"]["perplexity"] <= CLUSTERS


@pytest.mark.parametrize("features", ["mulan", "consistency_ae"])
def test_upstream_model_features(tiny_dataset, tmp_path, features):
    """MuLaN tower frames (6.25 Hz) and consistency autoencoder features (62.5 Hz, pooled to 31.25 Hz) of models
    named by //sig/; the tokenizer file records that name."""
    folder = tmp_path / "dora"
    if features == "mulan":
        save_mulan(folder / "xps" / "mulan1" / "checkpoint.th")
        extra = ["mulan_checkpoint=//sig/mulan1", "semantic.frame_rate=null", "semantic.num_clusters=8",
                 "kmeans.num_batches=8"]
        klass, rate, per_clip = MuLaNFeatures, 6.25, 6
    else:
        save_consistency_ae(folder / "xps" / "cae1" / "checkpoint.th")
        extra = ["compression_model_checkpoint=//sig/cae1", "semantic.frame_rate=31.25"]
        klass, rate, per_clip = ConsistencyAEFeatures, 31.25, 31
    with experiments_folder(folder):
        if features == "mulan":  # kmeans_debug's 50 Hz is not a MuLaN rate
            with pytest.raises(ValueError, match=r"semantic\.frame_rate"):
                _run(_args(tiny_dataset, "semantic.features=mulan", *extra, "semantic.frame_rate=50"))
        xp, solver = _run(_args(tiny_dataset, f"semantic.features={features}", *extra))
        tokenizer = load_semantic_tokenizer(f"//sig/{xp.sig}")
        assert isinstance(tokenizer.extractor, klass) and tokenizer.frame_rate == rate
        spec = read_semantic_tokenizer_file(f"//sig/{xp.sig}")["extractor"]
        assert spec["kind"] == features and spec["args"]["checkpoint"].startswith("//sig/")
        ids = tokenizer.encode(_clips(tiny_dataset), 16000)
    assert ids.shape == (8, per_clip)
    valid = solver.history[0]["valid"]
    assert valid["num_frames"] == 8 * per_clip and 1 < valid["perplexity"] <= tokenizer.cardinality
    assert solver.upstream == {semantic_kmeans.UPSTREAM_KEYS[features]: spec["args"]["checkpoint"]}
