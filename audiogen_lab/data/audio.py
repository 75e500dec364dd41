"""Audio file I/O with soundfile: header info, seekable reads and writes.

Audio tensors are `[C, T]` float32 in [-1, 1]. Reading supports wav, flac, ogg and mp3 (whatever the
installed libsndfile decodes); writing supports wav (PCM_16 by default), flac, ogg (Vorbis) and mp3.
"""
from dataclasses import dataclass
from pathlib import Path
import logging
import typing as tp

import numpy as np
import soundfile as sf
import torch

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]

# Formats written by `audio_write`, by file extension: (soundfile format, default subtype).
WRITE_FORMATS: tp.Dict[str, tp.Tuple[str, tp.Optional[str]]] = {
    'wav': ('WAV', 'PCM_16'),
    'flac': ('FLAC', 'PCM_16'),
    'ogg': ('OGG', 'VORBIS'),
    'mp3': ('MP3', 'MPEG_LAYER_III'),
}
# MP3 headers without a gapless (LAME/Xing) tag only estimate the frame count: tolerate a shortfall
# of up to two MPEG frames before calling such a file truncated. Other formats must match exactly.
MP3_FRAME_TOLERANCE = 2 * 1152


class AudioReadError(RuntimeError):
    """An audio file could not be read or is truncated.

    Attributes:
        path: the offending file.
        reason: what went wrong, for people.
    """

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot read audio file {self.path}: {reason}")

    def __reduce__(self):
        # Keep the exception picklable so DataLoader workers can forward it.
        return (type(self), (self.path, self.reason))


@dataclass
class AudioFileInfo:
    """What a file header says: sample rate (Hz), duration (seconds) and number of channels."""
    sample_rate: int
    duration: float
    channels: int


def audio_info(path: PathLike) -> AudioFileInfo:
    """Read the header of an audio file. Raises `AudioReadError` when the file cannot be opened."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioReadError(path, str(exc)) from exc
    return AudioFileInfo(sample_rate=int(info.samplerate), duration=float(info.frames) / info.samplerate,
                         channels=int(info.channels))


def audio_read(path: PathLike, seek_time: float = 0., duration: float = -1.,
               pad: bool = False) -> tp.Tuple[torch.Tensor, int]:
    """Read `duration` seconds of audio starting at `seek_time` seconds.

    Args:
        path: audio file (wav, flac, ogg, mp3...).
        seek_time: where to start, in seconds (frame `round(seek_time * sample_rate)`).
        duration: how many seconds to read; negative reads to the end of the file.
        pad: when a duration is given and the file ends before it, pad with zeros at the end so the
            output has exactly `round(duration * sample_rate)` frames.
    Returns:
        `(wav, sample_rate)` with `wav` a float32 tensor `[C, T]`.
    Raises:
        AudioReadError: the file cannot be opened or decoded, the seek time is past its end, it
            holds fewer frames than its header claims before the requested end (truncated file), or
            the frames read hold NaN or infinite samples.
    """
    if seek_time < 0:
        raise ValueError(f"seek_time must be >= 0, got {seek_time} for {path}.")
    try:
        with sf.SoundFile(str(path)) as handle:
            sample_rate = int(handle.samplerate)
            total = int(handle.frames)
            tolerance = MP3_FRAME_TOLERANCE if handle.format == 'MP3' else 0
            start = int(round(seek_time * sample_rate))
            if start > total:
                raise AudioReadError(path, f"seek time {seek_time:.3f}s is past the end of the file "
                                           f"({total / sample_rate:.3f}s).")
            wanted = -1 if duration < 0 else int(round(duration * sample_rate))
            if start > 0:
                handle.seek(start)
            data = handle.read(frames=wanted, dtype='float32', always_2d=True)
    except AudioReadError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioReadError(path, str(exc)) from exc
    expected = total - start if wanted < 0 else min(wanted, total - start)
    if data.shape[0] < expected - tolerance:
        raise AudioReadError(path, f"truncated: the header claims {total} frames but only "
                                   f"{start + data.shape[0]} could be decoded.")
    if not np.isfinite(data).all():
        bad = int(data.size - np.isfinite(data).sum())
        raise AudioReadError(path, f"{bad} NaN or infinite samples between {seek_time:.3f}s and "
                                   f"{(start + data.shape[0]) / sample_rate:.3f}s.")
    wav = torch.from_numpy(data.T.copy())  # [C, T]
    if pad and wanted > wav.shape[-1]:
        wav = torch.nn.functional.pad(wav, (0, wanted - wav.shape[-1]))
    return wav, sample_rate


@dataclass
class AudioScan:
    """What decoding a whole file found.

    Attributes:
        header_frames: frames the header claims.
        frames: frames actually decoded.
        peak: peak absolute amplitude over the finite samples (0 for an empty file).
        nonfinite: number of NaN or infinite samples.
        tolerance: frames a file may lack before it counts as truncated (MP3 headers estimate).
    """
    header_frames: int
    frames: int
    peak: float
    nonfinite: int
    tolerance: int = 0

    @property
    def truncated(self) -> bool:
        return self.frames < self.header_frames - self.tolerance


def audio_scan(path: PathLike, block_frames: int = 1 << 16) -> AudioScan:
    """Decode a whole file block by block (bounded memory) and report its length, peak and bad samples.

    Raises `AudioReadError` when the file cannot be opened. A decoding error part-way counts as a
    truncated file (fewer frames decoded than the header claims).
    """
    frames, peak, nonfinite = 0, 0., 0
    try:
        with sf.SoundFile(str(path)) as handle:
            header_frames = int(handle.frames)
            tolerance = MP3_FRAME_TOLERANCE if handle.format == 'MP3' else 0
            try:
                while True:
                    block = handle.read(frames=block_frames, dtype='float32', always_2d=True)
                    if block.shape[0] == 0:
                        break
                    frames += block.shape[0]
                    finite = np.isfinite(block)
                    nonfinite += int(block.size - finite.sum())
                    if finite.any():
                        peak = max(peak, float(np.abs(block[finite]).max()))
                    if block.shape[0] < block_frames:
                        break
            except (sf.SoundFileError, RuntimeError) as exc:
                logger.debug("Decoding %s stopped after %d frames: %s", path, frames, exc)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioReadError(path, str(exc)) from exc
    return AudioScan(header_frames=header_frames, frames=frames, peak=peak, nonfinite=nonfinite,
                     tolerance=tolerance)


def audio_write(path: PathLike, wav: torch.Tensor, sample_rate: int, format: tp.Optional[str] = None,
                normalize: bool = False, peak: float = 0.99, subtype: tp.Optional[str] = None,
                log_clipping: bool = True) -> Path:
    """Write a waveform to an audio file, creating parent folders.

    Args:
        path: output file; its extension gives the format unless `format` is set.
        wav: waveform `[C, T]` or `[T]` (mono); any float dtype and device.
        sample_rate: in Hz.
        format: one of 'wav', 'flac', 'ogg', 'mp3' (defaults to the extension of `path`).
        normalize: scale the waveform so that its peak absolute value is `peak` (silence is left as is).
        peak: target peak for `normalize`.
        subtype: soundfile subtype (e.g. 'PCM_24', 'FLOAT'); defaults to PCM_16 for wav/flac.
        log_clipping: log a warning when samples outside [-1, 1] are clamped.
    Returns:
        The path written.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip('.')).lower()
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"Cannot write {path}: unsupported format {fmt!r}, "
                         f"choose one of {sorted(WRITE_FORMATS)} (via the extension or `format=`).")
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"audio_write expects a waveform [C, T] or [T], got shape {tuple(wav.shape)} "
                         f"for {path}.")
    if not wav.is_floating_point():
        raise ValueError(f"audio_write expects a float waveform in [-1, 1], got {wav.dtype} for {path}.")
    wav = wav.detach().float().cpu()
    if not torch.isfinite(wav).all():
        raise ValueError(f"Refusing to write {path}: the waveform holds NaN or infinite values.")
    if normalize:
        max_abs = wav.abs().max()
        if max_abs > 0:
            wav = wav * (peak / max_abs)
    clipped = (wav.abs() > 1).float().mean().item()
    if clipped > 0 and log_clipping:
        logger.warning("Clipping %.3f%% of the samples written to %s.", 100 * clipped, path)
    wav = wav.clamp(-1, 1)
    sf_format, default_subtype = WRITE_FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.numpy().T, sample_rate, format=sf_format, subtype=subtype or default_subtype)
    return path
