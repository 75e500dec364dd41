"""Meta's released EnCodec models (24 kHz mono, 48 kHz stereo) behind the CompressionModel interface.

The weights are the checkpoint files of the ``encodec`` package. Nothing is ever downloaded: the file
is looked for in an explicit `repository` (folder or file), else in ``$AUDIOGEN_LAB_PRETRAINED_DIR``
and in ``torch.hub.get_dir()/checkpoints`` (where ``encodec`` itself caches its downloads).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import typing as tp
import warnings
from pathlib import Path

import encodec
import torch

from ..quantization.base import QuantizedResult
from .compression import CompressionModel, EncodeResult

PRETRAINED_ENV = 'AUDIOGEN_LAB_PRETRAINED_DIR'
PRETRAINED_CHECKPOINTS: tp.Dict[str, str] = {
    'encodec_24khz': 'encodec_24khz-d7cc33bc.th',
    'encodec_48khz': 'encodec_48khz-7e698e3e.th',
}
_PACKAGE_BUILDERS: tp.Dict[str, tp.Callable[..., encodec.EncodecModel]] = {
    'encodec_24khz': encodec.EncodecModel.encodec_model_24khz,
    'encodec_48khz': encodec.EncodecModel.encodec_model_48khz,
}


def _check_name(name: str) -> None:
    if name not in PRETRAINED_CHECKPOINTS:
        raise KeyError(f"Unknown pretrained model {name!r}: choose one of {sorted(PRETRAINED_CHECKPOINTS)}.")


def find_pretrained_checkpoint(name: str, repository: tp.Optional[tp.Union[str, Path]] = None) -> Path:
    """Path of the checkpoint file of pretrained model `name`.

    With `repository` (a folder holding the file, or the file itself) only that place is searched;
    otherwise ``$AUDIOGEN_LAB_PRETRAINED_DIR`` (when set) then ``torch.hub.get_dir()/checkpoints``.
    Raises FileNotFoundError naming the file and every place searched.
    """
    _check_name(name)
    filename = PRETRAINED_CHECKPOINTS[name]
    if repository is not None:
        repository = Path(repository).expanduser()
        candidates = [repository if repository.is_file() else repository / filename]
    else:
        candidates = []
        if os.environ.get(PRETRAINED_ENV):
            candidates.append(Path(os.environ[PRETRAINED_ENV]).expanduser() / filename)
        candidates.append(Path(torch.hub.get_dir()) / 'checkpoints' / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = '\n  '.join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Pretrained model {name!r} needs the file {filename} (EnCodec weights released by Meta, "
        f"https://dl.fbaipublicfiles.com/encodec/v0/{filename}); nothing is downloaded. Searched:\n  {searched}\n"
        f"Put the file in one of these places, or set ${PRETRAINED_ENV} to the folder holding it.")


def _check_checksum(path: Path) -> None:
    """The file name carries the first hex digits of its sha256 (``name-<digits>.th``)."""
    expected = path.stem.rsplit('-', 1)[-1]
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    if not digest.hexdigest().startswith(expected):
        raise RuntimeError(f"{path}: sha256 starts with {digest.hexdigest()[:len(expected)]}, expected "
                           f"{expected}; the file is corrupt or not the released checkpoint.")


def build_package_model(name: str) -> encodec.EncodecModel:
    """An untrained ``encodec.EncodecModel`` with the architecture of pretrained model `name`, in eval mode."""
    _check_name(name)
    with warnings.catch_warnings():  # the package uses the deprecated torch.nn.utils.weight_norm
        warnings.filterwarnings('ignore', message='.*weight_norm.*', category=FutureWarning)
        return _PACKAGE_BUILDERS[name](pretrained=False)


def load_package_model(name: str, repository: tp.Optional[tp.Union[str, Path]] = None,
                       verify_checksum: bool = False) -> encodec.EncodecModel:
    """``encodec.EncodecModel`` `name` with its released weights (see :func:`find_pretrained_checkpoint`).

    The file is read with ``torch.load(weights_only=True)``; `verify_checksum` also compares its sha256
    with the digits in its name.
    """
    path = find_pretrained_checkpoint(name, repository)
    if verify_checksum:
        _check_checksum(path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"{path}: refusing to load, the file needs arbitrary unpickling and is not a "
                           f"plain state dict ({str(err).splitlines()[0]}).") from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(f"{path}: cannot be read, the file is corrupt or truncated ({err}).") from err
    model = build_package_model(name)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise RuntimeError(f"{path}: not a state dict of {name}: {err}") from err
    return model.eval()


class EncodecPretrainedModel(CompressionModel):
    """A released EnCodec model (``encodec`` package) following the CompressionModel contract.

    24 kHz (mono, causal, 75 Hz, 32 codebooks of 1024): `encode` returns codes [B, K, ceil(T / 320)]
    and `scale` None.

    48 kHz (stereo, 150 Hz, 16 codebooks of 1024): the package encodes 1 s segments with 1 % overlap,
    each normalised by its own RMS. `codes` [B, K, T'] is the concatenation along time of the segments'
    codes (150 frames per full segment, the last one may be shorter) and `scale` [B, S] holds one
    gain per segment: the RMS (+1e-8) of the segment's channel mean, by which its decoded audio is
    multiplied. `decode` splits the codes back into segments and overlap-adds them (linear cross-fade),
    as the package does. Without `scale`, segments are decoded at unit RMS.

    The models were trained for bandwidths 1.5/3/6/12/24 kbps (24 kHz: 2/4/8/16/32 codebooks) and
    3/6/12/24 kbps (48 kHz: 2/4/8/16 codebooks); :meth:`set_num_codebooks` accepts any count.
    """

    def __init__(self, model: encodec.EncodecModel):
        super().__init__()
        self.model = model
        self.set_num_codebooks(self.total_codebooks)

    @classmethod
    def from_name(cls, name: str, repository: tp.Optional[tp.Union[str, Path]] = None,
                  verify_checksum: bool = False) -> 'EncodecPretrainedModel':
        """Load pretrained model `name` ('encodec_24khz' | 'encodec_48khz'); see :func:`load_package_model`."""
        return cls(load_package_model(name, repository, verify_checksum)).eval()

    # -- properties ----------------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return self.model.channels

    @property
    def frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def cardinality(self) -> int:
        return self.model.quantizer.bins

    @property
    def total_codebooks(self) -> int:
        return self.model.quantizer.n_q

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    def set_num_codebooks(self, n: int) -> None:
        if not 1 <= n <= self.total_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.total_codebooks}], got {n}.")
        quantizer = self.model.quantizer
        bandwidth = n * quantizer.get_bandwidth_per_quantizer(self.model.frame_rate)
        assert quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, bandwidth) == n
        self.model.bandwidth = bandwidth  # the package selects its codebooks from this bandwidth
        self._num_codebooks = int(n)

    @property
    def is_continuous(self) -> bool:
        return False

    @property
    def _frames_per_segment(self) -> tp.Optional[int]:
        segment_length = self.model.segment_length
        return None if segment_length is None else -(-segment_length // self.hop_length)

    # -- processing ----------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> EncodeResult:
        """Audio [B, C, T] -> (codes [B, K, T'], scale None (24 kHz) | [B, S] per-segment gains (48 kHz))."""
        assert x.dim() == 3 and x.shape[1] == self.channels, \
            f"expected audio [B, {self.channels}, T], got shape {tuple(x.shape)}"
        frames = self.model.encode(x)
        codes = torch.cat([frame_codes for frame_codes, _ in frames], dim=-1)
        scales = [scale for _, scale in frames]
        return codes, None if scales[0] is None else torch.cat(scales, dim=1)

    def decode(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """Codes [B, K, T'] (+ scale from `encode`) -> audio [B, C, T' * hop] (48 kHz: overlap-added
        segments, slightly longer than the encoded audio)."""
        assert codes.dim() == 3, f"expected codes [B, K, T], got shape {tuple(codes.shape)}"
        per_segment = self._frames_per_segment
        if per_segment is None:
            return self.model.decode([(codes, scale)])
        segments = torch.split(codes, per_segment, dim=-1)
        if scale is None:
            scales: tp.List[tp.Optional[torch.Tensor]] = [None] * len(segments)
        else:
            assert scale.shape == (codes.shape[0], len(segments)), \
                f"expected scale [B, {len(segments)}] (one per segment), got {tuple(scale.shape)}"
            scales = list(scale.split(1, dim=1))
        return self.model.decode(list(zip(segments, scales)))

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T'] -> quantized latents [B, 128, T']."""
        return self.model.quantizer.decode(codes.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """Reconstruction [B, C, T] in `result.x`, with codes and bandwidth (no penalty: not trained here)."""
        codes, scale = self.encode(x)
        audio = self.decode(codes, scale)[..., :x.shape[-1]]
        bandwidth = torch.tensor(self.model.bandwidth, device=x.device)
        return QuantizedResult(audio, codes, bandwidth, penalty=None)

    def encode_chunked(self, x: torch.Tensor, chunk_seconds: float = 10.,
                       overlap_seconds: float = 1.) -> EncodeResult:
        """24 kHz: windows with context (see CompressionModel). 48 kHz: the package already works in
        1 s segments, so this is :meth:`encode`."""
        if self.model.segment is not None:
            return self.encode(x)
        return super().encode_chunked(x, chunk_seconds, overlap_seconds)

    def decode_chunked(self, codes: torch.Tensor, scale: tp.Optional[torch.Tensor] = None,
                       chunk_seconds: float = 10., overlap_seconds: float = 1.) -> torch.Tensor:
        """24 kHz: windows with context (see CompressionModel). 48 kHz: :meth:`decode` (segment-wise)."""
        if self.model.segment is not None:
            return self.decode(codes, scale)
        return super().decode_chunked(codes, scale, chunk_seconds, overlap_seconds)


def get_pretrained_model(name: str, repository: tp.Optional[tp.Union[str, Path]] = None,
                         device: tp.Union[str, torch.device] = 'cpu') -> EncodecPretrainedModel:
    """Pretrained model `name` ('encodec_24khz' | 'encodec_48khz') in eval mode on `device`."""
    return EncodecPretrainedModel.from_name(name, repository).to(device)
