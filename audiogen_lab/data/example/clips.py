"""What every clip goes through: exact length, silence check, peak normalisation, and the skip signal."""
import typing as tp

import numpy as np

PEAK = 0.7  # peak level of every clip after normalisation (about -3 dBFS)


class SkipCandidate(Exception):
    """A score or sentence that cannot make a clip; the reason is the message."""


def fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad a waveform `[T]` to exactly `length` samples."""
    if wav.shape[0] >= length:
        return wav[:length]
    return np.concatenate([wav, np.zeros(length - wav.shape[0], dtype=wav.dtype)])


def silence_reason(wav: np.ndarray, sample_rate: int) -> tp.Optional[str]:
    """Why a clip is too quiet to keep (None when it is fine): near-silent overall or mostly silent."""
    if not np.isfinite(wav).all():
        return "non-finite samples"
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    if rms < 1e-4:
        return f"near-silent render (RMS {rms:.1e})"
    hop = max(1, sample_rate // 20)
    frames = wav[:len(wav) // hop * hop].reshape(-1, hop)
    frame_rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    active = float(np.mean(frame_rms > frame_rms.max() * 10 ** (-40 / 20)))
    if active < 0.5:
        return f"mostly silent render ({100 * active:.0f}% of the clip sounds)"
    return None


def normalize_peak(wav: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale a waveform so that its peak absolute value is `peak`."""
    top = float(np.abs(wav).max())
    return (wav * (peak / top)).astype(np.float32) if top > 0 else wav
