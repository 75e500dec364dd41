"""Interface shared by the multi-scale / multi-period discriminators."""
from __future__ import annotations

import abc
import typing as tp

import torch
from torch import nn

FeatureMapType = tp.List[torch.Tensor]
LogitsType = torch.Tensor
MultiDiscriminatorOutputType = tp.Tuple[tp.List[LogitsType], tp.List[FeatureMapType]]


class MultiDiscriminator(abc.ABC, nn.Module):
    """A set of sub-discriminators that look at the same waveform in different ways.

    `forward(x [B, C, T])` returns `(logits, fmaps)`: one logits tensor per sub-discriminator and,
    for each, the list of its intermediate feature maps (used for feature matching).
    """

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> MultiDiscriminatorOutputType:
        ...

    @property
    @abc.abstractmethod
    def num_discriminators(self) -> int:
        """Number of sub-discriminators, i.e. the length of the `logits` list returned by `forward`."""
        ...
