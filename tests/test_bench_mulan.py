"""scripts/bench_mulan.py: the harness adapter on a small MuLaN and the printed report in quick mode."""
import json

import pytest
import torch

from .conftest import load_script

bench = load_script('bench_mulan')
pytestmark = pytest.mark.usefixtures("one_thread")
# lm_bench.py's CFG keys at a small scale, so that the adapter test is quick
SMALL = dict(bench.CFG, mulan_dim=64, mulan_depth=1, mulan_heads=2, mulan_text_vocab=1000, mulan_batch=4,
             seconds=0.5, mulan_text_len=16)


def test_adapter_trains_on_the_harness_batch_format():
    module, loss_fn = bench.make_adapter(SMALL).mulan(SMALL)
    # the towers follow the harness's sizes, the rest the user's config (patch dropout, dropout, augmentations)
    assert module.audio_tower.dim == 64 and module.text_tower.dim == 64 and module.text_tower.vocab_size == 1000
    assert len(module.audio_tower.transformer.blocks) == 1 and module.audio_tower.transformer.blocks[0].attn.heads == 2
    assert module.audio_tower.patch_dropout == 0.3 and module.spec_augment is not None
    g = torch.Generator().manual_seed(1)
    batch = {'wavs': torch.randn(4, 8000, generator=g) * 0.1,  # lm_bench.py: {'wavs': [B, T], 'texts': [B, L]}
             'texts': torch.randint(1, 1000, (4, 16), generator=g)}
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)
    before = module.text_tower.token_emb.weight.detach().clone()
    loss = loss_fn(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert module.audio_tower.to_tokens.weight.grad.abs().sum() > 0
    assert module.text_tower.token_emb.weight.grad.abs().sum() > 0
    opt.step()
    # only the rows of the ids in the batch moved
    changed = (module.text_tower.token_emb.weight.detach() != before).any(dim=1)
    assert set(changed.nonzero().flatten().tolist()) == set(batch['texts'].flatten().tolist())
    # the adapter is seeded by cfg['seed']: the same weights every time
    again, _ = bench.make_adapter(SMALL).mulan(SMALL)
    torch.testing.assert_close(again.audio_proj.weight, bench.build_model(SMALL).audio_proj.weight)


def test_make_batch_matches_the_harness_shapes():
    batch = bench.make_batch()
    assert batch['wavs'].shape == (8, 32000) and batch['wavs'].dtype == torch.float32
    assert batch['texts'].shape == (8, 64) and batch['texts'].dtype == torch.long
    assert batch['texts'].min() >= 1 and batch['texts'].max() < 49408  # no padding id
    torch.testing.assert_close(bench.make_batch()['wavs'], batch['wavs'])


def test_timed_counts_repetitions():
    calls = []
    res = bench.timed(lambda: calls.append(1), warmup=2, reps=3)
    assert len(calls) == 5 and len(res['times_s']) == 3
    assert res['min_s'] <= res['median_s'] <= res['max_s']
    with pytest.raises(ValueError, match='reps'):
        bench.timed(lambda: None, warmup=0, reps=0)


def test_main_quick_prints_positive_figures(capsys, tmp_path):
    threads = torch.get_num_threads()
    out_json = tmp_path / 'figures.json'
    assert bench.main(['--quick', '--threads', '1', '--json', str(out_json)]) == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert 'train step (B=8, 2 s @ 16 kHz, L=64) median' in text
    assert 'clips/s' in text and 'texts/s' in text and 'cpu/wall' in text
    # 2 s at hop 160 without centring: 198 frames -> 13 patch columns x 4 mel rows; 0.3 patch dropout keeps 37
    assert 'ours has 52 patches per clip' in text and '(37 of 52 patches kept)' in text
    figures = json.loads(out_json.read_text())
    train, embed = figures['train'], figures['embed']
    assert len(train['times_s']) == 1 and train['median_s'] > 0 and train['cpu_per_wall'] > 0
    assert figures['parameters'] > 49408 * 256  # the text table alone
    for name in ('audio', 'text'):
        assert embed[name]['median_s'] > 0
        assert embed[name]['items_per_s'] == pytest.approx(8 / embed[name]['median_s'])
