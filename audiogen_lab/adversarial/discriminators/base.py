"""Interface shared by the multi-scale / multi-period discriminators, and helpers for their convolutions."""
from __future__ import annotations

import abc
import typing as tp
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

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

    def run_each(self, x: torch.Tensor) -> MultiDiscriminatorOutputType:
        """`(logits, fmaps)` of every sub-discriminator in ``self.discriminators`` on the same `x`."""
        logits, fmaps = [], []
        for disc in self.discriminators:
            logit, fmap = disc(x)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps

    @property
    @abc.abstractmethod
    def num_discriminators(self) -> int:
        """Number of sub-discriminators, i.e. the length of the `logits` list returned by `forward`."""
        ...


_NORMS: tp.Dict[str, tp.Callable[[nn.Module], nn.Module]] = {"weight_norm": weight_norm,
                                                              "spectral_norm": spectral_norm}
ConvType = tp.TypeVar("ConvType", bound=nn.Module)


def normalized_conv(conv: ConvType, norm: str) -> ConvType:
    """`conv` with its weight reparametrized by `norm`: 'weight_norm' or 'spectral_norm'."""
    if norm not in _NORMS:
        raise ValueError(f"Unknown discriminator norm {norm!r}: choose one of {sorted(_NORMS)}.")
    return tp.cast(ConvType, _NORMS[norm](conv))


@contextmanager
def float32_weights(modules: tp.Iterable[nn.Module], device_type: str) -> tp.Iterator[None]:
    """Inside the block, the reparametrized weights of `modules` are the ones computed on entry, in float32
    outside autocast (spectral norm's power iteration is a matrix-vector product that autocast would run in
    half precision); convolutions still run in the autocast dtype. Weights are computed once per block."""
    with parametrize.cached():
        with torch.autocast(device_type=device_type, enabled=False):
            for module in modules:
                if parametrize.is_parametrized(module, "weight"):
                    _ = module.weight  # computed and cached here
        yield
