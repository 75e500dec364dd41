"""Training recipe for AudioLM's token language models, from token shards on disk (never re-tokenizing audio).

One solver, three stages (``audiolm.stage``), each a decoder-only
:class:`~audiogen_lab.modules.lm_transformer.LMTransformer` over rows ``[BOS] prefix target`` packed by
:func:`~audiogen_lab.models.token_sequences.pack_sequences` in one joint vocabulary:

- ``semantic`` (``dataset.kind: tokens``, semantic shards): no prefix; target = semantic ids.
- ``coarse`` (``dataset.kind: paired_tokens``, streams ``[semantic, acoustic]`` cropped over the same
  seconds): prefix = semantic ids; target = the first ``audiolm.num_coarse`` RVQ levels, time-major.
- ``fine`` (``dataset.kind: tokens``, acoustic shards, short crops): prefix = the coarse levels of the crop;
  target = the remaining levels.

EOS (its own id, never a code) is the target after the last frame of an item that ends within its crop.
Predictions of prefix tokens are weighted by ``audiolm.prefix_loss_weight`` (AudioLM's auxiliary loss).
Shards are checked against their producers before training: semantic ones against
``semantic_tokenizer_checkpoint``, acoustic ones against ``compression_model_checkpoint`` (when set).

MuLaN conditioning (MusicLM, ``audiolm.conditioning: mulan``): every stage reads ``dataset.kind:
paired_tokens`` with a ``mulan`` stream (``scripts/tokenize_dataset.py --mulan``; checked against
``mulan_checkpoint``) and its model is a :class:`~audiogen_lab.models.conditioned_lm.ConditionedLM` owning
the embedding table of the MuLaN tokens under the stage's namespace; the tokens of the window holding a
crop's middle prefix its row, replaced by the learned null prefix with probability
``audiolm.cond_drop_prob`` (classifier-free guidance at sampling time).

Metrics: ``ce`` (the weighted loss, which selects the best state), ``accuracy`` and ``entropy`` on the
target tokens, ``ce_level_k`` / ``accuracy_level_k`` per RVQ level of acoustic targets, and on valid
``unigram_ce``: the target tokens' cross-entropy under the train split's unigram distribution, the
baseline to beat. On valid, the coarse and fine stages with ``compression_model_checkpoint`` (and
``audiolm.reconstruction_metrics``) also score teacher-forced reconstructions
(:mod:`~audiogen_lab.models.token_reconstruction`) of the first ``audiolm.reconstruction_items`` items of each
batch: the true codes with the stage's levels replaced by its argmax predictions are decoded and compared
with the decoded true codes (the codec's own ceiling) over the real frames, ``recon_si_snr`` (dB, higher is
better; identical audio scores very high) and ``recon_mel`` (log-mel L1, 0 at the ceiling); and as chance
references ``recon_si_snr_shuffled`` / ``recon_mel_shuffled``, the same with the stage's levels taken from
randomly permuted frames of the same item (right codes, wrong order). A stage near its chance reference
fails; one near the ceiling works, whatever the codec's own quality.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.token_dataset import TokenShardDataset
from ..models.conditioned_lm import ConditionedLM
from ..models.token_layout import AcousticLayout, ConcatVocab, SemanticLayout
from ..models.token_sequences import IGNORE, Sequences, pack_sequences, per_level_metrics, weighted_ce
from ..modules.lm_transformer import LMTransformer
from ..utils.utils import dict_from_config, metrics_as_floats
from . import builders
from .base import StandardSolver

STAGES = ("semantic", "coarse", "fine")
STAGE_KINDS = {"semantic": "tokens", "coarse": "paired_tokens", "fine": "tokens"}
#: the token stream each stage predicts
TARGET_STREAM = {"semantic": "semantic", "coarse": "acoustic", "fine": "acoustic"}
CONDITIONING = ("mulan",)

Layout = tp.Union[SemanticLayout, AcousticLayout]


@dataclass
class StagePlan:
    """The layouts of a stage's prefix (None for the semantic stage) and target, in one joint vocabulary."""

    prefix: tp.Optional[Layout]
    target: Layout

    @property
    def vocab(self) -> ConcatVocab:
        return ConcatVocab([self.target.vocab_size] if self.prefix is None
                           else [self.prefix.vocab_size, self.target.vocab_size])

    @property
    def target_part(self) -> int:
        return 0 if self.prefix is None else 1

    @property
    def bos_id(self) -> int:
        return (self.target if self.prefix is None else self.prefix).bos_id

    @property
    def eos_id(self) -> int:
        return self.vocab.offset(self.target_part) + self.target.eos_id

    @property
    def pad_id(self) -> int:
        return self.vocab.offset(self.target_part) + self.target.pad_id

    @property
    def target_levels(self) -> int:
        return getattr(self.target, "num_levels", 1)


def stage_plan(audiolm_cfg: tp.Any) -> StagePlan:
    """The :class:`StagePlan` of ``audiolm.stage`` from the cardinalities and level counts in `audiolm_cfg`."""
    stage = audiolm_cfg.stage
    if stage == "semantic":
        return StagePlan(None, SemanticLayout(int(audiolm_cfg.cardinality)))
    num_coarse, card = int(audiolm_cfg.num_coarse), int(audiolm_cfg.acoustic_cardinality)
    if stage == "coarse":
        return StagePlan(SemanticLayout(int(audiolm_cfg.cardinality)), AcousticLayout(num_coarse, card))
    if stage == "fine":
        fine = int(audiolm_cfg.num_acoustic_levels) - num_coarse
        if fine < 1:
            raise ValueError(f"audiolm.num_coarse={num_coarse} leaves no fine level of the "
                             f"{audiolm_cfg.num_acoustic_levels} acoustic levels.")
        return StagePlan(AcousticLayout(num_coarse, card), AcousticLayout(fine, card, first_level=num_coarse))
    raise ValueError(f"audiolm.stage={stage!r} is unknown; choose one of {list(STAGES)}.")


class AudioLMSolver(StandardSolver):
    """Trains one stage of AudioLM on token shards (see the module docstring)."""

    best_metric_name = "ce"
    best_metric_direction = "lower"

    # ------------------------------------------------------------------ building
    def build_dataloaders(self) -> None:
        stage = self.cfg.audiolm.stage
        if stage not in STAGES:
            raise ValueError(f"audiolm.stage={stage!r} is unknown; choose one of {list(STAGES)}.")
        conditioning = _conditioning(self.cfg.audiolm)
        if conditioning:
            streams = list(self.cfg.dataset.get("streams") or [])
            if self.cfg.dataset.kind != "paired_tokens" or conditioning not in streams:
                raise ValueError(f"audiolm.conditioning={conditioning} reads the {conditioning} tokens with the "
                                 f"{stage} stage's: set dataset.kind=paired_tokens and dataset.streams to include "
                                 f"{conditioning!r} (e.g. {_conditioned_streams(stage)}).")
        elif self.cfg.dataset.kind != STAGE_KINDS[stage]:
            raise ValueError(f"The AudioLM {stage} stage reads dataset.kind={STAGE_KINDS[stage]} "
                             f"(token shards from scripts/tokenize_dataset.py), not {self.cfg.dataset.kind!r}.")
        for split in ("train", "valid"):
            if not self.cfg.datasource.get(split):
                raise ValueError(f"datasource.{split} is not set: point it at the token folder of that split "
                                 "(made by scripts/tokenize_dataset.py).")
        updates = self.cfg.optim.get("updates_per_epoch")
        self.dataloaders = builders.get_audio_datasets(self.cfg, updates_per_epoch=updates)
        for loader in self.dataloaders.values():
            for kind, meta_folder in _stream_folders(loader.dataset, stage).items():
                self._check_producer(kind, meta_folder)

    def _check_producer(self, kind: str, folder: tp.Any) -> None:
        from ..data.tokenize import PRODUCER_KEYS, check_token_producer
        expected = self.cfg.get(PRODUCER_KEYS[kind])
        if expected:
            check_token_producer(folder, str(expected), kind)

    @classmethod
    def build_model_from_config(cls, cfg: tp.Any, name: str) -> tp.Union[LMTransformer, ConditionedLM]:
        if name != "model":
            raise KeyError(f"AudioLM checkpoints hold one model, 'model', not {name!r}.")
        return build_stage_model(cfg)

    def _read_shapes(self) -> None:
        """Fill the cardinalities and level counts of ``audiolm`` from the train shards (stored with the
        checkpoint: loading needs them); a value set in the config must agree."""
        metas = _stream_metas(self.dataloaders["train"].dataset, self.cfg.audiolm.stage)
        found: tp.Dict[str, int] = {}
        if "semantic" in metas:
            if metas["semantic"].num_codebooks != 1:
                raise ValueError(f"Semantic tokens have one stream; the shards hold {metas['semantic'].num_codebooks}.")
            found["cardinality"] = metas["semantic"].cardinality
        if "acoustic" in metas:
            found["acoustic_cardinality"] = metas["acoustic"].cardinality
            found["num_acoustic_levels"] = metas["acoustic"].num_codebooks
        conditioning = _conditioning(self.cfg.audiolm)
        if conditioning:
            levels, shard_levels = self.cfg.audiolm.get("cond_levels"), metas[conditioning].num_codebooks
            if levels is not None and not 1 <= int(levels) <= shard_levels:
                raise ValueError(f"audiolm.cond_levels={levels} must be in [1, {shard_levels}] (the levels of the "
                                 f"{conditioning} shards).")
            self.cfg.audiolm.cond_levels = shard_levels if levels is None else int(levels)
            found["cond_cardinality"] = metas[conditioning].cardinality
        for key, value in found.items():
            set_value = self.cfg.audiolm.get(key)
            if set_value is not None and int(set_value) != value:
                raise ValueError(f"audiolm.{key}={set_value} but the train shards hold {value}: leave it null to "
                                 "take the shards' value.")
            self.cfg.audiolm[key] = value
        if "acoustic" in metas and int(self.cfg.audiolm.num_coarse) > found["num_acoustic_levels"]:
            raise ValueError(f"audiolm.num_coarse={self.cfg.audiolm.num_coarse} exceeds the "
                             f"{found['num_acoustic_levels']} levels of the acoustic shards.")

    def build_model(self) -> None:
        self._read_shapes()
        self.plan = stage_plan(self.cfg.audiolm)
        model = build_stage_model(self.cfg).to(self.device)
        self.register_model("model", model)
        optimizer = builders.get_optimizer(model, self.cfg.optim)
        scheduler = builders.get_lr_scheduler_from_config(optimizer, self.cfg.schedule, self.total_updates)
        self.register_optimizer_group("model", ["model"], optimizer, scheduler, max_norm=self.cfg.optim.max_norm)
        self.unigram = self._train_unigram()
        self._register_codec()

    def _train_unigram(self) -> torch.Tensor:
        """Log-probabilities ``[V]`` of the target tokens (and EOS, once per item) over the whole items of the
        train split, add-one smoothed over the target's codes: the baseline of ``unigram_ce``."""
        stage, plan = self.cfg.audiolm.stage, self.plan
        vocab = plan.vocab
        offset = vocab.offset(plan.target_part)
        counts = torch.zeros(vocab.vocab_size, dtype=torch.float64)
        counts[offset:offset + _num_codes(plan.target)] = 1.0
        dataset = _stream_datasets(self.dataloaders["train"].dataset, stage)[
            "semantic" if stage == "semantic" else "acoustic"]
        first = int(self.cfg.audiolm.num_coarse) if stage == "fine" else 0
        for entry in range(len(dataset.entries)):
            codes = dataset.read_item(entry)["tokens"]
            rows = codes if stage == "semantic" else codes[None, first:first + plan.target_levels]  # [1, T] / [1, L, T]
            ids = plan.target.flatten(rows)[0] + offset
            counts += torch.bincount(ids, minlength=vocab.vocab_size).double()
            counts[plan.eos_id] += 1
        return (counts / counts.sum()).clamp_min(1e-30).log().float().to(self.device)

    # ------------------------------------------------------------------ sequences
    def _target(self, batch: tp.Dict[str, tp.Any]) -> tp.Tuple[torch.Tensor, torch.Tensor, int]:
        """Target ids ``[B, N]`` in the joint vocabulary, their lengths ``[B]`` and the frames of the crop."""
        stage, plan = self.cfg.audiolm.stage, self.plan
        offset = plan.vocab.offset(plan.target_part)
        if stage == "semantic":
            ids, mask = _stream(batch, "semantic")
            ids = ids[:, 0]
            return plan.target.flatten(ids) + offset, mask.sum(-1), ids.shape[-1]
        codes, mask = _stream(batch, "acoustic")
        levels = plan.target.num_levels  # type: ignore[union-attr]
        first = 0 if stage == "coarse" else int(self.cfg.audiolm.num_coarse)
        flat = plan.target.flatten(codes[:, first:first + levels]) + offset
        return flat, mask.sum(-1) * levels, codes.shape[-1]

    def _prefix(self, batch: tp.Dict[str, tp.Any]) -> tp.Tuple[tp.Optional[torch.Tensor], tp.Optional[torch.Tensor]]:
        stage, plan = self.cfg.audiolm.stage, self.plan
        if stage == "semantic":
            return None, None
        if stage == "coarse":
            ids, mask = _stream(batch, "semantic")
            return plan.prefix.flatten(ids[:, 0]), mask.sum(-1)  # type: ignore[union-attr]
        codes, mask = _stream(batch, "acoustic")
        levels = int(self.cfg.audiolm.num_coarse)
        return plan.prefix.flatten(codes[:, :levels]), mask.sum(-1) * levels  # type: ignore[union-attr]

    def sequences_for(self, stage: str, batch: tp.Dict[str, tp.Any]) -> Sequences:
        """The packed rows of a batch of the split `stage` (see :func:`pack_sequences`)."""
        target, lengths, _ = self._target(batch)
        prefix, prefix_lengths = self._prefix(batch)
        crop = _crop_frames(self.dataloaders[stage].dataset, TARGET_STREAM[self.cfg.audiolm.stage])
        ended = (torch.ones_like(lengths, dtype=torch.bool) if crop is None
                 else lengths < crop * self.plan.target_levels)  # the item ended before the crop did
        seq = pack_sequences(target.to(self.device), lengths.to(self.device), ended.to(self.device),
                             bos_id=self.plan.bos_id, pad_id=self.plan.pad_id, eos_id=self.plan.eos_id,
                             prefix=None if prefix is None else prefix.to(self.device),
                             prefix_lengths=None if prefix_lengths is None else prefix_lengths.to(self.device),
                             prefix_weight=float(self.cfg.audiolm.get("prefix_loss_weight") or 0.0))
        return seq

    def conditioning_for(self, batch: tp.Dict[str, tp.Any]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The conditioning tokens ``[B, cond_levels]`` of a batch and the rows ``[B]`` (bool) whose conditioning
        is dropped: each with probability ``audiolm.cond_drop_prob`` in training, none otherwise."""
        tokens, _ = _stream(batch, _conditioning(self.cfg.audiolm))
        cond = tokens[:, :int(self.cfg.audiolm.cond_levels), 0].to(self.device)
        rate = float(self.cfg.audiolm.get("cond_drop_prob") or 0.0) if self.is_training else 0.0
        drop = torch.rand(cond.shape[0], device=self.device) < rate
        return cond, drop

    # ------------------------------------------------------------------ steps
    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        seq = self.sequences_for(self.current_stage, batch)
        model = self.model  # type: ignore[attr-defined]
        with torch.set_grad_enabled(self.is_training):
            with self.autocast:
                if isinstance(model, ConditionedLM):
                    cond, drop = self.conditioning_for(batch)
                    logits = model(seq.inputs, cond, drop)
                    metrics["cond_dropped"] = drop.float().mean()
                else:
                    logits = model(seq.inputs)
            logits = logits.float()
            ce = weighted_ce(logits, seq)
        with torch.no_grad():
            picked = (seq.targets != IGNORE) & (seq.weights > 0)
            chosen = logits[picked]
            probs = chosen.softmax(dim=-1)
            metrics.update({"ce": ce, "accuracy": (chosen.argmax(-1) == seq.targets[picked]).float().mean(),
                            "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()})
            if self.cfg.audiolm.stage != "semantic":
                metrics.update(per_level_metrics(logits, seq, self.plan.target_levels))
            if not self.is_training:
                in_target = (seq.target_index >= 0) | (seq.targets == self.plan.eos_id)
                metrics["unigram_ce"] = -self.unigram[seq.targets[in_target]].mean()
                metrics["target_ce"] = F.cross_entropy(logits[in_target], seq.targets[in_target])
                metrics.update(self._reconstruction_metrics(batch, seq, logits))
        if not self.is_training:
            return metrics_as_floats(metrics)
        if not self.check_finite({"ce": ce}, batch):
            return metrics_as_floats(metrics)
        group = self.optim_groups["model"]
        group.backward(ce)
        metrics.update(group.step() or {})
        self.end_update()
        return metrics_as_floats(metrics)

    # ------------------------------------------------------------------ reconstruction metrics
    def _register_codec(self) -> None:
        """Register the codec of the acoustic shards as a frozen model (never trained, checkpointed or
        exported; on the device), for the ``recon_*`` metrics of the coarse and fine stages."""
        from . import roles
        from ..models.token_reconstruction import check_codec
        audiolm = self.cfg.audiolm
        if audiolm.stage == "semantic" or not audiolm.get("reconstruction_metrics") \
                or not self.cfg.get("compression_model_checkpoint"):
            return
        items = audiolm.get("reconstruction_items")
        if items is not None and int(items) < 1:
            raise ValueError(f"audiolm.reconstruction_items={items} must be >= 1 (null: every item of a batch); "
                             "set audiolm.reconstruction_metrics=false to turn the metrics off.")
        try:
            codec = self.load_upstream("compression_model_checkpoint", family="compression")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} The recon_* metrics decode with compression_model_checkpoint; set "
                                    "audiolm.reconstruction_metrics=false to train without them.") from err
        check_codec(codec, int(audiolm.num_acoustic_levels), int(audiolm.acoustic_cardinality))
        self.register_model("codec", codec, role=roles.FROZEN)

    def _reconstruction_metrics(self, batch: tp.Dict[str, tp.Any], seq: Sequences,
                                logits: torch.Tensor) -> tp.Dict[str, torch.Tensor]:
        """The ``recon_*`` metrics of a valid batch from the logits ``[B, L, V]`` of its rows `seq` (see the
        module docstring); none without the codec."""
        from ..models.token_reconstruction import teacher_forced_reconstruction
        if "codec" not in self.models:
            return {}
        source = ((batch["streams"]["acoustic"], batch["stream_masks"]["acoustic"]) if "streams" in batch
                  else (batch["tokens"], batch["mask"]))
        codes, lengths = source[0].to(self.device), source[1].sum(-1).to(self.device)
        items = self.cfg.audiolm.get("reconstruction_items")
        return teacher_forced_reconstruction(self.codec, logits, seq, codes, lengths, self.plan.target,
                                             self.plan.vocab.offset(self.plan.target_part),
                                             max_items=None if items is None else int(items))


# ---------------------------------------------------------------------- dataset access
def build_stage_model(cfg: tp.Any) -> tp.Union[LMTransformer, ConditionedLM]:
    """The LM of ``cfg.audiolm.stage`` (a :class:`ConditionedLM` owning its table under the stage's namespace
    when ``audiolm.conditioning`` is set; the shapes must have been read from the shards)."""
    lm = LMTransformer(vocab_size=stage_plan(cfg.audiolm).vocab.vocab_size, **dict_from_config(cfg.lm))
    if not _conditioning(cfg.audiolm):
        return lm
    return ConditionedLM(lm, int(cfg.audiolm.cond_levels), int(cfg.audiolm.cond_cardinality), cfg.audiolm.stage)


def _conditioning(audiolm_cfg: tp.Any) -> tp.Optional[str]:
    name = audiolm_cfg.get("conditioning")
    if name is not None and name not in CONDITIONING:
        raise ValueError(f"audiolm.conditioning={name!r} is unknown; choose null or one of {list(CONDITIONING)}.")
    return name


def _conditioned_streams(stage: str) -> tp.List[str]:
    return {"semantic": ["semantic"], "coarse": ["semantic", "acoustic"], "fine": ["acoustic"]}[stage] + ["mulan"]


def _stream(batch: tp.Dict[str, tp.Any], name: str) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[B, K, T]`` and mask ``[B, T]`` of stream `name` of a paired batch, or of a single-stream batch."""
    if "streams" in batch:
        return batch["streams"][name], batch["stream_masks"][name]
    return batch["tokens"], batch["mask"]


def _stream_datasets(dataset: tp.Any, stage: str) -> tp.Dict[str, TokenShardDataset]:
    """The token dataset of each stream a stage reads, by kind (``semantic`` / ``acoustic`` / ``mulan``)."""
    if hasattr(dataset, "datasets"):
        return dict(dataset.datasets)
    if not isinstance(dataset, TokenShardDataset):
        raise TypeError(f"Expected a token shard dataset, got {type(dataset).__name__}.")
    return {TARGET_STREAM[stage]: dataset}


def _stream_folders(dataset: tp.Any, stage: str) -> tp.Dict[str, tp.Any]:
    return {kind: ds.folder for kind, ds in _stream_datasets(dataset, stage).items()}


def _stream_metas(dataset: tp.Any, stage: str) -> tp.Dict[str, tp.Any]:
    return {kind: ds.meta for kind, ds in _stream_datasets(dataset, stage).items()}


def _crop_frames(dataset: tp.Any, target: str) -> tp.Optional[int]:
    """Frames of the `target` stream in a crop, or None for whole items."""
    if isinstance(dataset, TokenShardDataset):
        return dataset.segment_frames
    frames = dataset.segment_frames
    return None if frames is None else frames[target]


def _num_codes(layout: Layout) -> int:
    return getattr(layout, "num_codes", None) or layout.cardinality  # type: ignore[union-attr]
