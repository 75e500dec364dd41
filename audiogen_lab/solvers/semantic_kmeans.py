"""Fitting AudioLM's semantic tokenizer: k-means over self-supervised audio features, from an audio manifest.

One epoch (``optim.epochs: 1``), no optimizer:

- train: reads at most ``kmeans.num_batches`` batches of random segments of the train split (``dataset.kind:
  audio``), stopping once about ``kmeans.max_frames`` feature frames are read, extracts the features of
  ``semantic.features`` and fits ``semantic.num_clusters`` centroids with seeded mini-batch k-means
  (:func:`~audiogen_lab.models.semantic_tokenizer.fit_semantic_tokenizer`, options ``kmeans.{iters, restarts,
  batch_size, seed}``). The tokenizer file :data:`~audiogen_lab.models.semantic_tokenizer.TOKENIZER_FILE` is
  written into the XP folder: ``//sig/SIG`` names it wherever a semantic tokenizer is accepted
  (``semantic_tokenizer_checkpoint``, ``scripts/tokenize_dataset.py --semantic-tokenizer``).
- valid: the ids of every frame of the valid split under the fitted centroids.

Padded items are never clustered: a batch holding one is split into its items, each cut to its real length.

Metrics, on the frames the centroids were fitted on (train) and on the valid frames (valid):
``mean_sq_distance`` (squared distance to the nearest centroid, per frame), ``perplexity`` (exp of the
entropy of the ids' distribution, from 1 to K), ``used_fraction`` of the K clusters, ``num_frames``; train
adds ``inertia`` (the sum) and ``audio_seconds``, valid ``dedup_ratio`` (ids left per frame once runs of
equal ids are collapsed, what ``semantic.dedup`` would keep).

Feature sources (``semantic.features``), each frozen:

- ``logmel``: log mel frames (``semantic.logmel.n_mels``; ``semantic.frame_rate`` must divide ``sample_rate``);
- ``hubert``: layer ``semantic.layer`` of the HuBERT weights at ``semantic.hubert_checkpoint`` (a local file or
  Hugging Face folder, never downloaded; ``semantic.hubert_variant`` / ``semantic.hubert_architecture`` when the
  weights need them), 50 Hz or 25 Hz;
- ``mulan``: the audio tower frames of the MuLaN at ``mulan_checkpoint`` (``//sig/SIG``, ...);
- ``consistency_ae``: the encoder features of the consistency autoencoder at ``compression_model_checkpoint``.

``semantic.frame_rate: null`` keeps the extractor's native rate (50 Hz for log mel frames); otherwise it must
be the native rate divided by an integer (groups of frames averaged). The centroids are checkpointed with the
history, so a finished XP is not fitted again when it runs again, and its tokenizer file is written again
from the checkpoint if it went missing. The fit runs in a single process.
"""
from __future__ import annotations

import time
import typing as tp
from pathlib import Path

import flashy
import julius
import torch
from einops import rearrange
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..models.semantic_tokenizer import (TOKENIZER_FILE, HuBERTFeatures, LogMelFeatures, SemanticTokenizer,
                                         fit_semantic_tokenizer, save_semantic_tokenizer)
from ..quantization.kmeans import assign, cluster_usage, inertia
from . import builders, roles
from .base import StandardSolver

FEATURES = ("logmel", "hubert", "mulan", "consistency_ae")
#: the config key naming the model of the feature sources built on one of this project's checkpoints
UPSTREAM_KEYS = {"mulan": "mulan_checkpoint", "consistency_ae": "compression_model_checkpoint"}


def get_semantic_extractor(cfg: DictConfig) -> tp.Tuple[nn.Module, tp.Dict[str, tp.Any]]:
    """The feature extractor of ``semantic.features`` (see the module docstring) and the keyword arguments
    :func:`~audiogen_lab.models.semantic_tokenizer.save_semantic_tokenizer` needs to record it."""
    options = cfg.semantic
    kind = options.get("features")
    frame_rate = options.get("frame_rate")
    if kind not in FEATURES:
        raise ValueError(f"semantic.features={kind!r} is unknown; choose one of {list(FEATURES)}.")
    try:
        if kind == "logmel":
            rate = 50 if frame_rate is None else frame_rate
            if float(rate) != int(rate):
                raise ValueError(f"semantic.frame_rate={frame_rate}: log mel frames need a whole number of Hz.")
            logmel = options.get("logmel") or {}
            return LogMelFeatures(int(cfg.sample_rate), frame_rate=int(rate), n_mels=int(logmel.get("n_mels", 64))), {}
        if kind == "hubert":
            if not options.get("hubert_checkpoint"):
                raise ValueError("semantic.hubert_checkpoint is not set: semantic.features=hubert needs a local HuBERT "
                                 "weights file or Hugging Face folder (never downloaded).")
            path = to_absolute_path(str(options.hubert_checkpoint))
            architecture = options.get("hubert_architecture")
            architecture = None if architecture is None else OmegaConf.to_container(architecture, resolve=True)
            variant = options.get("hubert_variant")
            extractor = HuBERTFeatures(path, layer=int(options.layer), frame_rate=frame_rate, variant=variant,
                                       architecture=architecture)
            return extractor, {"source": path, "variant": variant, "architecture": architecture}
        from ..models.semantic_features import ConsistencyAEFeatures, MuLaNFeatures
        key = UPSTREAM_KEYS[kind]
        source = cfg.get(key)
        if not source:
            raise ValueError(f"{key} is not set: semantic.features={kind} clusters the frames of that model "
                             "(//sig/SIG, an XP folder, a checkpoint or export path).")
        klass = MuLaNFeatures if kind == "mulan" else ConsistencyAEFeatures
        return klass(str(source), frame_rate=frame_rate), {}
    except (ValueError, FileNotFoundError) as err:
        if str(err).startswith(("semantic.", *UPSTREAM_KEYS.values())):
            raise
        hint = " Set semantic.frame_rate to it (null: the native rate)." if "frame_rate" in str(err) else ""
        raise type(err)(f"semantic.features={kind}: {err}{hint}") from err


class Centroids(nn.Module):
    """The fitted k-means centroids ``[K, D]`` (zeros until the fit), checkpointed with the XP."""

    centroids: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, num_clusters: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))


class SemanticKMeansSolver(StandardSolver):
    """Fits a :class:`~audiogen_lab.models.semantic_tokenizer.SemanticTokenizer` (see the module docstring)."""

    best_metric_name = None  # one fit: the best state is the fit

    # ------------------------------------------------------------------ building
    def build_dataloaders(self) -> None:
        cfg = self.cfg
        if int(cfg.optim.epochs) != 1:
            raise ValueError(f"optim.epochs={cfg.optim.epochs}: semantic k-means fits once, in one epoch; set "
                             "optim.epochs=1 (kmeans.num_batches and kmeans.max_frames set how much audio is read).")
        if flashy.distrib.world_size() > 1:
            raise RuntimeError("semantic k-means runs in a single process: launch it without --ddp (slurm.gpus=1).")
        if cfg.dataset.kind != "audio":
            raise ValueError(f"semantic k-means reads audio: dataset.kind must be audio, not {cfg.dataset.kind!r}.")
        for split in ("train", "valid"):
            if not cfg.datasource.get(split):
                raise ValueError(f"datasource.{split} is not set: point it at the audio manifest (folder or "
                                 "data.jsonl) of that split.")
        self.dataloaders = builders.get_audio_datasets(cfg, updates_per_epoch=int(cfg.kmeans.num_batches))

    def build_model(self) -> None:
        extractor, self._save_kwargs = get_semantic_extractor(self.cfg)
        self.register_model("extractor", extractor.to(self.device), role=roles.FROZEN)
        kind = self.cfg.semantic.features
        if kind in UPSTREAM_KEYS:
            self.upstream[UPSTREAM_KEYS[kind]] = str(self.cfg.get(UPSTREAM_KEYS[kind]))
        elif kind == "hubert":
            self.upstream["semantic.hubert_checkpoint"] = self._save_kwargs["source"]
        num_clusters = int(self.cfg.semantic.num_clusters)
        if num_clusters < 1:
            raise ValueError(f"semantic.num_clusters={num_clusters} must be a positive integer.")
        self.register_model("kmeans", Centroids(num_clusters, extractor.dim), ema=False, best_state=False,
                            export=False)
        self.logger.info("Semantic features %s: dim %d at %g Hz (%d Hz audio); K=%d", kind, extractor.dim,
                         extractor.frame_rate, extractor.sample_rate, num_clusters)

    @classmethod
    def build_model_from_config(cls, cfg: tp.Any, name: str) -> nn.Module:
        raise ValueError("A semantic k-means XP holds a tokenizer file, not a model to rebuild: load it with "
                         "load_semantic_tokenizer('//sig/SIG') or pass //sig/SIG as semantic_tokenizer_checkpoint.")

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        raise NotImplementedError("semantic k-means has no steps: its train and valid stages read whole splits.")

    # ------------------------------------------------------------------ the tokenizer
    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer file of this XP (what ``//sig/SIG`` names)."""
        return self.folder / TOKENIZER_FILE

    def tokenizer(self) -> SemanticTokenizer:
        """The fitted tokenizer, on :attr:`device`."""
        kmeans: Centroids = self.kmeans  # type: ignore[attr-defined]
        if not bool(kmeans.fitted):
            raise RuntimeError(f"XP {self.xp.sig} has no fitted centroids yet: run it (train stage) first.")
        return SemanticTokenizer(self.extractor, kmeans.centroids.to(self.device),  # type: ignore[attr-defined]
                                 dedup=bool(self.cfg.semantic.dedup))

    def _write_tokenizer(self) -> str:
        identity = save_semantic_tokenizer(self.tokenizer(), self.tokenizer_path, **self._save_kwargs)
        self.logger.info("Semantic tokenizer %s written to %s: pass //sig/%s as semantic_tokenizer_checkpoint or "
                         "to scripts/tokenize_dataset.py --semantic-tokenizer.", identity, self.tokenizer_path,
                         self.xp.sig)
        return identity

    def restore(self, *args: tp.Any, **kwargs: tp.Any) -> bool:
        """Resume as the base does; a fitted XP whose tokenizer file went missing writes it again."""
        restored = super().restore(*args, **kwargs)
        if bool(self.kmeans.fitted) and not self.tokenizer_path.exists():  # type: ignore[attr-defined]
            self.logger.warning("%s is missing: writing it again from the checkpoint's centroids.", self.tokenizer_path)
            self._write_tokenizer()
        return restored

    # ------------------------------------------------------------------ audio
    def _clips(self, stage: str) -> tp.Iterator[torch.Tensor]:
        """Mono waveforms ``[B, T]`` (at ``sample_rate``) of the batches of `stage`, never padded: a batch holding
        a padded item is split into its items, each cut to its real length."""
        loader = self.dataloaders[stage]
        self._set_epoch(stage)
        for batch in self.log_progress(stage, loader, total=len(loader), updates=self.cfg.logging.log_updates):
            wav = batch["audio"].mean(dim=1)  # [B, T]
            lengths = batch["mask"].sum(dim=-1)
            if bool((lengths == wav.shape[-1]).all()):
                yield wav
                continue
            for row, length in zip(wav, lengths.tolist()):
                if length > 0:
                    yield row[None, :length]

    def _train_clips(self, seen: tp.Dict[str, float]) -> tp.Iterator[torch.Tensor]:
        """:meth:`_clips` of the train split until about ``kmeans.max_frames`` frames; counts the seconds in `seen`."""
        max_frames = self.cfg.kmeans.get("max_frames")
        rate = float(self.extractor.frame_rate)  # type: ignore[attr-defined]
        for wav in self._clips("train"):
            yield wav
            seen["seconds"] += wav.numel() / self.cfg.sample_rate
            if max_frames and seen["seconds"] * rate >= max_frames:
                self.logger.info("Read %.1f s of audio: about kmeans.max_frames=%d frames.", seen["seconds"],
                                 max_frames)
                return

    # ------------------------------------------------------------------ stages
    def train(self) -> dict:
        """Fit the centroids, write the tokenizer file; metrics of the fit frames."""
        kmeans: Centroids = self.kmeans  # type: ignore[attr-defined]
        options = self.cfg.kmeans
        num_clusters = int(self.cfg.semantic.num_clusters)
        begin, seen = time.time(), {"seconds": 0.0}
        try:
            tokenizer, stats = fit_semantic_tokenizer(
                self.extractor, self._train_clips(seen), num_clusters,  # type: ignore[attr-defined]
                sample_rate=int(self.cfg.sample_rate), dedup=bool(self.cfg.semantic.dedup),
                batch_size=int(options.batch_size), iters=int(options.iters), restarts=int(options.restarts),
                seed=int(options.seed), device=self.device)
        except ValueError as err:
            if "num_clusters" not in str(err):
                raise
            raise ValueError(f"semantic.num_clusters={num_clusters} needs at least that many feature frames: {err} "
                             "Read more audio (kmeans.num_batches, dataset.batch_size, dataset.segment_duration) or "
                             "lower semantic.num_clusters.") from err
        kmeans.centroids.copy_(tokenizer.centroids)
        kmeans.fitted.fill_(True)
        self._write_tokenizer()
        stats.update({"audio_seconds": seen["seconds"], "fit_seconds": time.time() - begin})
        return stats

    @torch.no_grad()
    def valid(self) -> dict:
        """Distances and cluster usage of the ids of every frame of the valid split."""
        extractor = self.extractor  # type: ignore[attr-defined]
        num_clusters = int(self.cfg.semantic.num_clusters)
        centroids = self.tokenizer().centroids
        ids, sq_distance, frames, kept = [], 0.0, 0, 0
        for wav in self._clips("valid"):
            if self.cfg.sample_rate != extractor.sample_rate:
                wav = julius.resample_frac(wav, int(self.cfg.sample_rate), int(extractor.sample_rate))
            features = extractor(wav.to(self.device))  # [B, T', D]
            if features.shape[1] == 0:
                continue
            flat = rearrange(features, "b t d -> (b t) d").float()
            clip_ids = rearrange(assign(flat, centroids), "(b t) -> b t", b=features.shape[0]).cpu()
            sq_distance += inertia(flat, centroids)
            frames += flat.shape[0]
            kept += sum(len(torch.unique_consecutive(row)) for row in clip_ids)
            ids.append(clip_ids.reshape(-1))
        if not frames:
            raise ValueError("The valid split gave no feature frame: its clips are shorter than one frame "
                             "(check datasource.valid and dataset.segment_duration).")
        usage = cluster_usage(torch.cat(ids), num_clusters)
        return {"mean_sq_distance": sq_distance / frames, **usage, "num_frames": float(frames),
                "dedup_ratio": kept / frames}
