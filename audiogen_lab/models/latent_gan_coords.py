"""The coordinate system of a Musika-style latent GAN.

A piece of music is a path through coordinate space: anchors `[B, C, N]` drawn from N(0, I) (truncated
at generation), linearly interpolated over `anchor_spacing` latent frames, so that the path is
`[B, C, (N - 1) * anchor_spacing + 1]` and anchor `i` sits exactly at frame `i * anchor_spacing`; one style
vector `[B, S]` holds for the whole piece. The generator turns each half of a window of `window` frames
into latents from that half's coordinates only, so windows cut one after the other from one path join
without seams and can be generated in parallel.

Training windows are cropped at a uniform offset in `[0, anchor_spacing)`, so that anchors fall on every
position of a window equally often, for any window/spacing ratio. A looping piece alternates two
anchors `A, B, A, B, ...`: its path repeats every `2 * anchor_spacing` frames.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
import typing as tp

from einops import rearrange
import torch


def normal(shape: tp.Sequence[int], truncation: tp.Optional[float] = None,
           generator: tp.Optional[torch.Generator] = None, device: tp.Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """Standard normal values of `shape`; with `truncation`, values beyond `±truncation` are redrawn
    (the truncated normal distribution, sampled by `torch.nn.init.trunc_normal_`)."""
    if truncation is None:
        return torch.randn(*shape, generator=generator, device=device)
    assert truncation > 0, f"truncation={truncation}: use a positive bound, or None for no truncation."
    return torch.nn.init.trunc_normal_(torch.empty(*shape, device=device), a=-truncation, b=truncation,
                                       generator=generator)


def interpolate_anchors(anchors: torch.Tensor, spacing: int) -> torch.Tensor:
    """The path `[B, C, (N - 1) * spacing + 1]` through anchors `[B, C, N]`, linear between neighbours;
    frame `i * spacing` equals anchor `i` exactly."""
    assert anchors.dim() == 3 and anchors.shape[-1] >= 2, (
        f"Expected anchors [B, C, N >= 2], got shape {tuple(anchors.shape)}.")
    weights = torch.arange(spacing, device=anchors.device, dtype=anchors.dtype) / spacing
    segments = torch.lerp(anchors[..., :-1, None], anchors[..., 1:, None], weights)  # [B, C, N - 1, spacing]
    return torch.cat([rearrange(segments, 'b c n s -> b c (n s)'), anchors[..., -1:]], dim=-1)


def crop_windows(path: torch.Tensor, window: int, hop: tp.Optional[int] = None) -> torch.Tensor:
    """Consecutive windows `[B, K, C, window]` of a path `[B, C, L]`, starting every `hop` frames (default
    `window`: windows that tile the path); K = `(L - window) // hop + 1`."""
    assert path.shape[-1] >= window, f"A path of {path.shape[-1]} frames is shorter than a window of {window}."
    return rearrange(path.unfold(-1, window, hop or window), 'b c k w -> b k c w')


@dataclass
class Piece:
    """One coordinate path per batch row and its style.

    Attributes:
        anchors: `[B, C, N]` anchor vectors.
        path: `[B, C, L]` coordinates at the latent rate, `L = (N - 1) * spacing + 1`.
        style: `[B, S]` style vector, constant along the piece.
    """
    anchors: torch.Tensor
    path: torch.Tensor
    style: torch.Tensor

    def windows(self, window: int, hop: tp.Optional[int] = None) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Generator inputs for every window of the path: coordinates `[B * K, C, window]` and style
        `[B * K, S]` (row `b * K + k` is window `k` of piece `b`); see `crop_windows`."""
        windows = crop_windows(self.path, window, hop)
        style = self.style[:, None].expand(-1, windows.shape[1], -1)
        return rearrange(windows, 'b k c w -> (b k) c w'), rearrange(style, 'b k s -> (b k) s')


class CoordinateSampler:
    """Draws coordinate paths, styles and training windows.

    Args:
        coord_dim: coordinate channels C.
        style_dim: style channels S.
        anchor_spacing: latent frames between consecutive anchors.
        window: training window in latent frames (even: the generator makes each half separately).
    """

    def __init__(self, coord_dim: int = 64, style_dim: int = 64, anchor_spacing: int = 64, window: int = 256) -> None:
        assert anchor_spacing >= 1, f"anchor_spacing={anchor_spacing}: use at least one frame."
        assert window >= 2 and window % 2 == 0, f"window={window}: use an even number of frames (two halves)."
        self.coord_dim = coord_dim
        self.style_dim = style_dim
        self.anchor_spacing = anchor_spacing
        self.window = window

    def anchors_for(self, frames: int) -> int:
        """Fewest anchors whose path covers `frames` frames."""
        return max(2, math.ceil((frames - 1) / self.anchor_spacing) + 1)

    def piece(self, batch: int, frames: int, truncation: tp.Optional[float] = None, loop: bool = False,
              generator: tp.Optional[torch.Generator] = None, device: tp.Union[str, torch.device] = 'cpu') -> Piece:
        """`batch` pieces whose paths are at least `frames` long (whole anchor spacings).

        With `loop`, the anchors alternate between two draws `A, B, A, B, ...` and the path repeats every
        `2 * anchor_spacing` frames; generated latents repeat every `lcm(2 * anchor_spacing, window // 2)`
        frames when windows start at frame 0. Anchors are drawn before the style, both from `generator`.
        """
        count = self.anchors_for(frames)
        draws = 2 if loop else count
        anchors = normal((batch, self.coord_dim, draws), truncation, generator, device)
        if loop:
            anchors = anchors.repeat(1, 1, math.ceil(count / 2))[..., :count]
        style = normal((batch, self.style_dim), truncation, generator, device)
        return Piece(anchors, interpolate_anchors(anchors, self.anchor_spacing), style)

    def training_windows(self, batch: int, generator: tp.Optional[torch.Generator] = None,
                         device: tp.Union[str, torch.device] = 'cpu'
                         ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Untruncated training inputs: coordinates `[B, C, window]`, style `[B, S]` and the crop offsets
        `[B]`, uniform in `[0, anchor_spacing)`; anchor `i` of row `b` is at window frame
        `i * anchor_spacing - offsets[b]`."""
        piece = self.piece(batch, self.anchor_spacing - 1 + self.window, generator=generator, device=device)
        offsets = torch.randint(self.anchor_spacing, (batch,), generator=generator, device=device)
        windows = piece.path.unfold(-1, self.window, 1)  # [B, C, positions, window]
        return windows[torch.arange(batch, device=device), :, offsets], piece.style, offsets
