"""Training recipe for AudioLM's token language models, from token shards on disk (``dataset.kind: tokens``).

The semantic stage (``audiolm.stage: semantic``) models sequences of semantic ids: ``[BOS] ids`` predicts
``ids [EOS]`` with a decoder-only :class:`~audiogen_lab.modules.lm_transformer.LMTransformer` whose
vocabulary is the tokenizer's clusters plus EOS, PAD and BOS (:class:`~audiogen_lab.models.token_layout.
SemanticLayout`); EOS is the target after the last frame of an item that ends within its crop (a crop padded
past the item's end, or whole items), never after a crop cut inside an item. The shards must come from the
tokenizer named by ``semantic_tokenizer_checkpoint`` (when set): a folder made by another producer is refused
before training. The coarse and fine stages, on paired semantic and acoustic shards, come next.

Metrics: ``ce`` (nats per token, which selects the best state), ``accuracy`` (top-1), ``entropy`` of the
predicted distributions, and on valid ``unigram_ce``: the cross-entropy of the train split's unigram
distribution on the same tokens, the baseline the model must beat.
"""
from __future__ import annotations

import typing as tp

import torch
import torch.nn.functional as F

from ..data.token_dataset import TokenShardDataset
from ..models.token_layout import SemanticLayout
from ..modules.lm_transformer import LMTransformer
from ..utils.utils import dict_from_config, metrics_as_floats
from . import builders
from .base import StandardSolver

STAGES = ("semantic",)
IGNORE = -100


class AudioLMSolver(StandardSolver):
    """Trains one stage of AudioLM on token shards (see the module docstring)."""

    best_metric_name = "ce"
    best_metric_direction = "lower"

    def build_dataloaders(self) -> None:
        stage = self.cfg.audiolm.stage
        if stage not in STAGES:
            raise ValueError(f"audiolm.stage={stage!r} is not available; choose one of {list(STAGES)}.")
        if self.cfg.dataset.kind != "tokens":
            raise ValueError(f"The AudioLM {stage} stage trains from token shards: set dataset.kind=tokens "
                             "(make them with scripts/tokenize_dataset.py).")
        for split in ("train", "valid"):
            if not self.cfg.datasource.get(split):
                raise ValueError(f"datasource.{split} is not set: point it at the {stage} token folder of that split "
                                 "(made by scripts/tokenize_dataset.py).")
        updates = self.cfg.optim.get("updates_per_epoch")
        self.dataloaders = builders.get_audio_datasets(self.cfg, updates_per_epoch=updates)
        expected = self.cfg.get("semantic_tokenizer_checkpoint")
        if expected:
            from ..data.tokenize import check_token_producer
            for loader in self.dataloaders.values():
                check_token_producer(_token_dataset(loader).folder, str(expected), "semantic")

    @classmethod
    def build_model_from_config(cls, cfg: tp.Any, name: str) -> LMTransformer:
        if name != "model":
            raise KeyError(f"AudioLM checkpoints hold one model, 'model', not {name!r}.")
        return LMTransformer(vocab_size=SemanticLayout(int(cfg.audiolm.cardinality)).vocab_size,
                             **dict_from_config(cfg.lm))

    def build_model(self) -> None:
        meta = _token_dataset(self.dataloaders["train"]).meta
        if meta.num_codebooks != 1:
            raise ValueError(f"Semantic tokens have one stream; the train shards hold {meta.num_codebooks}.")
        cardinality = self.cfg.audiolm.get("cardinality")
        if cardinality is not None and int(cardinality) != meta.cardinality:
            raise ValueError(f"audiolm.cardinality={cardinality} but the train shards hold {meta.cardinality} ids: "
                             "leave it null to take the shards' value.")
        self.cfg.audiolm.cardinality = meta.cardinality  # stored in the checkpoint: loading needs it
        self.layout = SemanticLayout(meta.cardinality)
        model = LMTransformer(vocab_size=self.layout.vocab_size, **dict_from_config(self.cfg.lm)).to(self.device)
        self.register_model("model", model)
        optimizer = builders.get_optimizer(model, self.cfg.optim)
        scheduler = builders.get_lr_scheduler_from_config(optimizer, self.cfg.schedule, self.total_updates)
        self.register_optimizer_group("model", ["model"], optimizer, scheduler, max_norm=self.cfg.optim.max_norm)
        self.unigram = self._train_unigram(meta.cardinality)

    def _train_unigram(self, cardinality: int) -> torch.Tensor:
        """Log-probabilities ``[V]`` of the ids (and EOS, once per item) over the whole train split, add-one
        smoothed: the baseline of ``unigram_ce``."""
        dataset = _token_dataset(self.dataloaders["train"])
        counts = torch.ones(self.layout.vocab_size, dtype=torch.float64)
        for index in range(len(dataset.entries)):
            shard, start, length = dataset.entries[index]
            ids = torch.from_numpy(dataset._array(shard)[0, start:start + length].astype("int64"))
            counts[:cardinality] += torch.bincount(ids, minlength=cardinality)[:cardinality].double()
            counts[self.layout.eos_id] += 1
        counts[self.layout.pad_id] = counts[self.layout.bos_id] = 0
        return (counts / counts.sum()).log().float().to(self.device)

    def sequences_for(self, stage: str, batch: tp.Dict[str, tp.Any]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``[B, T + 1]`` (BOS then the ids) and targets ``[B, T + 1]`` (the ids, then EOS where an
        item ends; IGNORE on padding and after a crop that ends inside its item) of a batch of `stage`."""
        ids = batch["tokens"][:, 0].to(self.device)
        lengths = batch["mask"].sum(dim=-1).to(self.device)
        batch_size, frames = ids.shape
        bos = torch.full((batch_size, 1), self.layout.bos_id, dtype=torch.long, device=self.device)
        inputs = torch.cat([bos, ids.masked_fill(~batch["mask"].to(self.device), self.layout.pad_id)], dim=1)
        targets = F.pad(ids, (0, 1), value=IGNORE)
        positions = torch.arange(frames + 1, device=self.device)[None]
        targets = targets.masked_fill(positions >= lengths[:, None], IGNORE)
        dataset = _token_dataset(self.dataloaders[stage])
        ended = torch.ones_like(lengths, dtype=torch.bool) if dataset.segment_frames is None else lengths < frames
        rows = torch.nonzero(ended, as_tuple=True)[0]
        targets[rows, lengths[rows]] = self.layout.eos_id
        return inputs, targets

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        inputs, targets = self.sequences_for(self.current_stage, batch)
        model: LMTransformer = self.model  # type: ignore[attr-defined]
        with torch.set_grad_enabled(self.is_training):
            with self.autocast:
                logits = model(inputs)
            logits = logits.float()
            valid = targets != IGNORE
            ce = F.cross_entropy(logits[valid], targets[valid])
        with torch.no_grad():
            probs = logits[valid].softmax(dim=-1)
            metrics.update({"ce": ce, "accuracy": (logits[valid].argmax(-1) == targets[valid]).float().mean(),
                            "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()})
            if not self.is_training:
                metrics["unigram_ce"] = -self.unigram[targets[valid]].mean()
        if not self.is_training:
            return metrics_as_floats(metrics)
        if not self.check_finite({"ce": ce}, batch):
            return metrics_as_floats(metrics)
        group = self.optim_groups["model"]
        group.backward(ce)
        metrics.update(group.step() or {})
        self.end_update()
        return metrics_as_floats(metrics)


def _token_dataset(loader: tp.Any) -> TokenShardDataset:
    dataset = getattr(loader, "dataset", loader)
    if not isinstance(dataset, TokenShardDataset):
        raise TypeError(f"Expected a token shard dataset, got {type(dataset).__name__}.")
    return dataset
