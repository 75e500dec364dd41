"""Item plans, index sharding for iterable datasets, and the dict-batch collate."""
from types import SimpleNamespace

import pytest
import torch

from audiogen_lab.data.batch import collate
from audiogen_lab.data.sampling import ItemPlan, choose, item_seed, shard_indices


def test_shuffled_draws_match_the_seed_epoch_index_recipe():
    weights = torch.tensor([1., 3., 0.5, 2.], dtype=torch.float64)
    plan = ItemPlan(weights, shuffle=True, num_samples=20, seed=11)
    for index in range(20):
        rng = torch.Generator().manual_seed(item_seed(11, 2, index, 1))
        entry = int(torch.multinomial(weights, 1, generator=rng))
        position = float(torch.rand(1, generator=rng, dtype=torch.float64))
        assert plan.pick(index, epoch=2, attempt=1) == (entry, position)


def test_unshuffled_plans():
    plan = ItemPlan(torch.ones(5), shuffle=False, num_samples=None, seed=0)
    assert len(plan) == 5 and [plan.pick(i, epoch=9) for i in range(5)] == [(i, 0.) for i in range(5)]
    assert plan.pick(4, epoch=0, attempt=2) == (1, 0.)  # a retry moves to the next entry
    fixed = ItemPlan(torch.ones(5), shuffle=False, num_samples=12, seed=3)
    picks = [fixed.pick(i, epoch=0) for i in range(12)]
    assert [fixed.pick(i, epoch=7) for i in range(12)] == picks  # independent of the epoch
    entries = [entry for entry, _ in picks]
    assert sorted(entries[:5]) == list(range(5)) and entries[5:10] == entries[:5]  # a cycled permutation
    assert len({position for _, position in picks}) == 12
    with pytest.raises(ValueError, match='num_samples'):
        ItemPlan(torch.ones(2), shuffle=True, num_samples=None, seed=0)


def test_choose_is_deterministic_and_uses_every_option():
    options = ['a', 'b', 'c']
    picks = [choose(options, 1, 0, i) for i in range(60)]
    assert picks == [choose(options, 1, 0, i) for i in range(60)] and set(picks) == set(options)
    assert picks != [choose(options, 1, 1, i) for i in range(60)]


@pytest.mark.parametrize('num_items,block,world,workers', [(24, 4, 2, 2), (25, 3, 2, 3), (7, 1, 3, 2), (5, 8, 1, 2)])
def test_shard_indices_cover_every_index_once(monkeypatch, num_items, block, world, workers):
    seen = []
    per_rank = []
    for rank in range(world):
        mine = []
        for worker in range(workers):
            monkeypatch.setattr(torch.utils.data, 'get_worker_info',
                                lambda w=worker: SimpleNamespace(id=w, num_workers=workers))
            mine += list(shard_indices(num_items, block, rank, world))
        per_rank.append(mine)
        seen += mine
    assert sorted(seen) == list(range(num_items))
    if num_items % (block * world) == 0:
        assert len({len(mine) for mine in per_rank}) == 1  # ranks get equal shares


def test_collate_pads_masks_and_refuses_mixed_items():
    items = [{'audio': torch.ones(2, 5), 'length': 5, 'path': 'a.wav'},
             {'audio': torch.ones(2, 3), 'length': 3, 'path': 'b.wav'}]
    batch = collate(items)
    assert batch['audio'].shape == (2, 2, 5) and batch['paths'] == ['a.wav', 'b.wav']
    assert batch['mask'].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch['audio'][1, :, 3:].abs().sum() == 0
    with pytest.raises(ValueError, match='b.wav'):
        collate([items[0], {**items[1], 'text': 'x'}])
    with pytest.raises(ValueError, match='exactly one'):
        collate([{'audio': torch.ones(1, 2), 'tokens': torch.ones(1, 2), 'length': 2, 'path': 'c'}])
