from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange, reduce, repeat
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.encoder_decoder import EncoderDecoder, call_seed, encode_windows
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.export import export_checkpoint

CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'model' / 'consistency_ae' / 'debug.yaml'


def _cfg():
    return OmegaConf.merge(OmegaConf.load(CONFIG), {'solver': 'compression', 'sample_rate': 16000, 'channels': 1})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope='module')
def cae(one_thread):
    torch.manual_seed(0)
    return get_compression_model(_cfg()).eval()


class FrameModel(CompressionModel):
    """A local continuous model: each latent frame is the mean of its `hop` samples, decoded by repetition."""

    def __init__(self, hop: int = 4, sample_rate: int = 400, channels: int = 1, continuous: bool = True):
        super().__init__()
        self.hop, self._rate, self._channels, self.continuous = hop, sample_rate, channels, continuous

    def forward(self, x):
        raise NotImplementedError

    def encode(self, x):
        x = torch.nn.functional.pad(x, (0, -x.shape[-1] % self.hop))
        return reduce(x, 'b c (t h) -> b c t', 'mean', h=self.hop), None

    def decode(self, codes, scale=None):
        return repeat(codes, 'b c t -> b c (t h)', h=self.hop) + 0.01 * torch.randn(codes.shape[0], 1, 1)

    def decode_latent(self, codes):
        return codes

    channels = property(lambda self: self._channels)
    sample_rate = property(lambda self: self._rate)
    frame_rate = property(lambda self: self._rate / self.hop)
    latent_dim = property(lambda self: self._channels)
    is_continuous = property(lambda self: self.continuous)


def test_numpy_and_tensor_in_same_container_out(cae):
    codec = EncoderDecoder(cae, device='cpu')
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.latent_dim) == (16000, 256, 62.5, 8)
    assert '1 x 16000 Hz <-> 8 x 62.5 frames/s' in repr(codec)
    wav = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 0.1
    for wave, shape in [(wav, (8, 4)), (wav[None], (8, 4)), (np.stack([wav[None]] * 3), (3, 8, 4))]:
        latents = codec.encode(wave)
        assert isinstance(latents, np.ndarray) and latents.dtype == np.float32 and latents.shape == shape
        audio = codec.decode(latents)
        assert isinstance(audio, np.ndarray) and audio.shape == shape[:-2] + (1, 4 * 256)
    tensor = torch.from_numpy(wav).double()
    latents = codec.encode(tensor[None])
    assert isinstance(latents, torch.Tensor) and latents.dtype == torch.float64 and latents.shape == (8, 4)
    torch.testing.assert_close(latents.float(), torch.from_numpy(codec.encode(wav)))
    assert codec.encode(tensor, extract_features=True).shape == (256, 4)
    audio = codec.decode(latents)
    assert isinstance(audio, torch.Tensor) and audio.shape == (1, 1024)


def test_resampling_and_channel_conversion(cae):
    codec = EncoderDecoder(cae, device='cpu')
    wav = torch.randn(2, 22050) * 0.1  # half a second of stereo at 44.1 kHz
    latents = codec.encode(wav, sample_rate=44100)
    assert latents.shape == (8, 32)  # 8000 samples at 16 kHz -> ceil(8000 / 256) frames
    mono = wav.mean(0, keepdim=True)
    torch.testing.assert_close(latents, codec.encode(mono, sample_rate=44100))
    stereo = EncoderDecoder(FrameModel(channels=2), device='cpu')
    torch.testing.assert_close(stereo.encode(torch.ones(1, 8)), torch.ones(2, 2))
    with pytest.raises(ValueError, match='2-channel'):
        stereo.encode(torch.ones(3, 8))
    with pytest.raises(TypeError, match='floats'):
        codec.encode(np.zeros(100, dtype=np.int16))


def test_encode_windows_tile_the_signal():
    for frames, window, context in [(100, 20, 3), (21, 20, 0), (57, 9, 4), (5, 20, 3)]:
        plan = encode_windows(frames, window, context)
        assert [keep for _, _, keep, _ in plan] == [0] + [end for _, _, _, end in plan[:-1]]
        assert plan[-1][3] == frames
        for start, end, keep_start, keep_end in plan:
            assert end - start == min(window, frames) and 0 <= start and end <= frames
            assert keep_start - start >= min(context, keep_start) and end - keep_end >= min(context, frames - keep_end)


@pytest.mark.parametrize('overlap', [0.3, 0.0])
def test_chunked_encode_matches_one_shot(cae, overlap):
    torch.manual_seed(1)
    wav = torch.randn(1, 1, 24000) * 0.1  # 1.5 s: 94 frames, windows of 1 s (62 frames)
    whole = EncoderDecoder(cae, device='cpu', max_chunk_seconds=10).encode(wav)
    chunked = EncoderDecoder(cae, device='cpu', max_chunk_seconds=1.0, overlap_seconds=overlap).encode(wav)
    assert chunked.shape == whole.shape == (1, 8, 94)
    if overlap > 0:
        # the debug encoder attends over the whole window: context brings latents close, never equal
        error = (chunked - whole)[..., 4:-4].norm() / whole[..., 4:-4].norm()
        assert error < 0.15, f"chunked latents differ from one-shot ones by {error:.3f}"


def test_local_model_chunks_exactly():
    """With a model that looks at one frame at a time, chunking changes nothing at all."""
    model = FrameModel()
    wav = torch.randn(2, 1, 803)
    whole = EncoderDecoder(model, device='cpu').encode(wav)
    for overlap in (0.0, 0.05, 0.12):
        codec = EncoderDecoder(model, device='cpu', max_chunk_seconds=0.3, overlap_seconds=overlap, max_batch_size=2)
        torch.testing.assert_close(codec.encode(wav), whole)
        audio = codec.decode(whole, seed=None)
        plain = repeat(whole, 'b c t -> b c (t h)', h=4)
        # each window adds its own offset; the cross-fade keeps the joins within the offsets' range
        assert audio.shape == plain.shape and (audio - plain).abs().max() < 0.05


@pytest.mark.parametrize('frames', [1, 31, 45, 70])
@pytest.mark.parametrize('overlap', [0.0, 0.1])
def test_chunked_decode_length(cae, frames, overlap):
    codec = EncoderDecoder(cae, device='cpu', max_chunk_seconds=0.5, overlap_seconds=overlap)
    audio = codec.decode(torch.rand(8, frames) * 2 - 1)
    assert audio.shape == (1, frames * 256) and torch.isfinite(audio).all()


def test_decode_is_reproducible_by_seed(cae):
    codec = EncoderDecoder(cae, device='cpu', max_chunk_seconds=0.5, overlap_seconds=0.1, seed=3)
    latents = torch.rand(1, 8, 40) * 2 - 1
    first = codec.decode(latents)
    assert torch.equal(first, codec.decode(latents, seed=3))
    assert not torch.allclose(first, codec.decode(latents, seed=4))
    assert not torch.allclose(codec.decode(latents, seed=None), codec.decode(latents, seed=None))
    assert torch.equal(codec.decode(latents[..., :8], steps=2, seed=1), codec.decode(latents[..., :8], steps=2, seed=1))
    assert len({call_seed(3, i) for i in range(100)} | {call_seed(4, 0)}) == 101


def test_bad_settings_and_discrete_models_are_refused(cae):
    with pytest.raises(ValueError, match='discrete'):
        EncoderDecoder(FrameModel(continuous=False), device='cpu')
    with pytest.raises(ValueError, match='overlap_seconds'):
        EncoderDecoder(cae, device='cpu', max_chunk_seconds=0.5, overlap_seconds=0.25)
    codec = EncoderDecoder(cae, device='cpu')
    with pytest.raises(ValueError, match='8 channels'):
        codec.decode(torch.zeros(4, 10))
    with pytest.raises(ValueError, match='takes no steps'):
        EncoderDecoder(FrameModel(), device='cpu').decode(torch.zeros(1, 10), steps=2)


def test_discrete_export_is_refused(tmp_path):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG.parents[1] / 'encodec' / 'debug.yaml'),
                          {'solver': 'compression', 'sample_rate': 16000, 'channels': 1})
    path = _export(tmp_path, cfg, get_compression_model(cfg))
    with pytest.raises(ValueError, match=f'{path}.*discrete'):
        EncoderDecoder(path, device='cpu')


def _export(tmp_path, cfg, model) -> str:
    ckpt = checkpoint.save_checkpoint({'xp.cfg': OmegaConf.to_yaml(cfg), 'xp.sig': 'cae1',
                                       'best_state': {'states': {'model': model.state_dict()}}},
                                      tmp_path / 'checkpoint.th')
    return str(export_checkpoint(ckpt, tmp_path / 'export.th'))


def test_load_from_export_and_checkpoint(tmp_path, cae):
    path = _export(tmp_path, _cfg(), cae)
    wav = torch.randn(1, 3000) * 0.1
    expected = EncoderDecoder(cae, device='cpu').encode(wav)
    for source in (path, tmp_path / 'checkpoint.th'):
        codec = EncoderDecoder(source, device='cpu')
        assert codec.source == str(source) and not codec.model.training
        torch.testing.assert_close(codec.encode(wav), expected)
    latents = rearrange(expected, 'd t -> 1 d t')
    assert torch.equal(codec.decode(latents, seed=0), EncoderDecoder(cae, device='cpu').decode(latents, seed=0))


def test_package_exports_encoder_decoder_lazily():
    import subprocess
    import sys

    import audiogen_lab
    assert audiogen_lab.EncoderDecoder is EncoderDecoder
    code = "import sys, audiogen_lab; assert 'torch' not in sys.modules; print(audiogen_lab.EncoderDecoder.__name__)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'EncoderDecoder'
