"""scripts/bench_lm.py: the harness adapter on a small semantic LM, the sampler and the report in quick mode."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from .conftest import load_script

bench = load_script('bench_lm')
pytestmark = pytest.mark.usefixtures("one_thread")
# lm_bench.py's CFG keys at a small scale (10 ids of 20 clusters), so that the adapter test is quick
SMALL = dict(bench.CFG, dim=32, depth=1, heads=2, dim_head=16, semantic_vocab=20, seconds=0.2, batch=2)


def test_adapter_trains_on_the_harness_batch_format():
    module, loss_fn = bench.make_adapter(SMALL).semantic(SMALL)
    assert module.vocab_size == 23 and module.dim == 32 and len(module.blocks) == 1  # 20 clusters, EOS, PAD, BOS
    ids = bench.make_batch(SMALL)['semantic_ids']  # lm_bench.py: {'semantic_ids': [B, Ns]}
    assert ids.shape == (2, 10)
    seen = _spied(module)
    module.train()
    loss = loss_fn({'semantic_ids': ids})
    # input [BOS, ids], targets [ids, EOS]: 11 predictions per item
    assert torch.equal(seen['tokens'][:, 0], torch.full((2,), 22)) and torch.equal(seen['tokens'][:, 1:], ids)
    targets = torch.cat([ids, torch.full((2, 1), 20)], dim=1)
    expected = F.cross_entropy(seen['logits'].reshape(-1, 23), targets.reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert abs(float(loss.detach()) - math.log(23)) < 0.05  # near-uniform logits at initialisation
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)
    before = module.token_emb.weight.detach().clone()
    loss.backward()
    opt.step()
    changed = (module.token_emb.weight.detach() != before).any(dim=1)
    assert set(changed.nonzero().flatten().tolist()) == set(ids.flatten().tolist()) | {22}  # EOS is never input
    # seeded by cfg['seed']: the same weights every time
    again, _ = bench.make_adapter(SMALL).semantic(SMALL)
    torch.testing.assert_close(again.head.weight, bench.build_model(SMALL).head.weight)


def test_adapter_rejects_a_head_width_it_cannot_build():
    with pytest.raises(ValueError, match='dim_head'):
        bench.make_adapter(SMALL).semantic(dict(SMALL, dim_head=64))


@pytest.mark.parametrize('use_kv_cache', [True, False])
def test_sampler_draws_exactly_the_requested_codes(use_kv_cache):
    sample = bench.make_adapter(SMALL).semantic_sampler(SMALL, use_kv_cache=use_kv_cache)
    torch.manual_seed(0)
    ids = sample(30)
    assert ids.shape == (1, 30) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 20


def test_sampler_never_stops_even_when_the_model_wants_to():
    layout = bench.SemanticLayout(20)
    model = bench.build_model(SMALL).eval()
    # a head that puts every special far above every code: only the mask keeps the specials out
    model.head = torch.nn.Linear(32, 23)
    torch.nn.init.zeros_(model.head.weight)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[20:] = 1e4
    torch.manual_seed(0)
    ids = bench.make_sampler(model, layout, use_kv_cache=True)(200)
    assert ids.shape == (1, 200) and ids.max() < 20
    assert len(ids.unique()) > 15  # uniform over the 20 codes once the specials are masked


def test_cached_and_uncached_greedy_samples_agree():
    adapter = bench.make_adapter(SMALL)
    cfg = dict(SMALL, top_k=1)  # top-1 at temperature 1 is greedy
    cached = adapter.semantic_sampler(cfg, use_kv_cache=True)(12)
    assert torch.equal(cached, adapter.semantic_sampler(cfg, use_kv_cache=False)(12))


def test_make_batch_matches_the_harness_shapes():
    ids = bench.make_batch()['semantic_ids']
    assert ids.shape == (4, 100) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 500
    assert not (ids[:, 1:] == ids[:, :-1]).any()  # no consecutive repeats
    assert torch.equal(bench.make_batch()['semantic_ids'], ids)


def test_train_step_flops_by_hand():
    model = bench.build_model(SMALL)
    # qkv 32*96 + out 32*32 + MLP 2*32*128 + head 32*23
    assert bench.matmul_params(model) == 3072 + 1024 + 8192 + 736
    assert bench.train_step_flops(model, batch=2, length=11) == 6 * 13024 * 22 + 12 * 1 * 2 * 11 ** 2 * 32


def test_main_quick_prints_positive_figures(capsys, tmp_path):
    threads = torch.get_num_threads()
    out_json = tmp_path / 'figures.json'
    assert bench.main(['--quick', '--threads', '1', '--matmul-size', '256', '--stages', 'semantic',
                       '--json', str(out_json)]) == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert 'train step (B=4, N=100 + BOS) median' in text and 'cpu/wall' in text
    assert 'fp32 matmul peak (256x256' in text and 'GFLOP/s' in text
    assert 'sample kv-cache (B=1, 100 tokens)' in text and 'sample no-cache (B=1, 100 tokens)' in text
    figures = json.loads(out_json.read_text())
    train, peak = figures['train'], figures['matmul_peak']
    assert len(train['times_s']) == 1 and train['median_s'] > 0 and train['cpu_per_wall'] > 0
    assert train['gflops'] > 0 and peak['gflops'] > 0
    assert train['gflops'] == pytest.approx(figures['train_flops'] / train['median_s'] / 1e9)
    assert figures['vocab_size'] == 503
    for name in ('kv-cache', 'no-cache'):
        s = figures['sample'][name]
        assert s['tokens'] == 100 and s['tokens_per_s'] == pytest.approx(100 / s['median_s']) and s['tokens_per_s'] > 0


# the acoustic cases at a small scale: 10 semantic ids of 20 clusters, 3 frames of 2 coarse + 3 fine levels of 8 codes
TINY = dict(SMALL, acoustic_hz=15, num_coarse_quantizers=2, num_fine_quantizers=3, codebook_size=8)


def _spied(module):
    """Record the tokens and logits of the module's forward calls."""
    seen = {}
    forward = module.forward

    def spy(tokens, **kwargs):
        seen['tokens'], seen['logits'] = tokens, forward(tokens, **kwargs)
        return seen['logits']
    module.forward = spy
    return seen


@pytest.mark.parametrize('stage', ['coarse', 'fine'])
def test_acoustic_adapters_train_on_joint_rows(stage):
    adapter = bench.make_adapter(TINY)
    module, loss_fn = getattr(adapter, stage)(TINY)
    batch = bench.make_batch(TINY)
    sem, coarse, fine = batch['semantic_ids'], batch['coarse_ids'], batch['fine_ids']
    assert coarse.shape == (2, 3, 2) and fine.shape == (2, 3, 3)  # lm_bench.py: [B, Na, Q]
    if stage == 'coarse':  # semantic part 23 ids (20 clusters + specials), then 2 * 8 codes + specials
        vocab, bos, eos, offset, levels = 23 + 19, 22, 23 + 16, 23, 2
        prefix, target = sem, coarse
    else:  # coarse part 2 * 8 + 3, then 3 * 8 + 3
        vocab, bos, eos, offset, levels = 19 + 27, 18, 19 + 24, 19, 3
        prefix, target = (coarse + torch.arange(2) * 8).flatten(1), fine
    assert module.vocab_size == vocab
    seen = _spied(module)
    module.train()
    loss = loss_fn(batch)
    # rows [BOS] prefix target: the target time-major with per-level offsets in the target's part
    flat_target = (target + torch.arange(levels) * 8).flatten(1) + offset
    expected_rows = torch.cat([torch.full((2, 1), bos), prefix, flat_target], dim=1)
    assert torch.equal(seen['tokens'], expected_rows)
    # the target tokens and EOS are predicted, the prefix is not
    p = prefix.shape[1]
    predicted = seen['logits'][:, p:]  # from the last prefix token on
    targets = torch.cat([flat_target, torch.full((2, 1), eos)], dim=1)
    torch.testing.assert_close(loss, F.cross_entropy(predicted.reshape(-1, vocab), targets.reshape(-1)))
    assert abs(float(loss.detach()) - math.log(vocab)) < 0.05
    loss.backward()
    assert module.token_emb.weight.grad[expected_rows.flatten()].abs().sum(dim=1).gt(0).all()


def test_acoustic_samplers_draw_codes_of_the_right_shape():
    adapter = bench.make_adapter(TINY)
    batch = bench.make_batch(TINY)
    torch.manual_seed(0)
    coarse = adapter.coarse_sampler(TINY)(batch['semantic_ids'][:1])
    assert coarse.shape == (1, 3, 2) and coarse.dtype == torch.long and 0 <= coarse.min() and coarse.max() < 8
    fine = adapter.fine_sampler(TINY)(coarse)
    assert fine.shape == (1, 3, 3) and 0 <= fine.min() and fine.max() < 8
    # the sampler constrains each level to its own codes: a model that wants the first level's codes everywhere
    plan = bench.plan_for('fine', TINY)
    model = bench.build_model(TINY, 'fine').eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias = torch.nn.Parameter(torch.zeros(model.vocab_size))
        model.head.bias[19:19 + 8] = 1e4  # the codes of fine level 0
    draws = bench.make_acoustic_sampler(model, plan, 'fine')(coarse)
    assert draws.shape == (1, 3, 3) and draws.max() < 8


def test_main_quick_prints_the_coarse_and_fine_figures(capsys, tmp_path):
    out_json = tmp_path / 'figures.json'
    assert bench.main(['--quick', '--threads', '1', '--matmul-size', '128', '--stages', 'coarse,fine',
                       '--json', str(out_json)]) == 0
    text = capsys.readouterr().out
    assert 'coarse: vocabulary 3578' in text and 'train step (B=4, T=551)' in text
    assert 'fine: vocabulary 8198' in text and 'train step (B=4, T=1201)' in text
    figures = json.loads(out_json.read_text())['stages']
    for stage, length in (('coarse', 551), ('fine', 1201)):
        f = figures[stage]
        assert f['rows'] == [4, length] and f['gflops'] == pytest.approx(f['flops'] / f['median_s'] / 1e9)
        assert f['flops'] == bench.train_step_flops(bench.build_model(stage=stage), 4, length)
