"""Writes generated or reconstructed audio, with spectrogram images, under an XP's samples folder."""
from __future__ import annotations

import typing as tp
from pathlib import Path

import torch

from ..data.audio import audio_write


def save_spectrogram_image(wavs: tp.Sequence[torch.Tensor], titles: tp.Sequence[str], sample_rate: int,
                           path: tp.Union[str, Path], n_fft: int = 1024) -> Path:
    """Save log-magnitude spectrograms of `wavs` (each [C, T], first channel shown) stacked vertically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(wavs), 1, figsize=(8, 2.5 * len(wavs)), squeeze=False)
    window = torch.hann_window(n_fft)
    for ax, wav, title in zip(axes[:, 0], wavs, titles):
        spec = torch.stft(wav[0].float().cpu(), n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
        db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
        duration = wav.shape[-1] / sample_rate
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=float(db.max()) - 80,
                  extent=(0, duration, 0, sample_rate / 2000))
        ax.set_title(title)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class SampleWriter:
    """Writes ``<folder>/epoch_<N>/<name>_{reference,<kind>}.wav`` plus ``<name>.png`` spectrograms."""

    def __init__(self, folder: tp.Union[str, Path], sample_rate: int, format: str = "wav") -> None:
        self.folder = Path(folder)
        self.sample_rate = sample_rate
        self.format = format

    def add(self, epoch: int, name: str, wavs: tp.Dict[str, torch.Tensor]) -> tp.List[Path]:
        """Write each named waveform [C, T] of one sample and one image comparing them all."""
        out = self.folder / f"epoch_{epoch}"
        written = [audio_write(out / f"{name}_{kind}.{self.format}", wav.detach().cpu(), self.sample_rate)
                   for kind, wav in wavs.items()]
        written.append(save_spectrogram_image(list(wavs.values()), list(wavs), self.sample_rate,
                                              out / f"{name}.png"))
        return written
