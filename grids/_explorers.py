"""Explorers: how `dora grid` shows each family's XPs as a table."""
from __future__ import annotations

import typing as tp

import treetable as tt
from dora import Explorer

_FORMAT = ".4f"


class BaseExplorer(Explorer):
    """Epoch plus the last train/valid/evaluate metrics of each XP (latest value of every stage)."""

    train_metrics: tp.Sequence[str] = ()
    valid_metrics: tp.Sequence[str] = ()
    evaluate_metrics: tp.Sequence[str] = ()

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
