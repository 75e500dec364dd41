"""Audio embedders for the Fréchet Audio Distance: audio `[B, C, T]` at any rate -> embeddings `[N, D]`.

Every embedder resamples (julius) and converts channels (mono by default) before its own `forward`.
None downloads anything: weights are read from checkpoint files the user supplies.

- ``logmel`` :class:`LogMelStatsEmbedder`: no weights, log-mel frames or 1 s mean+std windows.
- ``vggish`` :class:`VGGishEmbedder`: the 2017 AudioSet VGGish network, from a torch state dict file.
- ``clap`` :class:`CLAPEmbedder`: LAION-CLAP audio tower (needs the optional `laion_clap` package).
- ``mulan``: the audio tower of a trained MuLaN (`fad.checkpoint=//sig/SIG`), through :class:`ModelEmbedder`.
- :class:`ModelEmbedder`: any audiogen_lab model with `embed_audio` (e.g. MuLaN), or a function.

In a config, `fad.embedder` names one of the registry keys and `fad.checkpoint` the weights file.
"""
from __future__ import annotations

import abc
import itertools
import typing as tp
from pathlib import Path

import julius
import numpy as np
import torch
import torchaudio
from einops import rearrange
from torch import nn

from ..utils.checkpoint import CheckpointLoadError, load_checkpoint

PathLike = tp.Union[str, Path]


class AudioEmbedder(nn.Module, abc.ABC):
    """Base class: :meth:`embed` takes audio `[B, C, T]` at any `sample_rate` and returns `[N, D]`.

    Subclasses set `sample_rate` (the rate `forward` expects), `channels` (1: downmix to mono) and
    `dim` (`D`, or None when only known after the first call), and implement
    `forward(wav [B, channels, T] at self.sample_rate) -> [N, D]` (N = B for clip embeddings, or
    several frames / windows per clip).
    """
    sample_rate: int
    channels: int = 1
    dim: tp.Optional[int] = None

    @property
    def device(self) -> torch.device:
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    def prepare(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio `[B, C, T]` at `sample_rate` -> float32 `[B, self.channels, T']` at `self.sample_rate`,
        on the embedder's device."""
        assert wav.dim() == 3, f"Expected audio [B, C, T], got shape {tuple(wav.shape)}."
        wav = wav.to(device=self.device, dtype=torch.float32)
        channels = wav.shape[1]
        if channels != self.channels:
            if self.channels == 1:
                wav = wav.mean(dim=1, keepdim=True)
            elif channels == 1:
                wav = wav.expand(-1, self.channels, -1)
            else:
                raise ValueError(f"{type(self).__name__} expects {self.channels} or 1 channel(s), got {channels}.")
        if int(sample_rate) != int(self.sample_rate):
            wav = julius.resample_frac(wav, int(sample_rate), int(self.sample_rate))
        return wav

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Embeddings `[N, D]` of audio `[B, C, T]` sampled at `sample_rate`."""
        embeddings = self(self.prepare(wav, sample_rate))
        assert embeddings.dim() == 2, (
            f"{type(self).__name__}.forward must return [N, D], got shape {tuple(embeddings.shape)}.")
        return embeddings


def _check_length(frames: int, needed: int, what: str, sample_rate: int, samples: int) -> None:
    if frames < needed:
        raise ValueError(f"Audio of {samples / sample_rate:.3f} s is too short for {what}; "
                         "pass longer clips.")


class LogMelStatsEmbedder(AudioEmbedder):
    """Weight-free embedder: natural-log mel spectrogram frames (torchaudio, float32).

    Args:
        sample_rate: rate the audio is resampled to.
        n_mels, n_fft, win_length, hop_length, f_min, f_max: mel spectrogram settings (no centering,
            so a clip of T samples gives `1 + (T - n_fft) // hop_length` frames).
        pooling: "frame" -> one row per frame, `D = n_mels`; "window" -> one row per non-overlapping
            window of `window_seconds` (a trailing partial window is dropped), holding the mean and
            standard deviation of the frames, `D = 2 * n_mels`.
        floor: added to the mel power before the log.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, f_min: float = 0.0, f_max: tp.Optional[float] = None,
                 pooling: str = "frame", window_seconds: float = 1.0, floor: float = 1e-6) -> None:
        super().__init__()
        if pooling not in ("frame", "window"):
            raise ValueError(f"LogMelStatsEmbedder: pooling must be 'frame' or 'window', got {pooling!r}.")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.pooling = pooling
        self.floor = floor
        self.window_frames = max(1, round(window_seconds * sample_rate / hop_length))
        self.dim = n_mels if pooling == "frame" else 2 * n_mels
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, f_min=f_min,
            f_max=f_max, n_mels=n_mels, center=False, power=2.0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono audio `[B, 1, T]` -> `[B * frames, n_mels]` or `[B * windows, 2 * n_mels]`."""
        _check_length(wav.shape[-1], self.n_fft, f"one {self.n_fft}-sample mel frame", self.sample_rate,
                      wav.shape[-1])
        logmel = torch.log(self.melspec(wav[:, 0].float()) + self.floor)  # [B, M, F]
        if self.pooling == "frame":
            return rearrange(logmel, "b m f -> (b f) m")
        windows = logmel.shape[-1] // self.window_frames
        _check_length(windows, 1, f"one {self.window_frames}-frame pooling window", self.sample_rate,
                      wav.shape[-1])
        grouped = rearrange(logmel[..., :windows * self.window_frames], "b m (w f) -> (b w) m f",
                            f=self.window_frames)
        return torch.cat([grouped.mean(dim=-1), grouped.std(dim=-1, unbiased=False)], dim=-1)


# VGGish front end: 16 kHz, 25 ms periodic-Hann frames every 10 ms, 512-point FFT magnitude,
# 64 mel bands over 125-7500 Hz (HTK mel scale, triangles in the mel domain), log(mel + 0.01),
# non-overlapping examples of 96 frames (0.96 s).
VGGISH_SAMPLE_RATE = 16000
VGGISH_WINDOW, VGGISH_HOP, VGGISH_FFT = 400, 160, 512
VGGISH_MELS, VGGISH_FMIN, VGGISH_FMAX = 64, 125.0, 7500.0
VGGISH_EXAMPLE_FRAMES = 96
VGGISH_LOG_OFFSET = 0.01
VGGISH_CONV_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
VGGISH_EMBED_DIM = 128


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


def vggish_mel_matrix() -> torch.Tensor:
    """Mel weights `[VGGISH_FFT // 2 + 1, VGGISH_MELS]` of the VGGish front end (DC bin unused)."""
    bins_mel = _hz_to_mel(np.linspace(0.0, VGGISH_SAMPLE_RATE / 2, VGGISH_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(np.array(VGGISH_FMIN)), _hz_to_mel(np.array(VGGISH_FMAX)), VGGISH_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    return torch.from_numpy(weights).float()


class VGGish(nn.Module):
    """VGGish network: log-mel examples `[N, 1, 96, 64]` (frames x bands) -> embeddings `[N, 128]`.

    The parameter names follow the widely shared PyTorch port (`vggish-10086976.pth`):
    `features.{0,3,6,8,11,13}.{weight,bias}` (3x3 convolutions 1->64->128->256->256->512->512, a 2x2
    max pool after the 1st, 2nd, 4th and 6th) and `embeddings.{0,2,4}.{weight,bias}` (fully connected
    12288->4096->4096->128, each followed by a ReLU; `final_relu=False` drops the last one). The
    convolution output `[N, 512, 6, 4]` is flattened channels-last, as in the original release.
    """

    def __init__(self, final_relu: bool = True) -> None:
        super().__init__()
        layers: tp.List[nn.Module] = []
        in_channels = 1
        for item in VGGISH_CONV_CHANNELS:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, VGGISH_EMBED_DIM), nn.ReLU(inplace=True) if final_relu else nn.Identity())

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        features = self.features(examples)
        return self.embeddings(rearrange(features, "n c h w -> n (h w c)"))


def _read_pca_params(path: PathLike) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """`pca_eigen_vectors [128, 128]` and `pca_means [128]` from an `.npz` or a torch file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VGGish PCA parameters file {path} does not exist.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            content: tp.Dict[str, tp.Any] = {key: archive[key] for key in archive.files}
    else:
        content = load_checkpoint(path)
    missing = [key for key in ("pca_eigen_vectors", "pca_means") if key not in content]
    if missing:
        raise KeyError(f"VGGish PCA parameters file {path} lacks key(s) {missing}; "
                       "expected 'pca_eigen_vectors' [128, 128] and 'pca_means' [128].")
    vectors = torch.as_tensor(np.asarray(content["pca_eigen_vectors"]), dtype=torch.float32)
    means = torch.as_tensor(np.asarray(content["pca_means"]), dtype=torch.float32).reshape(-1)
    if vectors.shape != (VGGISH_EMBED_DIM, VGGISH_EMBED_DIM) or means.shape != (VGGISH_EMBED_DIM,):
        raise ValueError(f"VGGish PCA parameters in {path} have shapes {tuple(vectors.shape)} and "
                         f"{tuple(means.shape)}; expected (128, 128) and (128,).")
    return vectors, means


class VGGishEmbedder(AudioEmbedder):
    """VGGish embeddings `[N, 128]`, one per 0.96 s example (a trailing partial example is dropped).

    Args:
        model: the network; build it with :meth:`from_checkpoint` to load trained weights.
        pca_eigen_vectors, pca_means: optional PCA `[128, 128]` and `[128]` applied as
            `(emb - means) @ vectors.T`; the 8-bit quantization of the original release is not applied,
            so embeddings stay continuous for the FAD.
    """
    sample_rate = VGGISH_SAMPLE_RATE
    dim = VGGISH_EMBED_DIM

    def __init__(self, model: tp.Optional[VGGish] = None, pca_eigen_vectors: tp.Optional[torch.Tensor] = None,
                 pca_means: tp.Optional[torch.Tensor] = None, batch_size: int = 64) -> None:
        super().__init__()
        self.model = (model if model is not None else VGGish()).eval()
        self.batch_size = batch_size
        self.register_buffer("mel_matrix", vggish_mel_matrix(), persistent=False)
        self.register_buffer("window", torch.hann_window(VGGISH_WINDOW, periodic=True), persistent=False)
        if (pca_eigen_vectors is None) != (pca_means is None):
            raise ValueError("VGGishEmbedder: give both pca_eigen_vectors and pca_means, or neither.")
        self.pca_eigen_vectors: tp.Optional[torch.Tensor]
        self.pca_means: tp.Optional[torch.Tensor]
        self.register_buffer("pca_eigen_vectors", pca_eigen_vectors, persistent=False)
        self.register_buffer("pca_means", pca_means, persistent=False)

    @classmethod
    def from_checkpoint(cls, path: PathLike, pca_params: tp.Optional[PathLike] = None, final_relu: bool = True,
                        device: tp.Union[str, torch.device] = "cpu", batch_size: int = 64) -> "VGGishEmbedder":
        """Load a VGGish state dict file (keys documented on :class:`VGGish`), optionally with PCA
        parameters (`.npz` or torch file with `pca_eigen_vectors` and `pca_means`)."""
        path = Path(path)
        state = load_checkpoint(path)
        if isinstance(state, dict) and set(state) == {"state_dict"}:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointLoadError(f"VGGish checkpoint {path} must hold a state dict, got {type(state).__name__}.")
        with torch.device("meta"):
            model = VGGish(final_relu=final_relu)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise CheckpointLoadError(
                f"VGGish checkpoint {path} does not match the expected layout (features.{{0,3,6,8,11,13}} and "
                f"embeddings.{{0,2,4}}, each .weight and .bias): missing keys {missing}, unexpected keys "
                f"{unexpected}.")
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as err:
            raise CheckpointLoadError(f"VGGish checkpoint {path} has tensors of the wrong shape: {err}") from err
        pca = _read_pca_params(pca_params) if pca_params is not None else (None, None)
        return cls(model, *pca, batch_size=batch_size).to(device)

    def log_mel_examples(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono 16 kHz audio `[B, 1, T]` -> log-mel examples `[B * E, 1, 96, 64]`, E examples per clip."""
        samples = wav.shape[-1]
        _check_length(samples, VGGISH_WINDOW, "one VGGish frame", self.sample_rate, samples)
        frames = wav[:, 0].float().unfold(-1, VGGISH_WINDOW, VGGISH_HOP) * self.window  # [B, F, 400]
        magnitude = torch.fft.rfft(frames, n=VGGISH_FFT).abs()  # [B, F, 257]
        logmel = torch.log(magnitude @ self.mel_matrix + VGGISH_LOG_OFFSET)  # [B, F, 64]
        examples = logmel.shape[1] // VGGISH_EXAMPLE_FRAMES
        _check_length(examples, 1, "one 0.96 s VGGish example", self.sample_rate, samples)
        logmel = logmel[:, :examples * VGGISH_EXAMPLE_FRAMES]
        return rearrange(logmel, "b (e f) m -> (b e) 1 f m", f=VGGISH_EXAMPLE_FRAMES)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono audio `[B, 1, T]` at 16 kHz -> `[B * E, 128]`."""
        examples = self.log_mel_examples(wav)
        embeddings = torch.cat([self.model(chunk) for chunk in examples.split(self.batch_size)])
        if self.pca_eigen_vectors is not None and self.pca_means is not None:
            embeddings = (embeddings - self.pca_means) @ self.pca_eigen_vectors.T
        return embeddings


class CLAPEmbedder(AudioEmbedder):
    """LAION-CLAP audio embeddings `[B, 512]` (one per clip) at 48 kHz.

    Needs the optional `laion_clap` package (`pip install laion_clap`), which is not a dependency of
    audiogen_lab. Audio is clamped to [-1, 1] and rounded to 16-bit levels before embedding, as the
    CLAP models were trained on 16-bit audio.
    """
    sample_rate = 48000
    dim = 512

    def __init__(self, clap_module: nn.Module) -> None:
        super().__init__()
        self.clap = clap_module.eval()

    @classmethod
    def from_checkpoint(cls, path: PathLike, enable_fusion: bool = False, amodel: str = "HTSAT-tiny",
                        device: tp.Union[str, torch.device] = "cpu") -> "CLAPEmbedder":
        """Build `laion_clap.CLAP_Module` and load the checkpoint file at `path` (e.g. `630k-audioset-best.pt`;
        music checkpoints need `amodel="HTSAT-base"`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"CLAP checkpoint {path} does not exist; download a LAION-CLAP checkpoint and "
                                    "set fad.checkpoint to its path.")
        try:
            import laion_clap
        except ImportError as err:
            raise ImportError("The CLAP embedder needs the optional `laion_clap` package: run `pip install "
                              f"laion_clap`, then pass the checkpoint file ({path}) again.") from err
        module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device=str(device))
        module.load_ckpt(str(path))
        return cls(module)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono audio `[B, 1, T]` at 48 kHz -> `[B, 512]`."""
        audio = torch.round(wav[:, 0].clamp(-1.0, 1.0) * 32767.0) / 32767.0
        return self.clap.get_audio_embedding_from_data(x=audio, use_tensor=True)


class ModelEmbedder(AudioEmbedder):
    """Embeddings from an audiogen_lab model, in eval mode and without gradients.

    Args:
        model: a module; `model.embed_audio(wav [B, channels, T])` is called unless `fn` is given.
        sample_rate: the rate the model expects.
        fn: optional `fn(wav [B, channels, T]) -> [B, D] or [B, D, T']`, used instead of `embed_audio`.
        channels: channels the model expects (1: downmix to mono).
        dim: embedding size if known in advance.
    Outputs `[B, D]` give one row per clip; frame outputs `[B, D, T']` give `B * T'` rows. The model's
    train/eval mode is restored after each call.
    """

    def __init__(self, model: nn.Module, sample_rate: int,
                 fn: tp.Optional[tp.Callable[[torch.Tensor], torch.Tensor]] = None, channels: int = 1,
                 dim: tp.Optional[int] = None) -> None:
        super().__init__()
        if fn is None and not callable(getattr(model, "embed_audio", None)):
            raise ValueError(f"ModelEmbedder: {type(model).__name__} has no `embed_audio` method; pass `fn`.")
        self.model = model
        self.fn = fn
        self.sample_rate = sample_rate
        self.channels = channels
        self.dim = dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output = self.fn(wav) if self.fn is not None else self.model.embed_audio(wav)  # type: ignore
        finally:
            self.model.train(was_training)
        if output.dim() == 3:
            output = rearrange(output, "b d t -> (b t) d")
        assert output.dim() == 2, f"Model embeddings must be [B, D] or [B, D, T'], got {tuple(output.shape)}."
        return output


def mulan_embedder(checkpoint: tp.Union[str, Path]) -> ModelEmbedder:
    """The audio tower of a trained MuLaN (``//sig/SIG``, an XP folder, a checkpoint or an export)."""
    from ..solvers.mulan import MuLaNSolver
    model = MuLaNSolver.model_from_checkpoint(str(checkpoint))
    return ModelEmbedder(model, sample_rate=model.sample_rate, dim=model.dim)


_CHECKPOINT_EMBEDDERS: tp.Dict[str, tp.Callable[..., AudioEmbedder]] = {
    "vggish": VGGishEmbedder.from_checkpoint,
    "clap": CLAPEmbedder.from_checkpoint,
    "mulan": mulan_embedder,
}
EMBEDDERS = ("logmel", *_CHECKPOINT_EMBEDDERS)


def get_embedder(name: str, checkpoint: tp.Optional[PathLike] = None, **kwargs: tp.Any) -> AudioEmbedder:
    """Embedder named by `fad.embedder` ("logmel", "vggish", "clap" or "mulan"); `checkpoint`
    (`fad.checkpoint`) is the weights file, required for all but "logmel" (for "mulan": ``//sig/SIG`` or a
    MuLaN checkpoint / export). Keyword arguments go to the constructor or `from_checkpoint`."""
    if name == "logmel":
        if checkpoint is not None:
            raise ValueError("fad.embedder=logmel has no weights; leave fad.checkpoint unset.")
        return LogMelStatsEmbedder(**kwargs)
    if name not in _CHECKPOINT_EMBEDDERS:
        raise KeyError(f"Unknown fad.embedder {name!r}; choose one of {list(EMBEDDERS)}.")
    if checkpoint is None:
        raise ValueError(f"fad.embedder={name} needs a weights file: set fad.checkpoint to its path "
                         "(nothing is downloaded).")
    return _CHECKPOINT_EMBEDDERS[name](checkpoint, **kwargs)

