"""Training recipe for MuLaN (:class:`~audiogen_lab.models.mulan.MuLaN`): contrastive audio-text training.

Each train step embeds a batch of clips and their captions and applies the contrastive loss of
``contrastive.loss`` (softmax InfoNCE, sigmoid or decoupled), whose negatives are gathered from every rank
with gradients, so the effective batch is the global one. Training clips are randomly cropped
(``augment.crop_min_ratio``) and their spectrograms stretched in time and masked (``time_stretch``,
``spec_augment``); captions may be composed from the sidecar attributes with attribute dropout
(``dataset.caption_attribute_prob`` / ``caption_drop_prob``).

Valid and evaluate embed their whole split (gathered over ranks) and report text->audio and audio->text
Recall@1/5/10 and median rank, their mean recall (which selects the best state) and zero-shot accuracy
on the sidecar attributes of ``zero_shot.attributes``, with prompts composed from each attribute value.
"""
from __future__ import annotations

import typing as tp

import flashy
import torch
import torch.distributed as dist

from ..data.caption_augment import compose_caption
from ..data.info_dataset import read_captions
from ..metrics.retrieval import retrieval_metrics, zero_shot_accuracy
from ..models.mulan import MuLaN
from ..modules.spec_augment import random_crop
from ..modules.text_tokenizer import get_tokenizer
from . import builders
from ..utils.utils import metrics_as_floats
from .base import StandardSolver


class MuLaNSolver(StandardSolver):
    """Trains a :class:`MuLaN` on audio with caption sidecars (``dataset.kind: audio_text``).

    Train metrics: ``loss`` and the loss's own values (``temperature``, ``bias``); valid and evaluate add
    ``loss`` on their batches, the retrieval metrics (``t2a_r1`` ... ``a2t_median_rank``, ``mean_recall``)
    and ``zero_shot_<attribute>`` accuracies.
    """

    best_metric_name = "mean_recall"
    best_metric_direction = "higher"

    # ------------------------------------------------------------------ building
    def build_dataloaders(self) -> None:
        updates = self.cfg.optim.get("updates_per_epoch")
        self.dataloaders = builders.get_audio_datasets(self.cfg, updates_per_epoch=updates)
        if "train" not in self.dataloaders or "valid" not in self.dataloaders:
            raise ValueError("MuLaN training needs datasource.train and datasource.valid (audio with captions).")

    @classmethod
    def build_model_from_config(cls, cfg: tp.Any, name: str) -> MuLaN:
        if name != "model":
            raise KeyError(f"MuLaN checkpoints hold one model, 'model', not {name!r}.")
        from ..models.mulan_builder import get_mulan_model
        return get_mulan_model(cfg)

    def training_captions(self) -> tp.List[str]:
        """Every caption of the train split, and the captions composed from the attributes when they may be
        used (what a fitted tokenizer must know)."""
        dataset = self.dataloaders["train"].dataset
        dataset = getattr(dataset, "dataset", dataset)
        texts: tp.List[str] = []
        compose = (self.cfg.dataset.get("caption_attribute_prob") or 0) > 0
        for meta in getattr(dataset, "meta", []):
            if meta.info_path is None:
                continue
            captions, attributes = read_captions(meta.info_path)
            texts.extend(captions)
            if compose or not captions:
                texts.append(compose_caption(attributes))
        return texts

    def build_model(self) -> None:
        from ..models.mulan_builder import get_mulan_model
        options = self.cfg.mulan
        if options.tokenizer == "words":
            tokenizer = get_tokenizer("words", self.training_captions(), max_size=int(options.text_vocab_size))
        elif options.tokenizer == "pretrained":
            tokenizer = get_tokenizer("pretrained", path=str(self.cfg.text_pretrained.path))
        else:
            tokenizer = get_tokenizer(options.tokenizer)
        model = get_mulan_model(self.cfg, tokenizer=tokenizer).to(self.device)
        self.register_model("model", model)
        optimizer = builders.get_optimizer(model, self.cfg.optim)
        scheduler = builders.get_lr_scheduler_from_config(optimizer, self.cfg.schedule, self.total_updates)
        self.register_optimizer_group("model", ["model"], optimizer, scheduler, max_norm=self.cfg.optim.max_norm)
        self.logger.info("Tokenizer %s with %d ids", options.tokenizer, tokenizer.vocab_size)

    # ------------------------------------------------------------------ steps
    def _audio(self, batch: tp.Dict[str, tp.Any]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        wav = batch["audio"].to(self.device)
        lengths = batch["mask"].sum(dim=-1).to(self.device)
        ratio = float((self.cfg.get("augment") or {}).get("crop_min_ratio") or 1.0)
        if self.is_training and ratio < 1.0:
            wav, lengths = random_crop(wav, lengths, ratio)
        return wav, lengths

    def run_step(self, idx: int, batch: tp.Any, metrics: dict) -> dict:
        model: MuLaN = self.model  # type: ignore[attr-defined]
        wav, lengths = self._audio(batch)
        with torch.set_grad_enabled(self.is_training):
            with self.autocast:
                audio, text = model(wav, batch["text"], lengths)
            loss, info = model.loss(audio.float(), text.float())
        metrics.update({"loss": loss, **info})
        if not self.is_training:
            self._collect(audio, text, batch)
            return metrics_as_floats(metrics)
        if not self.check_finite({"loss": loss}, batch):
            return metrics_as_floats(metrics)
        group = self.optim_groups["model"]
        group.backward(loss)
        metrics.update(group.step() or {})
        self.end_update()
        return metrics_as_floats(metrics)

    # ------------------------------------------------------------------ retrieval over a split
    def _collect(self, audio: torch.Tensor, text: torch.Tensor, batch: tp.Dict[str, tp.Any]) -> None:
        store = self._store
        store["audio"].append(audio.detach().float().cpu())
        store["text"].append(text.detach().float().cpu())
        store["captions"].extend(batch["text"])
        store["attributes"].extend(dict(info.attributes) for info in batch.get("info") or [{}] * len(batch["text"]))

    def _gathered(self) -> tp.Dict[str, tp.Any]:
        store = self._store
        local = {"audio": torch.cat(store["audio"]) if store["audio"] else torch.zeros(0, 0),
                 "text": torch.cat(store["text"]) if store["text"] else torch.zeros(0, 0),
                 "captions": store["captions"], "attributes": store["attributes"]}
        if not flashy.distrib.is_distributed():
            return local
        parts: tp.List[tp.Any] = [None] * flashy.distrib.world_size()
        dist.all_gather_object(parts, local)
        parts = [part for part in parts if part["audio"].numel()]
        return {"audio": torch.cat([p["audio"] for p in parts]), "text": torch.cat([p["text"] for p in parts]),
                "captions": [c for p in parts for c in p["captions"]],
                "attributes": [a for p in parts for a in p["attributes"]]}

    def _split_metrics(self) -> tp.Dict[str, float]:
        """Retrieval and zero-shot metrics of the embeddings collected over the stage."""
        data = self._gathered()
        if not data["audio"].numel():
            return {}
        out = retrieval_metrics(data["audio"], data["text"], groups=data["captions"])
        recalls = [value for key, value in out.items() if "_r" in key and "median" not in key]
        out["mean_recall"] = sum(recalls) / len(recalls)
        out["retrieval_items"] = float(data["audio"].shape[0])  # over every rank
        model: MuLaN = self.model  # type: ignore[attr-defined]
        for attribute in (self.cfg.get("zero_shot") or {}).get("attributes") or []:
            values = [attrs.get(attribute) for attrs in data["attributes"]]
            classes = sorted({str(v) for v in values if v is not None})
            if len(classes) < 2:
                continue
            known = [i for i, v in enumerate(values) if v is not None]
            prompts = model.get_text_embeddings([compose_caption({attribute: value}) for value in classes]).cpu()
            labels = torch.tensor([classes.index(str(values[i])) for i in known])
            out[f"zero_shot_{attribute}"] = zero_shot_accuracy(data["audio"][known], prompts, labels)
            out[f"zero_shot_{attribute}_chance"] = float(torch.bincount(labels).max()) / len(known)
        return out

    def _reset_store(self) -> None:
        self._store: tp.Dict[str, tp.List[tp.Any]] = {"audio": [], "text": [], "captions": [], "attributes": []}

    def valid(self) -> dict:
        self._reset_store()
        metrics = super().valid()
        metrics.update(self._split_metrics())
        self._reset_store()
        return metrics

    def evaluate(self) -> dict:
        """Loss, retrieval and zero-shot metrics on the evaluate split (under the best weights)."""
        self.set_train_mode(False)
        self._reset_store()
        loader = self.dataloaders["evaluate"]
        average = flashy.averager()
        metrics: dict = {}
        count = 0
        for idx, batch in enumerate(self.log_progress("evaluate", loader, total=len(loader),
                                                      updates=self.cfg.logging.log_updates)):
            metrics = average(self.run_step(idx, batch, {}))
            count += 1
        metrics = self._average(metrics, count)
        metrics.update(self._split_metrics())
        self._reset_store()
        return metrics

