import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

from audiogen_lab.metrics.embedders import (CLAPEmbedder, LogMelStatsEmbedder, ModelEmbedder, VGGish,
                                            VGGishEmbedder, get_embedder, vggish_mel_matrix)
from audiogen_lab.metrics.fad import FrechetAudioDistance
from audiogen_lab.utils.checkpoint import CheckpointLoadError

SR = 16000


def _tones(batch: int, seconds: float, seed: int, sample_rate: int = SR, channels: int = 1) -> torch.Tensor:
    """Sums of two harmonics of a random pitch in [200, 800] Hz, random gain: `[B, C, T]`."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    f0 = 200 + 600 * torch.rand(batch, 1, 1, generator=generator)
    gain = 0.2 + 0.3 * torch.rand(batch, 1, 1, generator=generator)
    wav = gain * (torch.sin(2 * math.pi * f0 * t) + 0.5 * torch.sin(4 * math.pi * f0 * t))
    return wav.expand(-1, channels, -1).contiguous()


def _noise(batch: int, seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, 1, round(seconds * SR), generator=generator)


def test_logmel_is_deterministic_with_expected_shape():
    embedder = LogMelStatsEmbedder()
    wav = _tones(2, 1.0, seed=0)
    first, second = embedder.embed(wav, SR), embedder.embed(wav, SR)
    frames = 1 + (SR - 512) // 160
    assert first.shape == (2 * frames, 64)
    assert torch.equal(first, second)
    assert torch.isfinite(first).all()


def test_logmel_window_pooling():
    embedder = LogMelStatsEmbedder(pooling="window")
    emb = embedder.embed(_tones(2, 2.5, seed=1), SR)
    assert embedder.dim == 128 and emb.shape == (2 * 2, 128)
    assert (emb[:, 64:] >= 0).all()  # standard deviations
    with pytest.raises(ValueError, match="too short"):
        embedder.embed(_tones(1, 0.5, seed=1), SR)


def test_resampling_and_downmix():
    embedder = LogMelStatsEmbedder()
    one_second = embedder.embed(_tones(1, 1.0, seed=2, sample_rate=48000), 48000)
    two_seconds = embedder.embed(_tones(1, 2.0, seed=2, sample_rate=48000), 48000)
    assert one_second.shape[0] == 1 + (SR - 512) // 160
    assert two_seconds.shape[0] == 1 + (2 * SR - 512) // 160
    native = embedder.embed(_tones(1, 1.0, seed=2), SR)
    assert (one_second - native).abs().median() < 0.05  # same tone, resampled from 48 kHz
    stereo = _tones(2, 1.0, seed=3, channels=2)
    assert torch.allclose(embedder.embed(stereo, SR), embedder.embed(stereo[:, :1], SR), atol=1e-5)


def test_logmel_fad_separates_tones_from_noise():
    embedder = LogMelStatsEmbedder(n_mels=32)
    tones_a, tones_b = _tones(6, 0.5, seed=4), _tones(6, 0.5, seed=5)
    fad = FrechetAudioDistance(embedder)
    fad.update_real(tones_a, SR)
    fad.update_fake(tones_a, SR)
    assert fad.compute() == pytest.approx(0.0, abs=1e-6)
    fad.reset()
    fad.update_real(tones_a, SR)
    fad.update_fake(tones_b, SR)
    same_generator = fad.compute()
    fad.reset()
    fad.update_real(tones_a, SR)
    fad.update_fake(_noise(6, 0.5, seed=6), SR)
    against_noise = fad.compute()
    assert against_noise > 3 * same_generator, (against_noise, same_generator)


@pytest.fixture(scope="module")
def vggish_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = VGGish().eval()
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_vggish_loads_a_state_dict_and_embeds(vggish_checkpoint):
    model, path = vggish_checkpoint
    embedder = get_embedder("vggish", checkpoint=path)
    assert isinstance(embedder, VGGishEmbedder)
    wav = _tones(1, 1.0, seed=7, sample_rate=48000)  # resampled to 16 kHz: one 0.96 s example
    emb = embedder.embed(wav, 48000)
    assert emb.shape == (1, 128) and torch.isfinite(emb).all()
    # Loaded weights give exactly the embeddings of the in-memory network.
    assert torch.equal(emb, VGGishEmbedder(model).embed(wav, 48000))


def test_vggish_front_end():
    weights = vggish_mel_matrix()
    assert weights.shape == (257, 64)
    assert (weights >= 0).all() and (weights[0] == 0).all()
    assert (weights.sum(dim=0) > 0).all()
    peaks = weights.argmax(dim=0)
    assert (peaks[1:] >= peaks[:-1]).all()  # bands ordered by frequency
    low_bin, high_bin = int(np.ceil(125 / (8000 / 256))), int(7500 / (8000 / 256))
    assert weights[:low_bin].sum() == 0 and weights[high_bin + 1:].sum() == 0
    front_end = VGGishEmbedder(nn.Identity())  # type: ignore[arg-type]
    assert front_end.log_mel_examples(_tones(3, 1.5, seed=8)).shape == (3, 1, 96, 64)
    assert front_end.log_mel_examples(_tones(2, 3.0, seed=8)).shape == (2 * 3, 1, 96, 64)


def test_vggish_checkpoint_with_missing_keys_names_the_file(tmp_path):
    with torch.device("meta"):
        layout = VGGish().state_dict()
    state = {k: torch.zeros(v.shape) for k, v in layout.items() if k.startswith("features.")}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken-vggish.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointLoadError, match="broken-vggish.pth") as info:
        VGGishEmbedder.from_checkpoint(path)
    assert "embeddings.0.weight" in str(info.value) and "extra.weight" in str(info.value)


def test_vggish_pca_params(vggish_checkpoint, tmp_path):
    model, path = vggish_checkpoint
    wav = _tones(1, 1.0, seed=9)
    plain = VGGishEmbedder(model).embed(wav, SR)
    permutation = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    means = torch.linspace(-1, 1, 128)
    params = tmp_path / "pca.npz"
    np.savez(params, pca_eigen_vectors=np.eye(128, dtype=np.float32)[permutation.numpy()],
             pca_means=means.numpy()[:, None])
    projected = VGGishEmbedder.from_checkpoint(path, pca_params=params).embed(wav, SR)
    assert torch.allclose(projected, (plain - means)[:, permutation], atol=1e-5)
    np.savez(params, pca_means=means.numpy())
    with pytest.raises(KeyError, match="pca.npz"):
        VGGishEmbedder.from_checkpoint(path, pca_params=params)


def test_clap_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-clap.pt"):
        CLAPEmbedder.from_checkpoint(tmp_path / "no-clap.pt")


@pytest.mark.skipif(importlib.util.find_spec("laion_clap") is not None, reason="laion_clap is installed")
def test_clap_without_the_package_says_how_to_install(tmp_path):
    path = tmp_path / "clap.pt"
    path.write_bytes(b"not used")
    with pytest.raises(ImportError, match="pip install laion_clap"):
        get_embedder("clap", checkpoint=path)


class _TinyEncoder(nn.Module):
    """Frame embeddings `[B, 4, T / 100]` from a strided convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=100, stride=100)
        self.dropout = nn.Dropout(0.5)
        self.modes: list = []

    def embed_audio(self, wav: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.dropout(self.conv(wav))


def test_model_embedder_uses_embed_audio_in_eval_without_grad():
    model = _TinyEncoder().train()
    embedder = ModelEmbedder(model, sample_rate=8000)
    wav = _tones(2, 0.5, seed=10)  # 16 kHz -> 0.5 s at 8 kHz = 4000 samples = 40 frames
    emb = embedder.embed(wav, SR)
    assert emb.shape == (2 * 40, 4) and not emb.requires_grad
    assert torch.equal(emb, embedder.embed(wav, SR))
    assert model.modes == [False, False] and model.training
    pooled = ModelEmbedder(model, sample_rate=8000, fn=lambda x: model.conv(x).mean(dim=-1)).embed(wav, SR)
    assert torch.allclose(pooled, emb.view(2, 40, 4).mean(dim=1), atol=1e-6)


def test_model_embedder_needs_embed_audio_or_fn():
    with pytest.raises(ValueError, match="embed_audio"):
        ModelEmbedder(nn.Linear(2, 2), sample_rate=SR)


def test_registry_errors_name_the_config_key():
    assert isinstance(get_embedder("logmel", n_mels=32), LogMelStatsEmbedder)
    with pytest.raises(KeyError, match="fad.embedder"):
        get_embedder("openl3")
    for name in ("vggish", "clap"):
        with pytest.raises(ValueError, match="fad.embedder"):
            get_embedder(name)
