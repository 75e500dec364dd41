import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from audiogen_lab.data.latent_dataset import LatentDataset, load_latent_meta, write_latent_files
from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.utils import checkpoint
from audiogen_lab.utils.export import export_checkpoint

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {'piano.wav': (16000, 1, 0.4), 'speech.wav': (16000, 2, 0.25), 'strings.wav': (22050, 1, 0.3)}


latents_script = load_script('latents')


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope='module')
def export(tmp_path_factory) -> str:
    """A tiny consistency autoencoder (random weights) exported like a trained one."""
    folder = tmp_path_factory.mktemp('model')
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / 'config' / 'model' / 'consistency_ae' / 'debug.yaml'),
                          {'solver': 'compression', 'sample_rate': 16000, 'channels': 1})
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    ckpt = checkpoint.save_checkpoint({'xp.cfg': OmegaConf.to_yaml(cfg), 'xp.sig': 'cae1',
                                       'best_state': {'states': {'model': model.state_dict()}}},
                                      folder / 'checkpoint.th')
    return str(export_checkpoint(ckpt, folder / 'cae.th'))


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
