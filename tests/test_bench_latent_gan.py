"""scripts/bench_latent_gan.py on the debug latent GAN: the training step and the printed report."""
import json
import math

import pytest
import torch

from .conftest import load_script

bench = load_script('bench_latent_gan')
pytestmark = pytest.mark.usefixtures("one_thread")  # the debug models run fastest on one thread


def test_train_step_updates_the_generator_and_the_critic():
    cfg = bench.compose_config('debug')
    model = bench.build_gan(cfg, frame_rate=10.0)
    critic = bench.get_latent_critic(cfg)
    assert all(p.any() for p in model.parameters() if p.dim() > 1)  # noise scales no longer zero
    before = [p.detach().clone() for p in (*model.generator.parameters(), *critic.parameters())]
    step = bench.TrainStep(model, critic, cfg, batch=3)
    assert step.real.shape == (3, 8, 32)
    step()
    after = [p.detach() for p in (*model.generator.parameters(), *critic.parameters())]
    generator_count = len(list(model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before[:generator_count], after[:generator_count]))
    assert any(not torch.equal(a, b) for a, b in zip(before[generator_count:], after[generator_count:]))
    assert set(step.losses) == {'d_hinge', 'r1', 'd_loss', 'g_loss'}
    assert all(math.isfinite(v) for v in step.losses.values()) and step.losses['r1'] > 0
    assert bench.count_flops(step) > 0  # R1's autograd.grad runs under the FLOP counter


def test_main_prints_the_figures(capsys, tmp_path):
    threads = torch.get_num_threads()
    out_json = tmp_path / 'figures.json'
    seconds, rate = 2.0, 10.7666
    code = bench.main(['--preset', 'debug', '--seconds', str(seconds), '--frame-rate', str(rate), '--repeats', '1',
                       '--threads', '1', '--train-batch', '4', '--train-repeats', '1', '--matmul-size', '256',
                       '--matmul-reps', '2', '--json', str(out_json)])
    assert code == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert 'Latent GAN benchmark (ours, preset debug): 1 threads' in text
    assert 'model: base channels 32, window 32, latent_dim 8' in text
    assert 'latent-only generation (2 s, 1 sample, 22 frames, latents [1, 8, 22]' in text
    assert 'x real time (RTF' in text and '[target >= 100x: ' in text
    assert 'end to end (2 s, 1 sample: GAN with latent_dim 8 at 62.5 frames/s = 125 frames' in text
    assert 'x real time: latent-only ' in text and 'end to end with the debug autoencoder ' in text
    assert 'train step (batch 4 windows of 32 frames x 8 dims' in text
    assert 'GFLOP/s, ' in text and '% of the fp32 matmul peak' in text
    assert 'fp32 matmul peak (256x256, fastest run)' in text

    figures = json.loads(out_json.read_text())
    lo, e2e, train, peak = figures['latent_only'], figures['end_to_end'], figures['train'], figures['matmul_peak']
    assert lo['frames'] == round(seconds * rate) and lo['output_shape'] == [1, 8, lo['frames']]
    for res in (lo, e2e, e2e['generate_only']):
        assert res['median_s'] > 0 and res['finite']
        assert res['x_real_time'] == pytest.approx(seconds / res['median_s'])
        assert res['rtf'] == pytest.approx(1 / res['x_real_time'])
        assert res['x_real_time_best'] == pytest.approx(seconds / res['min_s'])
        assert res['x_real_time_best'] >= res['x_real_time']
    assert figures['target_met'] == (lo['x_real_time'] >= 100)
    assert e2e['frame_rate'] == 62.5 and e2e['frames'] == 125 and e2e['latent_dim'] == 8
    assert e2e['output_shape'] == [1, 1, e2e['frames'] * e2e['hop_length']] == [1, 1, int(seconds * 16000)]
    assert peak['gflops'] > 0 and math.isfinite(peak['gflops'])
    assert train['batch'] == 4 and train['median_s'] > 0 and train['flops'] > 0
    assert train['gflops'] == pytest.approx(train['flops'] / train['median_s'] / 1e9)
    assert train['percent_of_peak'] == pytest.approx(100 * train['gflops'] / peak['gflops'])
    assert train['gflops_best'] == pytest.approx(train['flops'] / train['min_s'] / 1e9)
    assert all(math.isfinite(v) for v in train['losses'].values())
