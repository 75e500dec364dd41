"""Audio I/O (soundfile) and waveform conversions (channels, julius resampling, normalisation)."""
import pytest
import torch

from audiogen_lab.data.audio import AudioFileInfo, AudioReadError, audio_info, audio_read, audio_write
from audiogen_lab.data.audio_utils import (convert_audio, convert_audio_channels, peak_normalize, resample,
                                           rms_normalize)

SR = 16000
PCM16_STEP = 1 / 32768


def dominant_frequency(wav: torch.Tensor, sample_rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a mono `[T]` signal."""
    spectrum = torch.fft.rfft(wav.double() * torch.hann_window(wav.shape[-1], dtype=torch.float64)).abs()
    return spectrum.argmax().item() * sample_rate / wav.shape[-1]


@pytest.mark.parametrize('ext', ['wav', 'flac'])
def test_lossless_round_trip_keeps_values(tmp_path, make_wave, ext):
    wav = make_wave(440, 0.5, SR, channels=2) + 0.05 * torch.randn(2, SR // 2)
    path = audio_write(tmp_path / 'sub' / f'x.{ext}', wav, SR)
    assert path == tmp_path / 'sub' / f'x.{ext}' and path.is_file()
    out, sr = audio_read(path)
    assert sr == SR and out.dtype == torch.float32 and out.shape == wav.shape
    assert (out - wav).abs().max() <= PCM16_STEP  # only PCM_16 quantisation
    assert audio_info(path) == AudioFileInfo(sample_rate=SR, duration=0.5, channels=2)


@pytest.mark.parametrize('ext', ['ogg', 'mp3'])
def test_lossy_round_trip_keeps_length_and_pitch(tmp_path, make_wave, ext):
    wav = make_wave(440, 1.0, SR)
    path = audio_write(tmp_path / f'x.{ext}', wav, SR)
    out, sr = audio_read(path)
    assert sr == SR and out.shape == (1, SR)
    assert dominant_frequency(out[0], SR) == pytest.approx(440, abs=2)
    assert audio_info(path).duration == pytest.approx(1.0)


def test_mono_1d_input_and_explicit_format(tmp_path, make_wave):
    wav = make_wave(300, 0.25, SR)[0]
    path = audio_write(tmp_path / 'noext', wav, SR, format='flac')
    out, _ = audio_read(path)
    assert out.shape == (1, wav.shape[0])
    assert torch.allclose(out[0], wav, atol=PCM16_STEP)


def test_seek_reads_the_right_frames(tmp_path, make_wave):
    wav = 0.5 * torch.rand(2, SR) - 0.25
    path = audio_write(tmp_path / 'x.wav', wav, SR, subtype='FLOAT')
    out, _ = audio_read(path, seek_time=0.25, duration=0.1)
    assert torch.equal(out, wav[:, 4000:5600])
    rest, _ = audio_read(path, seek_time=0.75)
    assert torch.equal(rest, wav[:, 12000:])


def test_pad_to_requested_duration(tmp_path):
    wav = torch.full((1, SR), 0.25)
    path = audio_write(tmp_path / 'x.wav', wav, SR)
    short, _ = audio_read(path, seek_time=0.9, duration=0.5)
    assert short.shape == (1, 1600)
    padded, _ = audio_read(path, seek_time=0.9, duration=0.5, pad=True)
    assert padded.shape == (1, 8000)
    assert torch.allclose(padded[:, :1600], torch.full((1, 1600), 0.25))
    assert padded[:, 1600:].abs().max() == 0


def test_write_clamps_and_normalises(tmp_path):
    wav = torch.tensor([[0.5, 2.0, -3.0, 0.25]]).repeat(1, 100)
    out, _ = audio_read(audio_write(tmp_path / 'clip.wav', wav, SR, subtype='FLOAT'))
    assert out.max() == 1 and out.min() == -1 and out[0, 0] == 0.5
    out, _ = audio_read(audio_write(tmp_path / 'norm.wav', wav, SR, normalize=True, subtype='FLOAT'))
    assert out.abs().max().item() == pytest.approx(0.99)
    assert out[0, 1].item() == pytest.approx(2.0 * 0.99 / 3.0)


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match='unsupported format'):
        audio_write(tmp_path / 'x.aac', torch.zeros(1, 10), SR)
    with pytest.raises(ValueError, match='NaN'):
        audio_write(tmp_path / 'x.wav', torch.full((1, 10), float('nan')), SR)
    with pytest.raises(ValueError, match=r'\[C, T\]'):
        audio_write(tmp_path / 'x.wav', torch.zeros(1, 1, 10), SR)


def test_unreadable_files_raise_audio_read_error(tmp_path):
    corrupt = tmp_path / 'corrupt.wav'
    corrupt.write_bytes(b'RIFF not really a wave file' * 50)
    for call in (lambda: audio_read(corrupt), lambda: audio_info(corrupt),
                 lambda: audio_read(tmp_path / 'missing.flac')):
        with pytest.raises(AudioReadError) as err:
            call()
        assert isinstance(err.value, RuntimeError)
        assert err.value.path in str(err.value)


def test_truncated_files_raise(tmp_path, make_sine, make_truncated):
    # FLAC keeps claiming the full length: decoding stops early.
    flac = tmp_path / 'cut.flac'
    make_sine(flac, duration=2.0)
    make_truncated(flac, 0.5)
    assert audio_info(flac).duration == 2.0
    audio_read(flac, duration=0.2)  # the start is intact
    with pytest.raises(AudioReadError, match='cut.flac'):
        audio_read(flac)
    # WAV headers are corrected to the remaining bytes: seeking past them fails.
    wav = tmp_path / 'cut.wav'
    make_sine(wav, duration=2.0)
    make_truncated(wav, 0.5)
    with pytest.raises(AudioReadError, match='past the end'):
        audio_read(wav, seek_time=1.5)


def test_convert_channels():
    stereo = torch.randn(3, 2, 50)
    mono = convert_audio_channels(stereo, 1)
    assert torch.allclose(mono[:, 0], (stereo[:, 0] + stereo[:, 1]) / 2)
    back = convert_audio_channels(mono, 2)
    assert back.shape == (3, 2, 50) and torch.equal(back[:, 0], back[:, 1]) and torch.equal(back[:, 0], mono[:, 0])
    assert convert_audio_channels(stereo, 2) is stereo
    with pytest.raises(ValueError, match='3 channels to 2'):
        convert_audio_channels(torch.randn(3, 50), 2)


@pytest.mark.parametrize('from_rate,to_rate', [(16000, 24000), (44100, 16000), (22050, 48000)])
def test_resampling_keeps_frequency_and_level(make_wave, from_rate, to_rate):
    wav = make_wave(1000, 0.5, from_rate)
    out = resample(wav, from_rate, to_rate)
    assert out.shape == (1, int(wav.shape[-1] * to_rate / from_rate))
    assert dominant_frequency(out[0], to_rate) == pytest.approx(1000, abs=3)
    middle = out[0, out.shape[-1] // 4: -out.shape[-1] // 4]
    assert middle.pow(2).mean().sqrt().item() == pytest.approx(0.5 / 2 ** 0.5, rel=0.01)


def test_resampling_removes_content_above_new_nyquist(make_wave):
    high = make_wave(7000, 0.5, 16000)  # above the 4 kHz Nyquist of 8 kHz
    out = resample(high, 16000, 8000)
    assert out[0, 500:-500].abs().max() < 0.01


def test_convert_audio_matches_steps_and_ignores_autocast(make_wave):
    wav = make_wave(500, 0.2, 16000, channels=2)
    out = convert_audio(wav, 16000, 8000, 1)
    expected = resample(wav.mean(dim=0, keepdim=True), 16000, 8000)
    assert out.shape == (1, 1600) and torch.allclose(out, expected, atol=1e-6)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        auto = convert_audio(wav, 16000, 24000, 2)
    assert auto.dtype == torch.float32
    assert torch.allclose(auto, convert_audio(wav, 16000, 24000, 2))
    assert torch.equal(convert_audio(wav, 16000, 16000, 2), wav)


def test_normalisation_helpers():
    wav = torch.tensor([[[0.1, -0.4], [0.2, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    peak = peak_normalize(wav, peak=0.8)
    assert peak[0].abs().max().item() == pytest.approx(0.8) and torch.equal(peak[1], wav[1])
    loud = rms_normalize(torch.randn(2, 1000) * 0.01, target_db=-20, max_peak=None)
    assert loud.pow(2).mean().sqrt().item() == pytest.approx(0.1, rel=1e-4)
    limited = rms_normalize(torch.tensor([[1e-3, 0, 0, 0]]), target_db=0)
    assert limited.abs().max().item() == pytest.approx(1.0)
