"""Streaming causal codecs: streamed codes and audio equal the offline ones, chunk size by chunk size."""
from __future__ import annotations

import typing as tp
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.encodec import EncodecModel
from audiogen_lab.models.soundstream import SoundStreamModel
from tests.models.test_encodec import _audio, _initialised, _tiny_model

SOUNDSTREAM_DEBUG = Path(__file__).resolve().parents[2] / 'config' / 'model' / 'soundstream' / 'debug.yaml'
ATOL = 1e-4


def _soundstream(*overrides: str) -> SoundStreamModel:
    """The debug SoundStream (hop 160 at 16 kHz, 8 codebooks of 64), codebooks initialised on 1 s of noise
    so that no two codewords are equal (a tie could pick either index)."""
    cfg = OmegaConf.merge(OmegaConf.load(SOUNDSTREAM_DEBUG), {'sample_rate': 16000, 'channels': 1},
                          OmegaConf.from_dotlist(list(overrides)))
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    assert isinstance(model, SoundStreamModel)
    with torch.no_grad():
        model.train()(0.1 * torch.randn(4, 1, 16000, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def _stream(model: EncodecModel, x: torch.Tensor, frames: tp.Sequence[int]) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Encode `x` [B, C, T] in chunks of `frames` (cycled) frames inside one streaming block, decoding
    each chunk's codes as they come; returns the concatenated codes [B, K, T'] and audio [B, C, T]."""
    hop, codes, audio = model.hop_length, [], []
    start, index = 0, 0
    with torch.no_grad(), model.streaming(batch_size=x.shape[0]):
        assert model.is_streaming
        while start < x.shape[-1]:
            size = frames[index % len(frames)] * hop
            chunk_codes, scale = model.encode(x[..., start:start + size])
            assert scale is None and chunk_codes.shape[-1] == min(size, x.shape[-1] - start) // hop
            codes.append(chunk_codes)
            audio.append(model.decode(chunk_codes))
            start, index = start + size, index + 1
    assert not model.is_streaming
    return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)


def _offline(model: EncodecModel, x: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        codes, _ = model.encode(x)
        return codes, model.decode(codes)


def _assert_streams_like_offline(model: EncodecModel, x: torch.Tensor, frames: tp.Sequence[int]) -> None:
    codes, audio = _offline(model, x)
    streamed_codes, streamed_audio = _stream(model, x, frames)
    assert torch.equal(streamed_codes, codes)
    assert streamed_audio.shape == audio.shape
    torch.testing.assert_close(streamed_audio, audio, rtol=0, atol=ATOL)


CHUNK_FRAMES = [[1], [3], [2, 5, 1], [1000]]


@pytest.mark.parametrize('frames', CHUNK_FRAMES)
def test_causal_encodec_with_lstm_streams_like_offline(frames):
    model = _initialised(_tiny_model(causal=True, lstm=1))
    _assert_streams_like_offline(model, _audio(batch=2, seconds=0.4, seed=11), frames)  # 40 frames


@pytest.mark.parametrize('frames', CHUNK_FRAMES)
@pytest.mark.parametrize('transformer_layers', [0, 1])
def test_soundstream_streams_like_offline(frames, transformer_layers):
    # a window of 4 frames: chunks of one frame need the transformer's past from earlier chunks
    model = _soundstream(f'soundstream_net.transformer.num_layers={transformer_layers}',
                         'soundstream_net.transformer.window=4')
    assert (model.encoder.transformer is not None) == bool(transformer_layers)
    x = 0.1 * torch.randn(2, 1, 160 * 17, generator=torch.Generator().manual_seed(2))
    _assert_streams_like_offline(model, x, frames)


def test_decoded_chunks_are_final_offline_samples():
    """Each decoded chunk is exactly the offline audio of its frames: nothing awaits a later chunk."""
    model = _initialised(_tiny_model(causal=True, lstm=1))
    x = _audio(batch=1, seconds=0.2, seed=12)
    codes, audio = _offline(model, x)
    hop = model.hop_length
    with torch.no_grad(), model.streaming():
        for frame in range(codes.shape[-1]):
            torch.testing.assert_close(model.decode(codes[..., frame:frame + 1]),
                                       audio[..., frame * hop:(frame + 1) * hop], rtol=0, atol=ATOL)


def test_state_resets_between_sessions_and_on_reset():
    model = _initialised(_tiny_model(causal=True, lstm=1))
    first, second = _audio(batch=1, seconds=0.2, seed=13), _audio(batch=1, seconds=0.2, seed=14)
    _stream(model, first, [3])
    _assert_streams_like_offline(model, second, [3])  # a new block starts from silence
    codes, _ = _offline(model, second)
    with torch.no_grad(), model.streaming():
        model.encode(first)
        continued, _ = model.encode(second)  # heard as the continuation of `first`
        model.reset_streaming()
        restarted, _ = model.encode(second)
    assert not torch.equal(continued, codes)
    assert torch.equal(restarted, codes)


def test_streaming_refusals():
    with pytest.raises(ValueError, match='causal=False'):
        with _tiny_model(causal=False).streaming():
            pass
    mislabelled = _tiny_model(causal=False)
    mislabelled.causal = True  # the flag says causal, the layers are not
    with pytest.raises(ValueError, match=r'encoder\.model\.0 \(StreamableConv1d\) is not causal'):
        with mislabelled.streaming():
            pass
    with pytest.raises(ValueError, match='causal'):
        with _soundstream('soundstream.causal=false').streaming():
            pass
    model = _tiny_model(causal=True).eval()
    with torch.no_grad(), model.streaming(batch_size=2):
        with pytest.raises(ValueError, match=r'whole frames: 12 samples.*hop \(8 samples\)'):
            model.encode(torch.zeros(2, 1, 12))
        with pytest.raises(ValueError, match='batch size 1'):
            model.encode(torch.zeros(1, 1, 16))
    with torch.no_grad():  # offline after the block: no state, any length
        assert model.encode(torch.zeros(2, 1, 12))[0].shape[-1] == 2
