import math

import pytest
import torch

from audiogen_lab.modules.complex_spec import ComplexSpectrogram


def _sine(length: int, freq: float = 440.0, sample_rate: int = 44100, amplitude: float = 0.7) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32) / sample_rate
    return amplitude * torch.sin(2 * math.pi * freq * t + 0.3)


@pytest.mark.parametrize('length', [3, 1000, 5120, 7777, 44100])
def test_round_trip_is_exact_on_noise_and_sine(length):
    spec = ComplexSpectrogram()
    gen = torch.Generator().manual_seed(length)
    noise = torch.rand(2, length, generator=gen) * 2 - 1
    wav = torch.cat([noise, _sine(length)[None]])
    rebuilt = spec.decode(spec.encode(wav), length)
    assert rebuilt.shape == wav.shape
    assert (rebuilt - wav).abs().max() < 1e-4


def test_shape_for_one_second_at_44k():
    spec = ComplexSpectrogram()
    out = spec(torch.zeros(1, 44100))
    # N = ceil(44100 / 512) = 87 frames, the Nyquist bin is dropped: 1024 rows.
    assert out.shape == (1, 2, 1024, 87)
    assert spec.frequency_bins == 1024
    assert spec.num_frames(44100) == 87 and spec.num_frames(65536) == 128
    assert spec.length_for_frames(87) == 87 * 512
    assert spec.decode(out).shape == (1, 87 * 512)


def test_other_fft_size_and_hop():
    spec = ComplexSpectrogram(n_fft=512, hop_length=128)
    wav = torch.randn(3, 1001, generator=torch.Generator().manual_seed(0))
    out = spec.encode(wav)
    assert out.shape == (3, 2, 256, math.ceil(1001 / 128))
    assert (spec.decode(out, 1001) - wav).abs().max() < 1e-4


def test_nyquist_kept_as_extra_row():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64, drop_nyquist=False)
    wav = torch.randn(1, 700, generator=torch.Generator().manual_seed(1))
    out = spec.encode(wav)
    assert out.shape[2] == 129 == spec.frequency_bins
    assert (spec.decode(out, 700) - wav).abs().max() < 1e-4


def test_signal_at_nyquist_survives_the_dropped_bin():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64)
    wav = 0.5 * (-1.0) ** torch.arange(640, dtype=torch.float32)[None]
    out = spec.encode(wav)
    assert out[:, 1, 0].abs().max() > 0.1, "the Nyquist value should sit in the imaginary part of the DC row"
    assert (spec.decode(out, 640) - wav).abs().max() < 1e-4


def test_plain_drop_loses_only_the_nyquist_component():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64, nyquist_in_dc=False)
    sine = _sine(640, freq=1000.0)[None]
    # Only the window leakage of the sine into the Nyquist bin is lost.
    assert (spec.decode(spec.encode(sine), 640) - sine).abs().max() < 1e-3
    nyquist = (-1.0) ** torch.arange(640, dtype=torch.float32)[None]
    assert (spec.decode(spec.encode(nyquist), 640) - nyquist).abs().max() > 0.1


def test_compression_of_a_bin_centred_sinusoid():
    n_fft, hop, amplitude, k = 512, 128, 0.8, 20
    spec = ComplexSpectrogram(n_fft=n_fft, hop_length=hop, alpha=0.65, beta=0.34)
    n = torch.arange(4096, dtype=torch.float64)
    wav = (amplitude * torch.cos(2 * math.pi * k * n / n_fft + 0.4))[None].float()
    stft = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), center=True, pad_mode='constant',
                      return_complex=True)
    frame = 10  # well inside the signal
    c = stft[0, k, frame]
    # A periodic Hann window sums to n_fft / 2, so a bin-centred cosine has |c| = amplitude * n_fft / 4.
    assert c.abs().item() == pytest.approx(amplitude * n_fft / 4, rel=1e-4)
    out = spec.encode(wav)[0, :, k, frame]
    s = torch.complex(out[0], out[1])
    assert s.abs().item() == pytest.approx(0.34 * c.abs().item() ** 0.65, rel=1e-4)
    assert torch.angle(s).item() == pytest.approx(torch.angle(c).item(), abs=1e-4)


def test_zero_input_gives_zeros_and_finite_gradients():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64)
    wav = torch.zeros(2, 500, requires_grad=True)
    out = spec.encode(wav)
    assert torch.all(out == 0)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * weights).sum().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all()

    zero_spec = torch.zeros(1, 2, 128, 8, requires_grad=True)
    rebuilt = spec.decode(zero_spec)
    assert torch.all(rebuilt == 0)
    rebuilt.square().sum().backward()
    assert zero_spec.grad is not None and torch.isfinite(zero_spec.grad).all()


def test_tiny_magnitudes_round_trip_through_the_linear_piece():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64)
    wav = 1e-9 * torch.randn(1, 640, generator=torch.Generator().manual_seed(2))
    rebuilt = spec.decode(spec.encode(wav), 640)
    assert (rebuilt - wav).abs().max() < 1e-12


def test_half_precision_input_gives_float32():
    spec = ComplexSpectrogram(n_fft=256, hop_length=64)
    wav = torch.randn(1, 640, generator=torch.Generator().manual_seed(3))
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        out = spec.encode(wav.bfloat16())
        assert out.dtype == torch.float32
        rebuilt = spec.decode(out.bfloat16(), 640)
    assert rebuilt.dtype == torch.float32
    assert (rebuilt - wav).abs().max() < 0.05


def test_window_is_not_saved_and_bad_arguments_are_refused():
    assert 'window' not in ComplexSpectrogram().state_dict()
    with pytest.raises(AssertionError, match='hop_length'):
        ComplexSpectrogram(n_fft=512, hop_length=256)
    with pytest.raises(AssertionError, match='frequency bins'):
        ComplexSpectrogram(n_fft=256, hop_length=64).decode(torch.zeros(1, 2, 129, 4))
    with pytest.raises(AssertionError, match='B, T'):
        ComplexSpectrogram().encode(torch.zeros(1, 2, 100))
