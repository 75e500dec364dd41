"""scripts/bench_consistency_ae.py on the debug model: the harness adapter and the printed report."""
import json

import pytest
import torch

from .conftest import load_script

bench = load_script('bench_consistency_ae')
pytestmark = pytest.mark.usefixtures("one_thread")  # the debug model runs fastest on one thread


def test_factory_encodes_and_decodes_with_the_debug_model():
    impl = bench.factory(sample_rate=16000, preset='debug')
    assert not impl.model.training
    assert 0 < impl.num_parameters() < 2_000_000
    # the zero-initialised output head got small random values
    assert all(p.any() for p in impl.model.parameters() if p.dim() > 1)
    n = 3000
    wav = bench.test_signal(n, 16000)
    assert wav.shape == (1, n)
    latents = impl.encode(wav)
    assert latents.shape[:2] == (1, impl.model.latent_dim) and latents.shape[-1] >= 1
    out = impl.decode(latents, 1)
    assert out.dim() == 2 and out.shape[0] == 1 and out.shape[-1] >= n
    assert torch.isfinite(out).all()
    # decoding is seeded: the same latents give the same audio
    torch.testing.assert_close(impl.decode(latents, 1), out)
    # channels are coded one by one
    stereo = torch.cat([wav, -wav])
    assert impl.encode(stereo).shape[0] == 2 and impl.decode(impl.encode(stereo), 1).shape[0] == 2


def test_main_prints_the_real_time_factors(capsys, tmp_path):
    threads = torch.get_num_threads()
    out_json = tmp_path / 'figures.json'
    code = bench.main(['--preset', 'debug', '--sample-rate', '16000', '--seconds', '0.5', '--repeats', '1',
                       '--threads', '1', '--train-batch', '2', '--train-micro-batch', '1', '--train-seconds', '0.25',
                       '--no-reference', '--json', str(out_json)])
    assert code == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert 'encode RTF: ours ' in text
    assert 'decode 1-step RTF: ours ' in text
    assert 'train step (batch 2 in micro-batches of 1, 4000 samples' in text
    assert 'parameters: ours ' in text and 'reference' not in text.split('parameters:')[1].splitlines()[0]
    figures = json.loads(out_json.read_text())
    assert figures['encode']['ours']['rtf'] > 0 and figures['decode']['ours']['rtf'] > 0
    assert figures['train']['ours']['median_s'] > 0 and figures['train']['batch'] == 2
    assert 'reference' not in figures['encode']
