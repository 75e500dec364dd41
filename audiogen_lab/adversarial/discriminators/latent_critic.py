"""Critic of a Musika-style latent GAN: strided residual 1D convolutions over whole latent windows (two
generated halves, or a real crop), without normalisation layers (R1 keeps it in check), and an optional
self-supervised head that reconstructs a downsampled copy of its input from the critic's features."""
from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F


class DownBlock(nn.Module):
    """Halves the time resolution: LeakyReLU, convolution, LeakyReLU, strided convolution, plus an
    average-pooled 1x1-convolution skip. `forward(x [B, in, T]) -> [B, out, ceil(T / 2)]` (T even: T / 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.LeakyReLU(negative_slope), nn.Conv1d(in_channels, in_channels, kernel_size, padding=kernel_size // 2),
            nn.LeakyReLU(negative_slope),
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2))
        self.skip = nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.residual(x) + self.skip(F.avg_pool1d(x, 2, ceil_mode=True))) / 2 ** 0.5


class LatentCritic(nn.Module):
    """Window critic.

    Args:
        latent_dim: latent channels D.
        channels: channels after the first convolution; each block multiplies them by `channel_growth`
            up to `max_channels`.
        num_blocks: strided residual blocks, each halving the time resolution.
        channel_growth, max_channels: channel schedule of the blocks.
        kernel_size: odd convolution kernel.
        reconstruction: add the self-supervised head (`reconstruct`, `reconstruction_loss`).
        reconstruction_blocks: upsampling stages of the head; it predicts the input average-pooled by
            `2 ** (num_blocks - reconstruction_blocks)`.
        negative_slope: slope of the LeakyReLU activations.

    `forward(x [B, D, W]) -> logits [B]`; `features(x) -> [B, channels', W / 2 ** num_blocks]`;
    `logits(features) -> [B]`.
    """

    def __init__(self, latent_dim: int = 64, channels: int = 128, num_blocks: int = 4, channel_growth: int = 2,
                 max_channels: int = 512, kernel_size: int = 5, reconstruction: bool = False,
                 reconstruction_blocks: int = 2, negative_slope: float = 0.2) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, f"kernel_size={kernel_size}: use an odd kernel so that convolutions are centred."
        assert 0 < reconstruction_blocks <= num_blocks, (
            f"reconstruction_blocks={reconstruction_blocks} must be in [1, num_blocks={num_blocks}].")
        self.latent_dim = latent_dim
        self.num_blocks = num_blocks
        widths = [min(channels * channel_growth ** i, max_channels) for i in range(num_blocks + 1)]
        self.stem = nn.Conv1d(latent_dim, widths[0], kernel_size, padding=kernel_size // 2)
        self.blocks = nn.Sequential(*[DownBlock(widths[i], widths[i + 1], kernel_size, negative_slope)
                                      for i in range(num_blocks)])
        self.head = nn.Sequential(nn.LeakyReLU(negative_slope), nn.Conv1d(widths[-1], widths[-1], 3, padding=1),
                                  nn.LeakyReLU(negative_slope), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                                  nn.Linear(widths[-1], 1))
        self.reconstruction_pool = 2 ** (num_blocks - reconstruction_blocks)
        self.decoder: tp.Optional[nn.Sequential] = None
        if reconstruction:
            layers: tp.List[nn.Module] = []
            for i in range(reconstruction_blocks):
                layers += [nn.Upsample(scale_factor=2), nn.Conv1d(widths[num_blocks - i], widths[num_blocks - i - 1],
                                                                  kernel_size, padding=kernel_size // 2),
                           nn.LeakyReLU(negative_slope)]
            layers.append(nn.Conv1d(widths[num_blocks - reconstruction_blocks], latent_dim, 1))
            self.decoder = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's features `[B, channels', W / 2 ** num_blocks]` of windows `[B, D, W]`."""
        assert x.dim() == 3 and x.shape[1] == self.latent_dim, (
            f"Expected latent windows [B, {self.latent_dim}, W], got shape {tuple(x.shape)}.")
        assert x.shape[-1] % 2 ** self.num_blocks == 0, (
            f"A window of {x.shape[-1]} frames is not a multiple of 2 ** num_blocks = {2 ** self.num_blocks}.")
        return self.blocks(self.stem(x))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits `[B]` from `features`."""
        return self.head(features).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """The head's prediction `[B, D, W / reconstruction_pool]` of the input average-pooled by
        `reconstruction_pool`."""
        assert self.decoder is not None, "This critic has no reconstruction head: build it with reconstruction=True."
        return self.decoder(features)

    def reconstruction_loss(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the head's prediction from `features` (of `x`) and `x [B, D, W]`
        average-pooled by `reconstruction_pool`; applied to real windows, it trains the critic only."""
        target = F.avg_pool1d(x.detach(), self.reconstruction_pool)
        return F.mse_loss(self.reconstruct(features).float(), target.float())
