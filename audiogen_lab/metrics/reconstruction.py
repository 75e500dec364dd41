"""Score compression models on the files of a manifest: SI-SNR and mel distance of each model's
reconstruction of each whole file, grouped by a property of the file (e.g. music vs speech)."""
from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import torch
from torch import nn

from ..data.audio import audio_read
from ..data.audio_utils import convert_audio
from ..data.manifest import load_audio_meta, resolve_manifest
from .audio import MelDistance, si_snr

Scores = tp.Dict[str, tp.Dict[str, tp.List[float]]]


def caption_kind(info_path: tp.Optional[str]) -> str:
    """``'speech'`` when the caption sidecar's genre is speech, else ``'music'`` (the example data's kinds)."""
    if info_path and Path(info_path).is_file():
        info = json.loads(Path(info_path).read_text(encoding="utf-8"))
        return "speech" if info.get("genre") == "speech" else "music"
    return "music"


@torch.no_grad()
def score_reconstructions(models: tp.Dict[str, nn.Module], manifest: tp.Union[str, Path],
                          mel_kwargs: tp.Optional[dict] = None,
                          group: tp.Callable[[tp.Optional[str]], str] = caption_kind) -> Scores:
    """``{group: {f"{model}_si_snr" | f"{model}_mel": [score per file]}}`` for every file of `manifest`.

    Each file is read whole, converted to the first model's sample rate and channels, encoded and decoded
    by every model in `models` (compression models in eval mode), and scored against the input:
    SI-SNR in dB and :class:`MelDistance` (options `mel_kwargs`). `group` maps a file's caption sidecar
    path to its group name.
    """
    first = next(iter(models.values()))
    mel_distance = MelDistance(**{"sample_rate": first.sample_rate, **(mel_kwargs or {})})
    scores: Scores = {}
    for meta in load_audio_meta(resolve_manifest(manifest)):
        wav, sr = audio_read(meta.path)
        wav = convert_audio(wav, sr, first.sample_rate, first.channels)[None]
        table = scores.setdefault(group(meta.info_path), {})
        for name, model in models.items():
            recon = model.decode(*model.encode(wav))[..., :wav.shape[-1]]
            table.setdefault(f"{name}_si_snr", []).append(float(si_snr(recon, wav)[0]))
            table.setdefault(f"{name}_mel", []).append(float(mel_distance(recon, wav)[0]))
    return scores
