"""Generator of a Musika-style latent GAN: coordinates and a style vector to normalised latents.

The generator sees half a window at a time. Its coordinates `[N, C, T]` are average-pooled into a
pyramid, one level per resolution; a convolution starts from the coarsest level and each up-block
doubles the time resolution, modulated (FiLM) by the pooled coordinates at its resolution and the style,
with learned-scale noise injected after each convolution. `generate_window` runs the two halves of a
window as separate batch rows, so neither half sees the other's coordinates.
"""
from __future__ import annotations

import typing as tp

from einops import rearrange
import torch
from torch import nn
from torch.nn import functional as F

NoiseType = tp.Optional[tp.Sequence[torch.Tensor]]


class NoiseInjection(nn.Module):
    """Adds `scale[c] * noise` to `x [N, channels, T]`, with `noise [N, 1, T]` shared by the channels and a
    learned per-channel scale (zero at initialisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.scale * noise


class UpBlock(nn.Module):
    """Doubles the time resolution: nearest upsampling, then two (convolution, FiLM, noise, LeakyReLU)
    stages, with a 1x1-convolution skip from the upsampled input.

    `forward(x [N, in, T], cond [N, cond, 2T], noises (two [N, 1, 2T])) -> [N, out, 2T]`, where `cond` is
    the pooled coordinates and the style at the output resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, kernel_size: int = 5,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                                    nn.Conv1d(out_channels, out_channels, kernel_size, padding=kernel_size // 2)])
        self.films = nn.ModuleList([nn.Conv1d(cond_channels, 2 * out_channels, 1) for _ in range(2)])
        self.noises = nn.ModuleList([NoiseInjection(out_channels) for _ in range(2)])
        self.skip = nn.Conv1d(in_channels, out_channels, 1)
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, noises: tp.Sequence[torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode='nearest')
        skip, h = self.skip(x), x
        for conv, film, inject, noise in zip(self.convs, self.films, self.noises, noises):
            gain, bias = film(cond).chunk(2, dim=1)
            h = self.activation(inject(conv(h) * (1 + gain) + bias, noise))
        return (h + skip) / 2 ** 0.5


class LatentGenerator(nn.Module):
    """Half-window generator.

    Args:
        latent_dim: latent channels D of the output (in the normalised latent space).
        coord_dim: coordinate channels C.
        style_dim: style channels S.
        channels: channels of the first level (reference 128).
        num_blocks: up-blocks; each doubles the time resolution, so the half window must be a multiple
            of `2 ** num_blocks` frames.
        channel_decay: channels shrink by this factor per block (at least 8).
        kernel_size: odd convolution kernel.
        noise: inject noise (when False, `generator` and `noise` arguments are ignored).
        negative_slope: slope of the LeakyReLU activations.
    """

    def __init__(self, latent_dim: int = 64, coord_dim: int = 64, style_dim: int = 64, channels: int = 128,
                 num_blocks: int = 3, channel_decay: int = 1, kernel_size: int = 5, noise: bool = True,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, f"kernel_size={kernel_size}: use an odd kernel so that convolutions are centred."
        assert num_blocks >= 1, f"num_blocks={num_blocks}: use at least one up-block."
        self.latent_dim, self.coord_dim, self.style_dim = latent_dim, coord_dim, style_dim
        self.num_blocks = num_blocks
        self.noise = noise
        cond = coord_dim + style_dim
        widths = [max(8, channels // channel_decay ** level) for level in range(num_blocks + 1)]
        self.stem = nn.Conv1d(cond, widths[0], kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList([UpBlock(widths[i], widths[i + 1], cond, kernel_size, negative_slope)
                                     for i in range(num_blocks)])
        self.activation = nn.LeakyReLU(negative_slope)
        self.out = nn.Conv1d(widths[-1], latent_dim, kernel_size, padding=kernel_size // 2)

    @property
    def factor(self) -> int:
        """Half windows are multiples of this many frames."""
        return 2 ** self.num_blocks

    def noise_shapes(self, batch: int, length: int) -> tp.List[tp.Tuple[int, int, int]]:
        """Shapes of the noise tensors `forward` takes for `batch` rows of `length` frames, in order."""
        return [(batch, 1, length // 2 ** (self.num_blocks - 1 - i)) for i in range(self.num_blocks) for _ in range(2)]

    def sample_noise(self, batch: int, length: int, generator: tp.Optional[torch.Generator] = None,
                     device: tp.Union[str, torch.device] = 'cpu') -> tp.List[torch.Tensor]:
        """Standard normal noise for `forward`, drawn from `generator`."""
        return [torch.randn(shape, generator=generator, device=device) for shape in self.noise_shapes(batch, length)]

    def forward(self, coords: torch.Tensor, style: torch.Tensor, generator: tp.Optional[torch.Generator] = None,
                noise: NoiseType = None) -> torch.Tensor:
        """Latents `[N, D, T]` for half-window coordinates `[N, C, T]` and styles `[N, S]`.

        Noise comes from `noise` (tensors of `noise_shapes(N, T)`) when given, else from `generator`
        (the global generator when None).
        """
        assert coords.dim() == 3 and coords.shape[1] == self.coord_dim, (
            f"Expected coordinates [N, {self.coord_dim}, T], got shape {tuple(coords.shape)}.")
        assert style.shape == (coords.shape[0], self.style_dim), (
            f"Expected a style [{coords.shape[0]}, {self.style_dim}], got shape {tuple(style.shape)}.")
        batch, length = coords.shape[0], coords.shape[-1]
        assert length % self.factor == 0, (
            f"A half window of {length} frames is not a multiple of 2 ** num_blocks = {self.factor}: change the "
            "window or num_blocks.")
        if not self.noise:
            noise = [torch.zeros(shape, device=coords.device) for shape in self.noise_shapes(batch, length)]
        elif noise is None:
            noise = self.sample_noise(batch, length, generator, coords.device)
        assert [tuple(n.shape) for n in noise] == self.noise_shapes(batch, length), (
            f"noise must hold tensors of shapes {self.noise_shapes(batch, length)}.")
        noise = [n.to(coords.dtype) for n in noise]
        pyramid = [F.avg_pool1d(coords, 2 ** (self.num_blocks - level)) for level in range(self.num_blocks)] + [coords]
        conds = [torch.cat([level, style[..., None].expand(-1, -1, level.shape[-1])], dim=1) for level in pyramid]
        x = self.activation(self.stem(conds[0]))
        for index, block in enumerate(self.blocks):
            x = block(x, conds[index + 1], noise[2 * index:2 * index + 2])
        return self.out(x)

    def generate_window(self, coords: torch.Tensor, style: torch.Tensor, generator: tp.Optional[torch.Generator] = None,
                        noise: NoiseType = None) -> torch.Tensor:
        """Latents `[B, D, W]` for window coordinates `[B, C, W]` and styles `[B, S]`: the two halves are
        generated independently, as batch rows `2B` (first halves, then second halves), and concatenated.
        `noise` is as in `forward` for `2B` rows of `W // 2` frames."""
        assert coords.shape[-1] % 2 == 0, f"A window of {coords.shape[-1]} frames cannot be split in two halves."
        halves = rearrange(coords, 'b c (h t) -> (h b) c t', h=2)
        out = self(halves, style.repeat(2, 1), generator, noise)
        return rearrange(out, '(h b) d t -> b d (h t)', h=2)
