"""Explorers: how `dora grid` shows each family's XPs as a table.

Every grid also takes overrides for all of its XPs from ``$AUDIOGEN_LAB_GRID_OVERRIDES`` (shell words,
e.g. ``"optim.epochs=2 optim.updates_per_epoch=5"`` to smoke-test a grid on a new cluster, or ``dset=audio/mine``
to point it at another dataset). They enter each XP's arguments, so its signature, ahead of the grid's
own: a key the grid sets for an XP keeps the grid's value there.
"""
from __future__ import annotations

import os
import shlex
import typing as tp

import treetable as tt
from dora import Explorer
from dora.explore import Launcher

_FORMAT = ".4f"
GRID_OVERRIDES_ENV = "AUDIOGEN_LAB_GRID_OVERRIDES"


def grid_overrides() -> tp.List[str]:
    """The overrides ``$AUDIOGEN_LAB_GRID_OVERRIDES`` adds to every XP of a grid (split like a shell)."""
    try:
        return shlex.split(os.environ.get(GRID_OVERRIDES_ENV, ""))
    except ValueError as error:
        raise ValueError(f"${GRID_OVERRIDES_ENV} is not valid shell words ({error}): "
                         f"{os.environ[GRID_OVERRIDES_ENV]!r}") from None


class BaseExplorer(Explorer):
    """Epoch plus the last train/valid/evaluate metrics of each XP (latest value of every stage)."""

    train_metrics: tp.Sequence[str] = ()
    valid_metrics: tp.Sequence[str] = ()
    evaluate_metrics: tp.Sequence[str] = ()

    def __call__(self, launcher: Launcher) -> None:
        extra = grid_overrides()
        self.explore(launcher.bind(extra) if extra else launcher)

    def get_grid_meta(self) -> tp.List[tt.Node]:
        return super().get_grid_meta() + [tt.leaf("label")]

    def get_grid_metrics(self) -> tp.List[tt.Node]:
        groups = [tt.group("train", [tt.leaf("epoch")] + [tt.leaf(m, _FORMAT) for m in self.train_metrics], align=">")]
        for name, metrics in (("valid", self.valid_metrics), ("evaluate", self.evaluate_metrics)):
            if metrics:
                groups.append(tt.group(name, [tt.leaf(m, _FORMAT) for m in metrics], align=">"))
        return groups

    def process_sheep(self, sheep: tp.Any, history: tp.List[dict]) -> dict:
        out: tp.Dict[str, dict] = {"train": {"epoch": len(history)}, "valid": {}, "evaluate": {}}
        for epoch in history:
            for stage in out:
                out[stage].update(epoch.get(stage, {}))
        out["train"]["epoch"] = len(history)
        out["label"] = sheep.xp.cfg.get("label")  # type: ignore[assignment]
        return out


class CompressionExplorer(BaseExplorer):
    """Codec XPs: reconstruction quality, bitrate and the dependence between codebooks."""

    train_metrics = ("msspec", "sisnr", "mmd", "g_loss")
    valid_metrics = ("si_snr", "mel_dist", "bandwidth", "nmi", "nmi_corrected", "mmd")
    evaluate_metrics = ("si_snr", "mel_dist", "bandwidth", "nmi_corrected")


class ConsistencyAEExplorer(BaseExplorer):
    """Consistency autoencoder XPs: the consistency loss and one-step reconstruction quality."""

    train_metrics = ("loss", "distance", "delta")
    valid_metrics = ("loss", "si_snr", "mel_dist")
    evaluate_metrics = ("si_snr", "mel_dist", "fad")


class MuLaNExplorer(BaseExplorer):
    """MuLaN XPs: the contrastive loss and its temperature, retrieval and zero-shot accuracy."""

    train_metrics = ("loss", "temperature")
    valid_metrics = ("loss", "t2a_r1", "t2a_r10", "a2t_r1", "a2t_r10", "t2a_median_rank", "mean_recall")
    evaluate_metrics = ("t2a_r1", "t2a_r10", "a2t_r10", "zero_shot_genre", "zero_shot_instrument")


class AudioLMExplorer(BaseExplorer):
    """Token LM XPs: cross-entropy against the unigram baseline, accuracy and entropy of the predictions."""

    train_metrics = ("ce", "accuracy")
    valid_metrics = ("ce", "target_ce", "unigram_ce", "accuracy", "entropy", "ce_level_0", "accuracy_level_0")


class SemanticKMeansExplorer(BaseExplorer):
    """Semantic tokenizer XPs: distance to the nearest centroid and how evenly the clusters are used, on the fit
    frames and on the valid split."""

    train_metrics = ("num_frames", "mean_sq_distance", "perplexity", "used_fraction")
    valid_metrics = ("mean_sq_distance", "perplexity", "used_fraction", "dedup_ratio")


class LatentGANExplorer(BaseExplorer):
    """Latent GAN XPs: the critic's and generator's hinge losses and the R1 weight, then the latent Fréchet
    distance, moment errors, seam ratio and worst jump position of the EMA generator."""

    train_metrics = ("d_loss", "g_loss", "r1_gamma", "certainty")
    valid_metrics = ("fd", "mean_error", "std_error", "seam", "seam_worst")
