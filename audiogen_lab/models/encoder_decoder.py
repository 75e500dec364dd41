"""Audio <-> continuous latents with any continuous compression model, for notebooks and scripts.

:class:`EncoderDecoder` wraps a trained model (the consistency autoencoder, or any
:class:`CompressionModel` whose `encode` returns latents) and takes care of what a user should not
have to: numpy arrays or tensors of shape [T], [C, T] or [B, C, T], resampling (julius) and channel
conversion to the model's format, memory (long inputs cut into windows of at most
`max_chunk_seconds`, at most `max_batch_size` windows per forward), and reproducible decoding.

Encoding keeps one contiguous stream of ``ceil(T / hop)`` frames: every window carries
`overlap_seconds` of context on both sides (less at the signal's edges) and only its centre frames
are kept. Decoding cuts the latents into windows of at most `max_chunk_seconds` overlapping by
`overlap_seconds`, decodes each and cross-fades the overlaps (:func:`~audiogen_lab.models.chunked.cross_fade`),
so the audio has exactly ``T' * hop`` samples and no seam. The noise of each decoding call is drawn
from a seed derived from the user's seed and the call's index, so a seed makes decoding reproducible.

    codec = EncoderDecoder('//sig/SIG', max_chunk_seconds=10, overlap_seconds=1)
    latents = codec.encode(wav, sample_rate=44100)        # numpy [C, T] -> numpy [D, T']
    audio = codec.decode(latents, seed=0)                  # numpy [C, T' * hop] at codec.sample_rate
"""
from __future__ import annotations

import inspect
import math
import typing as tp
from pathlib import Path

import numpy as np
import torch

from ..data.audio_utils import convert_audio
from .chunked import chunk_starts, cross_fade
from .compression import CompressionModel

Array = tp.Union[np.ndarray, torch.Tensor]
Window = tp.Tuple[int, int, int, int]


class _Default:
    """Marks an argument left to the instance's setting (`seed=None` already means 'unseeded')."""

    def __repr__(self) -> str:
        return 'DEFAULT'


DEFAULT: tp.Any = _Default()


def call_seed(seed: int, index: int) -> int:
    """The seed of the `index`-th decoding call of a decode seeded with `seed` (a deterministic mix)."""
    state = np.random.SeedSequence([int(seed) & (2 ** 64 - 1), int(index)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) % 2 ** 63


def encode_windows(num_frames: int, window: int, context: int) -> tp.List[Window]:
    """How to encode `num_frames` frames with windows of `window` frames and `context` frames of overlap.

    Returns:
        (window_start, window_end, keep_start, keep_end) in frames: the kept ranges tile
        [0, num_frames); each kept frame has `context` frames of context on both sides (or the signal's
        edge), and every window holds exactly `window` frames when the signal is longer than one window.
    """
    if num_frames <= window:
        return [(0, num_frames, 0, num_frames)]
    core = window - 2 * context
    assert core >= 1, f"a window of {window} frames cannot hold {context} frames of context on both sides"
    plan = []
    for start in range(0, num_frames, core):
        window_start = max(0, min(start - context, num_frames - window))
        plan.append((window_start, window_start + window, start, min(start + core, num_frames)))
    return plan


def _as_tensor(value: Array, what: str) -> torch.Tensor:
    """A numpy array or tensor of floats as a tensor (no copy when possible)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise TypeError(f"{what} must hold floats (audio in [-1, 1]), got dtype {value.dtype}: convert it first.")
    return value


def _like(result: torch.Tensor, reference: Array) -> Array:
    """`result` in the container of `reference`: a numpy array of its dtype, or a tensor on its device."""
    if isinstance(reference, np.ndarray):
        return result.detach().cpu().numpy().astype(reference.dtype, copy=False)
    return result.detach().to(device=reference.device, dtype=reference.dtype)


class EncoderDecoder:
    """Encode audio to continuous latents and decode latents to audio with a trained model.

    Args:
        checkpoint: a :class:`CompressionModel`, or where to load one from with
            ``CompressionSolver.model_from_checkpoint``: ``//sig/SIG``, an XP folder, a checkpoint or
            an export file, ``//pretrained/NAME``.
        device: where the model runs (default: cuda when available, else cpu).
        max_chunk_seconds: longest audio (or latent) window given to the model in one call.
        overlap_seconds: context around each encoding window and overlap of consecutive decoding
            windows (0 allowed); rounded up to whole frames, and less than half `max_chunk_seconds`.
        max_batch_size: most windows per model call.
        steps: default denoising steps of :meth:`decode` (models whose `decode` takes `steps`).
        seed: default seed of :meth:`decode` (None: unseeded, from the global random state).
    Raises:
        ValueError: the model is discrete (its `encode` returns codes), or the window settings are invalid.
    """

    def __init__(self, checkpoint: tp.Union[str, Path, CompressionModel],
                 device: tp.Union[str, torch.device, None] = None, max_chunk_seconds: float = 10.0,
                 overlap_seconds: float = 1.0, max_batch_size: int = 8, steps: int = 1, seed: tp.Optional[int] = 0):
        self.device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
        if isinstance(checkpoint, CompressionModel):
            self.source, model = type(checkpoint).__name__, checkpoint
        else:
            from ..solvers.compression import CompressionSolver
            self.source, model = str(checkpoint), CompressionSolver.model_from_checkpoint(str(checkpoint), device='cpu')
        if not model.is_continuous:
            raise ValueError(f"{self.source}: {type(model).__name__} is a discrete model (its encode returns codes); "
                             "EncoderDecoder needs a continuous model such as the consistency autoencoder.")
        self.model = model.to(self.device).eval()
        if max_batch_size < 1 or steps < 1:
            raise ValueError(f"max_batch_size and steps must be >= 1, got {max_batch_size} and {steps}.")
        self.window = max(1, math.floor(max_chunk_seconds * self.frame_rate + 1e-9))
        self.context = max(0, math.ceil(overlap_seconds * self.frame_rate - 1e-9))
        if max_chunk_seconds <= 0 or overlap_seconds < 0 or self.window <= 2 * self.context:
            raise ValueError(f"max_chunk_seconds ({max_chunk_seconds}) must be positive and hold more than twice "
                             f"overlap_seconds ({overlap_seconds} >= 0), in whole frames of 1 / {self.frame_rate} s.")
        self.max_chunk_seconds, self.overlap_seconds = max_chunk_seconds, overlap_seconds
        self.max_batch_size, self.steps, self.seed = max_batch_size, steps, seed
        self._decode_args = set(inspect.signature(self.model.decode).parameters)

    def __repr__(self) -> str:
        return (f"EncoderDecoder({self.source!r}: {self.channels} x {self.sample_rate} Hz <-> {self.latent_dim} x "
                f"{self.frame_rate:g} frames/s on {self.device}, windows of {self.max_chunk_seconds} s "
                f"overlapping {self.overlap_seconds} s)")

    # -- properties -----------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Audio sample rate of the model (Hz): decoded audio is at this rate."""
        return int(self.model.sample_rate)

    @property
    def channels(self) -> int:
        """Audio channels of the model."""
        return int(self.model.channels)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return float(self.model.frame_rate)

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return int(self.model.hop_length)

    @property
    def latent_dim(self) -> tp.Optional[int]:
        """Latent channels D (None when the model does not say)."""
        return self.model.latent_dim

    # -- batching -------------------------------------------------------------------------------------
    def _batched(self, inputs: tp.Sequence[torch.Tensor],
                 fn: tp.Callable[[torch.Tensor, int], torch.Tensor]) -> tp.List[torch.Tensor]:
        """`fn(batch [B, ...], call_index)` over inputs of equal shape stacked by at most `max_batch_size`;
        returns one output per input, in order."""
        groups: tp.Dict[tp.Tuple[int, ...], tp.List[int]] = {}
        for index, item in enumerate(inputs):
            groups.setdefault(tuple(item.shape), []).append(index)
        outputs: tp.List[tp.Optional[torch.Tensor]] = [None] * len(inputs)
        call = 0
        for indices in groups.values():
            for first in range(0, len(indices), self.max_batch_size):
                chosen = indices[first:first + self.max_batch_size]
                result = fn(torch.stack([inputs[i] for i in chosen]), call)
                call += 1
                for index, out in zip(chosen, result):
                    outputs[index] = out
        return tp.cast(tp.List[torch.Tensor], outputs)

    # -- encoding -------------------------------------------------------------------------------------
    def _prepare_audio(self, wave: torch.Tensor, sample_rate: tp.Optional[int]) -> tp.Tuple[torch.Tensor, bool]:
        """Audio [T], [C, T] or [B, C, T] -> ([B, channels, T'] at the model's rate on the device, batched)."""
        if wave.dim() not in (1, 2, 3) or wave.shape[-1] == 0:
            raise ValueError(f"expected audio [T], [C, T] or [B, C, T] with T > 0, got shape {tuple(wave.shape)}.")
        batched = wave.dim() == 3
        x = wave.reshape(-1, *wave.shape[-2:]) if batched else wave.reshape(1, -1, wave.shape[-1])
        x = x.to(self.device, torch.float32)
        try:
            x = convert_audio(x, sample_rate or self.sample_rate, self.sample_rate, self.channels)
        except ValueError as err:
            raise ValueError(f"{self.source} codes {self.channels}-channel audio: {err}") from err
        return x, batched

    def _encode_batch(self, x: torch.Tensor, call: int) -> torch.Tensor:
        latents, scale = self.model.encode(x)
        if scale is not None:
            raise ValueError(f"{self.source}: {type(self.model).__name__}.encode returns a scale, which latents "
                             "alone cannot carry: EncoderDecoder needs a model that does not normalise its input.")
        return latents

    def _features_batch(self, x: torch.Tensor, call: int) -> torch.Tensor:
        extract = getattr(self.model, 'extract_features', None)
        if extract is None:
            raise ValueError(f"{self.source}: {type(self.model).__name__} has no extract_features.")
        return extract(x)

    @torch.no_grad()
    def encode(self, wave: Array, sample_rate: tp.Optional[int] = None, extract_features: bool = False) -> Array:
        """Audio -> latents, in the container (numpy array or tensor) and dtype of `wave`.

        Args:
            wave: audio [T] (mono), [C, T] or [B, C, T], floats in [-1, 1].
            sample_rate: of `wave` (default: the model's); other rates are resampled with julius.
            extract_features: return the encoder's features (``model.extract_features``) instead.
        Returns:
            latents [D, T'] for [T] or [C, T] input, [B, D, T'] for [B, C, T], with
            ``T' = ceil(T * model rate / sample_rate / hop_length)``.
        """
        x, batched = self._prepare_audio(_as_tensor(wave, 'audio'), sample_rate)
        hop = self.hop_length
        plan = encode_windows(math.ceil(x.shape[-1] / hop), self.window, self.context)
        windows = [x[b, :, start * hop:end * hop] for b in range(x.shape[0]) for start, end, _, _ in plan]
        outputs = self._batched(windows, self._features_batch if extract_features else self._encode_batch)
        items = []
        for b in range(x.shape[0]):
            pieces = []
            for (start, end, keep_start, keep_end), out in zip(plan, outputs[b * len(plan):(b + 1) * len(plan)]):
                assert out.shape[-1] == end - start, \
                    f"{self.source}: a window of {end - start} frames was encoded to {out.shape[-1]} frames"
                pieces.append(out[:, keep_start - start:keep_end - start])
            items.append(torch.cat(pieces, dim=-1))
        result = torch.stack(items)
        return _like(result if batched else result[0], wave)

    # -- decoding -------------------------------------------------------------------------------------
    def _decode_batch(self, latents: torch.Tensor, steps: int, seed: tp.Optional[int], call: int) -> torch.Tensor:
        kwargs: tp.Dict[str, tp.Any] = {}
        if 'steps' in self._decode_args:
            kwargs['steps'] = steps
        elif steps != 1:
            raise ValueError(f"{self.source}: {type(self.model).__name__}.decode takes no steps; use steps=1.")
        if seed is None:
            return self.model.decode(latents, **kwargs)
        chunk_seed = call_seed(seed, call)
        if 'seed' in self._decode_args:
            return self.model.decode(latents, seed=chunk_seed, **kwargs)
        devices = [self.device] if self.device.type == 'cuda' else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(chunk_seed)
            return self.model.decode(latents, **kwargs)

    @torch.no_grad()
    def decode(self, latents: Array, steps: tp.Optional[int] = None, seed: tp.Optional[int] = DEFAULT) -> Array:
        """Latents -> audio at :attr:`sample_rate`, in the container (numpy array or tensor) and dtype of `latents`.

        Args:
            latents: [D, T'] or [B, D, T'].
            steps: denoising steps (default: the instance's `steps`).
            seed: makes the noise reproducible (default: the instance's `seed`; None: the global random state).
        Returns:
            audio [C, T' * hop_length] or [B, C, T' * hop_length]. Windows longer than `max_chunk_seconds`
            are decoded in overlapping windows joined by a cross-fade over their overlap.

        Each model call (at most `max_batch_size` windows) draws its noise from a seed derived from `seed` and
        the call's index: the same latents, seed and settings give the same audio, bit for bit.
        """
        z = _as_tensor(latents, 'latents')
        if z.dim() not in (2, 3) or z.shape[-1] == 0:
            raise ValueError(f"expected latents [D, T'] or [B, D, T'] with T' > 0, got shape {tuple(z.shape)}.")
        batched = z.dim() == 3
        z = (z if batched else z[None]).to(self.device, torch.float32)
        if self.latent_dim is not None and z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.source} decodes latents of {self.latent_dim} channels, got shape "
                             f"{tuple(latents.shape)}: were they made by another model?")
        steps = self.steps if steps is None else int(steps)
        seed = self.seed if seed is DEFAULT else seed
        frames, hop, overlap = z.shape[-1], self.hop_length, self.context
        starts = [0] if frames <= self.window else chunk_starts(frames, self.window, overlap)
        windows = [z[b, :, start:start + self.window] for b in range(z.shape[0]) for start in starts]
        outputs = self._batched(windows, lambda batch, call: self._decode_batch(batch, steps, seed, call))
        pieces = []
        for index, start in enumerate(starts):
            size = min(self.window, frames - start) * hop
            piece = torch.stack(outputs[index::len(starts)])
            assert piece.shape[-1] >= size, f"{self.source}: {size // hop} frames decoded to {piece.shape[-1]} samples"
            pieces.append(piece[..., :size])
        audio = cross_fade(pieces, [start * hop for start in starts], frames * hop, overlap * hop, overlap * hop)
        return _like(audio if batched else audio[0], latents)
