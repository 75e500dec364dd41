"""MuLaN conditioning tokens for downstream LMs: a trained MuLaN plus its fitted embedding quantizer.

The quantizer is fitted once on the audio embeddings of a dataset (:func:`fit_mulan_quantizer`, command
``python -m audiogen_lab.models.mulan_conditioner //sig/SIG``) and written next to the MuLaN checkpoint as
``mulan_quantizer.th``. A downstream solver names the MuLaN with ``mulan_checkpoint=//sig/SIG`` (or a
checkpoint / export path) and :func:`load_mulan_conditioner` returns both, frozen: tokens from audio
during training, from text at inference.
"""
from __future__ import annotations

import argparse
import logging
import sys
import typing as tp
from pathlib import Path

import torch
from torch import nn

from ..quantization.mulan_embed import MuLaNEmbedQuantizer, load_quantizer, save_quantizer
from ..utils.checkpoint import resolve_checkpoint_path
from .mulan import MuLaN

logger = logging.getLogger(__name__)

QUANTIZER_FILE = "mulan_quantizer.th"


def quantizer_path(source: tp.Union[str, Path]) -> Path:
    """Where the quantizer of the MuLaN at `source` (``//sig/SIG``, XP folder, checkpoint or export) lives:
    beside its checkpoint file."""
    return resolve_checkpoint_path(source).parent / QUANTIZER_FILE


class MuLaNConditioner(nn.Module):
    """A frozen MuLaN and its quantizer: audio or text -> conditioning tokens ``[B, num_levels]``."""

    def __init__(self, mulan: MuLaN, quantizer: MuLaNEmbedQuantizer) -> None:
        super().__init__()
        if quantizer.dim != mulan.dim:
            raise ValueError(f"The quantizer embeds {quantizer.dim}-d vectors but the MuLaN gives {mulan.dim}-d.")
        self.mulan = mulan
        self.quantizer = quantizer

    @property
    def num_levels(self) -> int:
        return self.quantizer.num_levels

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @torch.no_grad()
    def tokens_from_audio(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio ``[B, T]`` or ``[B, C, T]`` at `sample_rate` -> tokens ``[B, num_levels]`` (long)."""
        return self.quantizer(self.mulan.get_audio_embeddings(wav, sample_rate))

    @torch.no_grad()
    def tokens_from_text(self, texts: tp.Union[str, tp.Sequence[str]]) -> torch.Tensor:
        """Texts -> tokens ``[B, num_levels]`` (long)."""
        return self.quantizer(self.mulan.get_text_embeddings(texts))


def embed_dataset(mulan: MuLaN, loader: tp.Iterable[tp.Dict[str, tp.Any]], max_items: tp.Optional[int] = None
                  ) -> torch.Tensor:
    """Audio embeddings ``[N, dim]`` of the batches of `loader` (dict batches with `audio` and `mask`)."""
    device = mulan.audio_proj.weight.device
    out: tp.List[torch.Tensor] = []
    count = 0
    with torch.no_grad():
        for batch in loader:
            wav = batch["audio"].to(device)
            lengths = batch["mask"].sum(dim=-1).to(device)
            out.append(mulan._eval(lambda: mulan.embed_audio(wav, lengths)).cpu())  # noqa: B023 (used at once)
            count += wav.shape[0]
            if max_items is not None and count >= max_items:
                break
    if not out:
        raise ValueError("The dataset gave no audio to embed.")
    return torch.cat(out)[:max_items]


def fit_mulan_quantizer(source: str, split: str = "train", num_levels: int = 12, codebook_size: int = 1024,
                        iters: int = 20, seed: int = 0, max_items: tp.Optional[int] = None,
                        batch_size: int = 16, device: str = "cpu") -> Path:
    """Fit the quantizer of the MuLaN at `source` on the audio embeddings of its config's `split` and
    write it beside the checkpoint; returns the written path."""
    from ..data.builders import get_dataloaders
    from ..solvers.loading import read_package
    from ..solvers.mulan import MuLaNSolver
    package = read_package(source)
    cfg = package.cfg
    mulan = MuLaNSolver.model_from_checkpoint(source, device=device)
    cfg.dataset.batch_size = batch_size
    cfg.dataset.num_workers = 0
    if cfg.datasource.get(split) is None:
        raise ValueError(f"The config of {source} has no datasource.{split} to fit the quantizer on.")
    for other in ("train", "valid", "evaluate", "generate"):
        if other != split:
            cfg.datasource[other] = None
    cfg.dataset[split] = {**(cfg.dataset.get(split) or {}), "num_samples": max_items}
    loaders = get_dataloaders(cfg)
    embeddings = embed_dataset(mulan, loaders[split], max_items)
    quantizer = MuLaNEmbedQuantizer(mulan.dim, num_levels, codebook_size)
    errors = quantizer.fit(embeddings, iters=iters, seed=seed)
    path = save_quantizer(quantizer, quantizer_path(source), source=str(source))
    logger.info("Fitted %d x %d codes on %d embeddings of %s (relative error %s): %s", num_levels, codebook_size,
                embeddings.shape[0], split, ", ".join(f"{v:.3f}" for v in errors.values()), path)
    return path


def load_mulan_conditioner(source: str, device: tp.Union[str, torch.device] = "cpu") -> MuLaNConditioner:
    """The frozen MuLaN at `source` (``mulan_checkpoint``) with its fitted quantizer."""
    from ..solvers.mulan import MuLaNSolver
    from ..solvers.roles import freeze
    path = quantizer_path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: fit the quantizer of {source} first with "
                                f"`python -m audiogen_lab.models.mulan_conditioner {source}`.")
    mulan = MuLaNSolver.model_from_checkpoint(source, device=device)
    return freeze(MuLaNConditioner(mulan, load_quantizer(path)).to(device))


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Fit the MuLaN embedding quantizer of a trained MuLaN.")
    parser.add_argument("source", help="//sig/SIG, an XP folder or a MuLaN checkpoint")
    parser.add_argument("--split", default="train")
    parser.add_argument("--levels", type=int, default=12)
    parser.add_argument("--codes", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-items", type=int, default=None, help="embed at most this many clips")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = fit_mulan_quantizer(args.source, args.split, args.levels, args.codes, args.iters, args.seed,
                               args.max_items, args.batch_size, args.device)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
