"""The spectrogram PNG: a valid PNG file holding exactly the image, and a tone shows as one bright band."""
import math
import struct
import zlib

import torch

from audiogen_lab.utils.spectrogram_png import log_mel_image, write_png


def _read_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[r * (width + 1):(r + 1) * (width + 1)] for r in range(height)]
    assert all(row[0] == 0 for row in rows) and (depth, color) == (8, 0)
    return torch.tensor([list(row[1:]) for row in rows], dtype=torch.uint8)


def test_png_round_trip(tmp_path):
    image = torch.randint(0, 256, (7, 13), dtype=torch.uint8)
    assert torch.equal(_read_png(write_png(image, tmp_path / "x.png")), image)


def test_a_tone_is_one_bright_band_low_in_the_picture():
    sr = 16000
    t = torch.arange(sr) / sr
    image = log_mel_image(0.5 * torch.sin(2 * math.pi * 300 * t), sr, n_mels=64, hop_length=256)
    assert image.shape[0] == 64 and image.dtype == torch.uint8
    profile = image.float().mean(dim=1)
    brightest = int(profile.argmax())
    assert brightest > 32  # low frequencies at the bottom
    assert profile[brightest] > 200 and profile[:16].mean() < 80
