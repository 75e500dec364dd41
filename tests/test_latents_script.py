import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiogen_lab.data.latent_dataset import LatentDataset, load_latent_meta, write_latent_files

from .conftest import load_script, tiny_autoencoder_export

CLIPS = {'piano.wav': (16000, 1, 0.4), 'speech.wav': (16000, 2, 0.25), 'strings.wav': (22050, 1, 0.3)}


latents_script = load_script('latents')


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope='module')
def export(tmp_path_factory) -> str:
    """A tiny consistency autoencoder (random weights) exported like a trained one."""
    return tiny_autoencoder_export(tmp_path_factory.mktemp('model'))


@pytest.fixture
def audio_folder(tmp_path) -> Path:
    folder = tmp_path / 'audio'
    (folder / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (rate, channels, seconds) in CLIPS.items():
        sf.write(folder / 'sub' / name if name == 'strings.wav' else folder / name,
                 0.1 * rng.standard_normal((int(seconds * rate), channels)), rate)
    (folder / 'broken.wav').write_bytes(b'RIFF....WAVEfmt this is not audio')
    return folder


def _frames(rate: int, seconds: float) -> int:
    return math.ceil(int(seconds * rate) * 16000 // rate / 256)


def test_encode_then_decode_a_folder(export, audio_folder, tmp_path, capsys):
    out = tmp_path / 'latents'
    code = latents_script.main(['encode', export, str(audio_folder), str(out), '--max-chunk-seconds', '0.2',
                                '--overlap-seconds', '0.05', '--dtype', 'float16'])
    assert code == 0
    captured = capsys.readouterr()
    assert 'Encoded 3 files' in captured.out and '1 files skipped' in captured.out
    assert 'broken.wav' in captured.err
    with pytest.raises(FileExistsError, match='--overwrite'):
        latents_script.main(['encode', export, str(audio_folder), str(out)])

    meta, files = load_latent_meta(out)
    assert (meta.model, meta.dim, meta.frame_rate, meta.sample_rate) == (export, 8, 62.5, 16000)
    frames = {Path(f['source']).name: f['frames'] for f in files}
    assert frames == {name: _frames(rate, seconds) for name, (rate, _, seconds) in CLIPS.items()}
    arrays = [np.load(out / f['file']) for f in files]
    assert all(a.dtype == np.float16 and a.shape[0] == 8 for a in arrays)
    values = np.concatenate(arrays, axis=1).astype(np.float64)
    extra = meta.extra
    assert extra['hop_length'] == 256 and extra['frames'] == values.shape[1]
    np.testing.assert_allclose(extra['latent_mean'], values.mean(axis=1), atol=1e-3)
    np.testing.assert_allclose(extra['latent_std'], values.std(axis=1), atol=1e-3)
    assert extra['latent_scale'] == pytest.approx(values.std(), abs=1e-3) and extra['latent_scale'] > 0

    dataset = LatentDataset(out, segment_duration=None, shuffle=False)
    assert len(dataset) == 3 and dataset[0]['latents'].shape == (8, files[0]['frames'])

    decoded = tmp_path / 'decoded'
    assert latents_script.main(['decode', export, str(out), str(decoded), '--seed', '1',
                                '--max-chunk-seconds', '0.2', '--overlap-seconds', '0.05']) == 0
    assert 'Decoded 3 latent files' in capsys.readouterr().out
    for name, count in frames.items():
        info = sf.info(decoded / name)
        assert (info.frames, info.samplerate, info.channels) == (count * 256, 16000, 1)
    again = tmp_path / 'again'
    latents_script.main(['decode', export, str(out), str(again), '--seed', '1', '--max-chunk-seconds', '0.2',
                         '--overlap-seconds', '0.05'])
    np.testing.assert_array_equal(sf.read(again / 'piano.wav')[0], sf.read(decoded / 'piano.wav')[0])


def test_decode_refuses_latents_of_another_model(export, tmp_path):
    other = tmp_path / 'other'
    write_latent_files(other, [np.zeros((8, 5), np.float32)], {'model': '//sig/abc', 'frame_rate': 62.5, 'dim': 8})
    with pytest.raises(ValueError, match=r"meta.json says its latents come from '//sig/abc'"):
        latents_script.main(['decode', export, str(other), str(tmp_path / 'out')])
    assert latents_script.main(['decode', export, str(other), str(tmp_path / 'out'), '--ignore-model']) == 0
    assert sf.info(tmp_path / 'out' / 'latent_00000.wav').frames == 5 * 256
    wrong = tmp_path / 'wrong'
    write_latent_files(wrong, [np.zeros((4, 5), np.float32)], {'model': export, 'frame_rate': 62.5, 'dim': 4})
    with pytest.raises(ValueError, match=r"meta.json holds 4-channel latents"):
        latents_script.main(['decode', export, str(wrong), str(tmp_path / 'out')])
    rate = tmp_path / 'rate'
    write_latent_files(rate, [np.zeros((8, 5), np.float32)], {'model': export, 'frame_rate': 50, 'dim': 8})
    with pytest.raises(ValueError, match=r"meta.json holds latents at 50.0 frames/s"):
        latents_script.main(['decode', export, str(rate), str(tmp_path / 'out')])


def test_encode_reports_an_empty_folder(export, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    assert latents_script.main(['encode', export, str(tmp_path / 'empty'), str(tmp_path / 'out')]) == 1
    assert 'No audio file' in capsys.readouterr().err


def test_stereo_encode_codes_each_channel_and_decodes_to_stereo(export, tmp_path, capsys):
    audio = tmp_path / 'audio'
    audio.mkdir()
    rng = np.random.default_rng(1)
    left, right = 0.1 * rng.standard_normal(4000), 0.3 * rng.standard_normal(4000)
    sf.write(audio / 'duo.wav', np.stack([left, right], axis=1), 16000)
    sf.write(audio / 'solo.wav', left[:, None], 16000)
    out = tmp_path / 'latents'
    args = ['--max-chunk-seconds', '0.2', '--overlap-seconds', '0.05']
    assert latents_script.main(['encode', export, str(audio), str(out), '--stereo'] + args) == 0
    meta, files = load_latent_meta(out)
    assert (meta.dim, meta.channels) == (16, 2)
    by_name = {Path(f['source']).name: np.load(out / f['file']) for f in files}
    mono = tmp_path / 'mono'
    assert latents_script.main(['encode', export, str(audio), str(mono)] + args) == 0
    mono_meta, mono_files = load_latent_meta(mono)
    assert mono_meta.channels == 1 and mono_meta.dim == 8
    solo = next(np.load(mono / f['file']) for f in mono_files if f['source'].endswith('solo.wav'))
    # rows 0-7 are the left channel's latents, rows 8-15 the right's; a mono file gives both halves equal
    np.testing.assert_allclose(by_name['solo.wav'][:8], solo, atol=1e-5)
    np.testing.assert_allclose(by_name['solo.wav'][8:], solo, atol=1e-5)
    np.testing.assert_allclose(by_name['duo.wav'][:8], solo, atol=1e-5)
    assert not np.allclose(by_name['duo.wav'][8:], solo, atol=1e-3)
    decoded = tmp_path / 'decoded'
    assert latents_script.main(['decode', export, str(out), str(decoded)] + args) == 0
    info = sf.info(decoded / 'duo.wav')
    assert (info.channels, info.frames) == (2, files[0]['frames'] * 256)
    wav = sf.read(decoded / 'solo.wav')[0]
    np.testing.assert_allclose(wav[:, 0], wav[:, 1], atol=1e-5)  # equal latents, same decoding seed


def test_latent_dataset_swaps_stereo_halves_at_random(tmp_path):
    left, right = torch.zeros(3, 40), torch.ones(3, 40)
    stereo = write_latent_files(tmp_path / 'stereo', [torch.cat([left, right])],
                                {'model': 'm', 'frame_rate': 10, 'dim': 6, 'extra': {'channels': 2}}).parent
    dataset = LatentDataset(stereo, segment_duration=2.0, num_samples=200, swap_channels=0.5, seed=3)
    firsts = [float(dataset[i]['latents'][0, 0]) for i in range(200)]
    assert 70 < sum(firsts) < 130  # about half the items start with the right channel
    item = dataset[int(np.argmax(firsts))]['latents']
    assert torch.equal(item[:3], torch.ones(3, 20)) and torch.equal(item[3:], torch.zeros(3, 20))
    assert [float(dataset[i]['latents'][0, 0]) for i in range(200)] == firsts  # drawn from (seed, epoch, index)
    dataset.set_epoch(1)
    assert [float(dataset[i]['latents'][0, 0]) for i in range(200)] != firsts
    never = LatentDataset(stereo, segment_duration=2.0, num_samples=20, swap_channels=0.0)
    assert all(float(never[i]['latents'][0, 0]) == 0 for i in range(20))
    mono = write_latent_files(tmp_path / 'mono', [torch.arange(6.)[:, None].expand(6, 40)],
                              {'model': 'm', 'frame_rate': 10, 'dim': 6}).parent
    assert LatentDataset(mono, segment_duration=2.0, num_samples=4, swap_channels=1.0).swap_channels == 0.0
    with pytest.raises(ValueError, match='swap_channels=1.5'):
        LatentDataset(stereo, segment_duration=2.0, num_samples=4, swap_channels=1.5)
