"""Audio fixtures for the data tests: small generated sines and noise written to tmp_path."""
import math
from pathlib import Path
import typing as tp

import pytest
import torch

from audiogen_lab.data.audio import audio_write


def sine(freq: float, duration: float, sample_rate: int, channels: int = 1, amplitude: float = 0.5) -> torch.Tensor:
    """A sine `[channels, T]`; channel c has amplitude `amplitude / (c + 1)`."""
    t = torch.arange(int(round(duration * sample_rate)), dtype=torch.float64) / sample_rate
    wave = torch.sin(2 * math.pi * freq * t)
    return torch.stack([amplitude / (c + 1) * wave for c in range(channels)]).float()


def write_sine(path: Path, freq: float = 440., duration: float = 1., sample_rate: int = 16000,
               channels: int = 1, amplitude: float = 0.5) -> torch.Tensor:
    """Write a sine to `path` (format from the extension) and return what was written."""
    wav = sine(freq, duration, sample_rate, channels, amplitude)
    audio_write(path, wav, sample_rate)
    return wav


def truncate(path: Path, keep: float) -> None:
    """Cut a file to the first `keep` fraction of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.fixture
def make_wave() -> tp.Callable[..., torch.Tensor]:
    return sine


@pytest.fixture
def make_sine() -> tp.Callable[..., torch.Tensor]:
    return write_sine


@pytest.fixture
def make_truncated() -> tp.Callable[[Path, float], None]:
    return truncate
