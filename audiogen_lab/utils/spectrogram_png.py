"""Spectrogram pictures without a plotting library: a log-mel spectrogram written as a grayscale PNG."""
from __future__ import annotations

import struct
import typing as tp
import zlib
from pathlib import Path

import torch
import torchaudio


def log_mel_image(wav: torch.Tensor, sample_rate: int, n_mels: int = 128, hop_length: int = 256,
                  dynamic_range_db: float = 80.0) -> torch.Tensor:
    """Mono audio ``[T]`` or ``[C, T]`` -> uint8 image ``[n_mels, frames]``, low frequencies at the bottom,
    the loudest bin white and everything ``dynamic_range_db`` below it black."""
    if wav.dim() == 2:
        wav = wav.mean(dim=0)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=4 * hop_length, hop_length=hop_length,
                                               n_mels=n_mels)(wav.float().cpu())
    db = 10 * torch.log10(mel.clamp_min(1e-10))
    db = (db - db.max() + dynamic_range_db).clamp(0, dynamic_range_db) / dynamic_range_db
    return (db.flip(0) * 255).round().to(torch.uint8)


def write_png(image: torch.Tensor, path: tp.Union[str, Path]) -> Path:
    """Write a uint8 grayscale image ``[H, W]`` as a PNG file."""
    if image.dim() != 2 or image.dtype != torch.uint8:
        raise ValueError(f"Expected a uint8 image [H, W], got {image.dtype} {tuple(image.shape)}.")
    height, width = image.shape
    rows = b"".join(b"\x00" + bytes(row) for row in image.tolist())  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6))
                     + chunk(b"IEND", b""))
    return path
