"""`collate` with named token streams: per-stream padding and masks, alongside or instead of the time-axis
tensor, and the checks on mixed items."""
import typing as tp

import pytest
import torch

from audiogen_lab.data.batch import collate


def stream_item(ts: int, ta: int, path: str, real_s: tp.Optional[int] = None,
                real_a: tp.Optional[int] = None) -> dict:
    return {'streams': {'semantic': torch.full((1, ts), 7), 'acoustic': torch.full((2, ta), 3)},
            'stream_lengths': {'semantic': ts if real_s is None else real_s,
                               'acoustic': ta if real_a is None else real_a},
            'length': ts, 'path': path}


def test_streams_are_padded_and_masked_per_stream():
    items = [stream_item(3, 6, 'a'), stream_item(2, 5, 'b', real_a=4)]
    batch = collate(items)
    assert set(batch) == {'streams', 'stream_masks', 'paths'}  # no time-axis tensor: no `mask`
    semantic, acoustic = batch['streams']['semantic'], batch['streams']['acoustic']
    assert semantic.tolist() == [[[7, 7, 7]], [[7, 7, 0]]]
    assert acoustic.shape == (2, 2, 6) and acoustic[1, :, 5:].abs().sum() == 0 and acoustic[1, :, :5].eq(3).all()
    assert batch['stream_masks']['semantic'].tolist() == [[True] * 3, [True, True, False]]
    # The declared real length wins over the tensor length: frame 4 of item b is padding.
    assert batch['stream_masks']['acoustic'].tolist() == [[True] * 6, [True] * 4 + [False] * 2]
    assert batch['paths'] == ['a', 'b']


def test_streams_next_to_a_time_axis_tensor():
    items = [{**stream_item(2, 4, 'a'), 'tokens': torch.ones(1, 3, dtype=torch.long)},
             {**stream_item(1, 2, 'b'), 'tokens': torch.ones(1, 1, dtype=torch.long), 'length': 1}]
    batch = collate(items)
    assert batch['tokens'].shape == (2, 1, 3) and batch['mask'].sum(-1).tolist() == [2, 1]
    assert batch['stream_masks']['acoustic'].sum(-1).tolist() == [4, 2]


def test_mixed_or_incomplete_stream_items_are_refused():
    with pytest.raises(ValueError, match='exactly one'):
        collate([{'length': 2, 'path': 'c'}])
    with pytest.raises(ValueError, match='exactly one'):
        collate([{**stream_item(2, 4, 'a'), 'audio': torch.ones(1, 2), 'tokens': torch.ones(1, 2)}])
    odd = stream_item(2, 4, 'odd')
    del odd['streams']['acoustic']
    with pytest.raises(ValueError, match='odd'):
        collate([stream_item(2, 4, 'a'), odd])
    missing = stream_item(2, 4, 'missing')
    del missing['stream_lengths']['semantic']
    with pytest.raises(ValueError, match='stream_lengths'):
        collate([missing])
