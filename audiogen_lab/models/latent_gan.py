"""Musika-style latent GAN: a coordinate sampler, a half-window generator and the latent normaliser, with
generation of any length.

The generator works in a normalised latent space, `(latents - mean) / std` per dimension, with the mean
and std of the training latents held as buffers (so that they travel with the weights). `generate` draws
one coordinate path per sample, cuts it into windows that tile it, generates every half window
independently (in batches of `batch_halves` rows), concatenates them and crops to exactly
`round(seconds * rate)` frames. Every random draw (anchors, style, noise) comes from one generator
seeded by `seed`, in an order that does not depend on the batching, so batched and one-by-one
generation agree.
"""
from __future__ import annotations

import math
import typing as tp

from einops import rearrange
import torch
from torch import nn

from .latent_gan_coords import CoordinateSampler
from .latent_gan_generator import LatentGenerator


def _float_bits(value: float) -> torch.Tensor:
    """The bits of `value` as a float64, in a 0-d int64 tensor."""
    return torch.tensor(float(value), dtype=torch.float64).view(torch.int64)


class LatentGAN(nn.Module):
    """Generator of a latent GAN with its coordinate system and latent normaliser.

    Args:
        generator: the half-window generator (its `latent_dim`, `coord_dim`, `style_dim` set the rest).
        anchor_spacing: latent frames between consecutive anchors.
        window: window in latent frames (two halves, each a multiple of `generator.factor`).
        frame_rate: latent frames per second of the autoencoder the latents come from.
    """

    family = "latent_gan"

    def __init__(self, generator: LatentGenerator, anchor_spacing: int = 64, window: int = 256,
                 frame_rate: float = 1.0) -> None:
        super().__init__()
        assert (window // 2) % generator.factor == 0, (
            f"window={window}: each half ({window // 2} frames) must be a multiple of 2 ** num_blocks = "
            f"{generator.factor}.")
        self.generator = generator
        self.sampler = CoordinateSampler(generator.coord_dim, generator.style_dim, anchor_spacing, window)
        self.latent_dim = generator.latent_dim
        self.register_buffer("latent_mean", torch.zeros(generator.latent_dim))
        self.register_buffer("latent_std", torch.ones(generator.latent_dim))
        # the rate as the bits of a float64 in an integer buffer: it travels with the weights and, unlike a
        # floating buffer, keeps its exact value through `.to(dtype)`, `.half()` or bf16 casts
        self.register_buffer("rate_bits", _float_bits(frame_rate))
        self.register_buffer("audio_channels", torch.tensor(1))

    @property
    def window(self) -> int:
        return self.sampler.window

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return float(self.rate_bits.view(torch.float64))

    @property
    def channels(self) -> int:
        """Audio channels whose latents are concatenated in the D features (2 for stereo latents coded
        channel by channel by a mono autoencoder)."""
        return int(self.audio_channels)

    @torch.no_grad()
    def set_normaliser(self, mean: tp.Sequence[float], std: tp.Sequence[float], frame_rate: float,
                       min_std: float = 1e-5, channels: int = 1) -> None:
        """Set the per-dimension mean and std `[D]` of the training latents, their rate and the audio
        channels they hold."""
        assert self.latent_dim % channels == 0, (
            f"{self.latent_dim} latent dimensions cannot hold {channels} channels of equal size.")
        mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        assert mean_t.shape == std_t.shape == (self.latent_dim,), (
            f"Expected a mean and std of [{self.latent_dim}] values, got {tuple(mean_t.shape)} and "
            f"{tuple(std_t.shape)}: the latents and latent_gan.latent_dim disagree.")
        self.latent_mean.copy_(mean_t)
        self.latent_std.copy_(std_t.clamp(min=min_std))
        self.rate_bits.copy_(_float_bits(frame_rate))
        self.audio_channels.fill_(int(channels))

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents `[B, D, T]` of the autoencoder -> the generator's space."""
        return (latents - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Generator outputs `[B, D, T]` -> latents of the autoencoder."""
        return latents * self.latent_std[:, None] + self.latent_mean[:, None]

    def generate_normalised(self, frames: int, num_samples: int = 1, truncation: tp.Optional[float] = None,
                            seed: tp.Optional[int] = None, loop: bool = False,
                            batch_halves: int = 64) -> torch.Tensor:
        """Normalised latents `[N, D, frames]` (see the module docstring).

        Draws, in order: the pieces (anchors, then style), then the noise of every half window.
        """
        assert frames >= 1 and num_samples >= 1, f"Need frames >= 1 and num_samples >= 1, got {frames}, {num_samples}."
        device = self.latent_mean.device
        rng = torch.Generator(device=device)
        if seed is None:
            rng.seed()
        else:
            rng.manual_seed(int(seed))
        window, half = self.window, self.window // 2
        count = math.ceil(frames / window)
        piece = self.sampler.piece(num_samples, count * window, truncation, loop=loop, generator=rng, device=device)
        path = piece.path[..., :count * window]  # K = count windows per piece
        coords = rearrange(path, 'n c (k h t) -> (n k h) c t', k=count, h=2)  # row (n * K + k) * 2 + h
        style = piece.style.repeat_interleave(2 * count, dim=0)
        rows = coords.shape[0]
        noise = self.generator.sample_noise(rows, half, rng, device) if self.generator.noise else None
        outputs = []
        for start in range(0, rows, max(1, batch_halves)):
            stop = min(rows, start + max(1, batch_halves))
            chunk_noise = None if noise is None else [n[start:stop] for n in noise]
            outputs.append(self.generator(coords[start:stop], style[start:stop], noise=chunk_noise))
        out = rearrange(torch.cat(outputs), '(n k) d t -> n d (k t)', n=num_samples)
        return out[..., :frames]

    def generate(self, seconds: float, num_samples: int = 1, truncation: tp.Optional[float] = None,
                 seed: tp.Optional[int] = None, loop: bool = False, batch_halves: int = 64) -> torch.Tensor:
        """Latents `[N, D, round(seconds * rate)]` of the autoencoder (un-normalised).

        Args:
            seconds: duration; the output holds exactly `round(seconds * frame_rate)` frames.
            num_samples: independent pieces N.
            truncation: anchors and styles drawn from a normal truncated at `±truncation` (None: none).
            seed: seeds every draw (None: a fresh random seed).
            loop: a looping piece (alternating anchors, see `CoordinateSampler.piece`).
            batch_halves: half windows generated per forward pass (memory vs speed only).
        """
        frames = max(1, round(seconds * self.frame_rate))
        return self.denormalise(self.generate_normalised(frames, num_samples, truncation, seed, loop, batch_halves))

    def forward(self, coords: torch.Tensor, style: torch.Tensor, generator: tp.Optional[torch.Generator] = None
                ) -> torch.Tensor:
        """Normalised latents `[B, D, W]` for window coordinates `[B, C, W]` and styles `[B, S]` (training)."""
        return self.generator.generate_window(coords, style, generator)


def decode_latents(latents: torch.Tensor, autoencoder: tp.Any, chunk_seconds: tp.Optional[float] = 10.0,
                   overlap_seconds: float = 1.0, channels: int = 1, seed: tp.Optional[int] = None) -> torch.Tensor:
    """Audio `[N, C, T]` of latents `[N, D, T']` through a continuous `CompressionModel` (`decode_chunked` when
    it has one and `chunk_seconds` is set, else `decode`). With `channels` > 1 the D features hold that many
    audio channels' latents one after the other, each decoded alone and stacked as audio channels
    (stereo latents of a mono autoencoder, see `audiogen_lab.data.latent_dataset`). With `seed`, the noise a
    stochastic decoder draws (the consistency autoencoder's) comes from torch's global generators seeded with
    it, which are restored afterwards: the same latents and seed give the same audio."""
    assert getattr(autoencoder, "is_continuous", True), (
        f"{type(autoencoder).__name__} is not a continuous autoencoder: a latent GAN needs latents, not codes.")
    if seed is not None:
        devices = [latents.device] if latents.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return decode_latents(latents, autoencoder, chunk_seconds, overlap_seconds, channels)
    if channels > 1:
        return torch.cat([decode_latents(part, autoencoder, chunk_seconds, overlap_seconds)
                          for part in latents.chunk(channels, dim=1)], dim=1)
    with torch.no_grad():
        if chunk_seconds is not None and hasattr(autoencoder, "decode_chunked"):
            return autoencoder.decode_chunked(latents, None, chunk_seconds=chunk_seconds,
                                              overlap_seconds=overlap_seconds)
        return autoencoder.decode(latents, None)
