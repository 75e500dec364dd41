import pytest
import torch

from audiogen_lab.models.token_layout import AcousticLayout, ConcatVocab, SemanticLayout


def _codes(batch: int, levels: int, frames: int, cardinality: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(cardinality, (batch, levels, frames), generator=generator)


@pytest.mark.parametrize("levels,frames,cardinality", [(1, 5, 7), (2, 3, 4), (3, 10, 1024), (8, 6, 1024)])
def test_flatten_unflatten_round_trip(levels, frames, cardinality):
    layout = AcousticLayout(levels, cardinality)
    codes = _codes(2, levels, frames, cardinality, seed=levels)
    ids = layout.flatten(codes)
    assert ids.shape == (2, levels * frames) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < layout.num_codes
    assert torch.equal(layout.unflatten(ids), codes)


def test_flatten_hand_example_time_major_with_level_offsets():
    layout = AcousticLayout(num_levels=2, cardinality=4)
    codes = torch.tensor([[[0, 3, 1],     # level 0
                           [2, 0, 3]]])   # level 1
    # frame 0: (0, 4 + 2), frame 1: (3, 4 + 0), frame 2: (1, 4 + 3)
    assert layout.flatten(codes).tolist() == [[0, 6, 3, 4, 1, 7]]
    assert layout.unflatten(torch.tensor([[0, 6, 3, 4, 1, 7]])).tolist() == codes.tolist()


def test_flatten_rejects_out_of_range_codes_naming_the_level():
    layout = AcousticLayout(num_levels=3, cardinality=4, first_level=2)
    codes = _codes(1, 3, 5, 4)
    codes[0, 1, 2] = 4
    with pytest.raises(ValueError, match="level 1 \\(codec level 3\\)"):
        layout.flatten(codes)
    codes[0, 1, 2] = 0
    codes[0, 2, 0] = -1
    with pytest.raises(ValueError, match="level 2"):
        layout.flatten(codes)
    with pytest.raises(ValueError, match="num_levels=3"):
        layout.flatten(_codes(1, 2, 5, 4))
    with pytest.raises(TypeError, match="integer"):
        layout.flatten(torch.zeros(1, 3, 5))


def test_unflatten_rejects_id_of_wrong_level_and_specials():
    layout = AcousticLayout(num_levels=2, cardinality=4)
    with pytest.raises(ValueError, match="position 1 .*level 1"):
        layout.unflatten(torch.tensor([[0, 3, 3, 4]]))  # id 3 is a level-0 code at a level-1 position
    with pytest.raises(ValueError, match="position 2 .*level 0"):
        layout.unflatten(torch.tensor([[0, 4, 5, 4]]))
    with pytest.raises(ValueError, match="specials"):
        layout.unflatten(torch.tensor([[0, 4, layout.eos_id, layout.pad_id]]))


def test_unflatten_partial_frame_raises_unless_dropped():
    layout = AcousticLayout(num_levels=3, cardinality=4)
    ids = layout.flatten(_codes(2, 3, 4, 4))
    with pytest.raises(ValueError, match="drop_partial"):
        layout.unflatten(ids[:, :-1])
    assert torch.equal(layout.unflatten(ids[:, :-1], drop_partial=True), layout.unflatten(ids)[:, :, :3])
    assert torch.equal(layout.unflatten(ids[:, :-2], drop_partial=True), layout.unflatten(ids)[:, :, :3])


@pytest.mark.parametrize("levels,cardinality", [(1, 1), (2, 4), (4, 1024)])
def test_special_ids_differ_from_every_code_id(levels, cardinality):
    layout = AcousticLayout(levels, cardinality)
    all_codes = torch.arange(cardinality).repeat(1, levels, 1)  # [1, K, card]: every code of every level
    code_ids = set(layout.flatten(all_codes).flatten().tolist())
    assert code_ids == set(range(levels * cardinality))
    specials = {layout.eos_id, layout.pad_id, layout.bos_id}
    assert len(specials) == 3 and not specials & code_ids
    assert max(specials) == layout.vocab_size - 1

    semantic = SemanticLayout(cardinality)
    semantic_specials = {semantic.eos_id, semantic.pad_id, semantic.bos_id}
    assert len(semantic_specials) == 3 and min(semantic_specials) == cardinality
    assert max(semantic_specials) == semantic.vocab_size - 1


def test_append_eos_only_at_frame_boundaries():
    layout = AcousticLayout(num_levels=2, cardinality=4)
    ids = layout.flatten(_codes(3, 2, 3, 4))  # [3, 6]
    eos, pad = layout.eos_id, layout.pad_id
    out = layout.append_eos(ids)
    assert out.shape == (3, 7)
    assert torch.equal(out[:, :6], ids) and (out[:, 6] == eos).all()

    out = layout.append_eos(ids, lengths=torch.tensor([6, 2, 0]))
    assert out[0].tolist() == ids[0].tolist() + [eos]
    assert out[1].tolist() == ids[1, :2].tolist() + [eos, pad, pad, pad, pad]
    assert out[2].tolist() == [eos] + [pad] * 6
    for row in out:
        positions = (row == eos).nonzero().flatten().tolist()
        assert len(positions) == 1 and layout.is_frame_boundary(positions[0])

    with pytest.raises(ValueError, match="multiples of 2"):
        layout.append_eos(ids, lengths=torch.tensor([6, 3, 0]))
    with pytest.raises(ValueError, match="multiples of 2"):
        layout.append_eos(ids[:, :5])
    with pytest.raises(ValueError, match="lengths must lie"):
        layout.append_eos(ids, lengths=torch.tensor([8, 2, 0]))


def test_is_frame_boundary():
    layout = AcousticLayout(num_levels=3, cardinality=4)
    assert [layout.is_frame_boundary(p) for p in range(7)] == [True, False, False, True, False, False, True]


def test_strip_eos_round_trip_and_mid_frame_eos_refused():
    layout = AcousticLayout(num_levels=2, cardinality=4)
    ids = layout.flatten(_codes(3, 2, 3, 4))
    lengths = torch.tensor([6, 2, 4])
    stripped, found = layout.strip_eos(layout.append_eos(ids, lengths))
    assert found.tolist() == [6, 2, 4] and stripped.shape == (3, 6)
    for row, length, original in zip(stripped, lengths, ids):
        assert row[:length].tolist() == original[:length].tolist()
        assert (row[length:] == layout.pad_id).all()

    # Tokens after the first EOS are ignored, including a later mid-frame EOS; no EOS keeps everything.
    sampled = torch.tensor([[0, 4, layout.eos_id, 5, layout.eos_id, 1], [0, 4, 1, 5, 2, 6]])
    stripped, found = layout.strip_eos(sampled)
    assert found.tolist() == [2, 6]
    assert stripped.tolist() == [[0, 4, layout.pad_id, layout.pad_id, layout.pad_id, layout.pad_id],
                                 [0, 4, 1, 5, 2, 6]]

    with pytest.raises(ValueError, match="position 3 of item 1 is inside a frame"):
        layout.strip_eos(torch.tensor([[0, 4, 1, 5], [0, 4, 1, layout.eos_id]]))


def test_allowed_ids_and_logits_mask_give_exact_ranges():
    layout = AcousticLayout(num_levels=3, cardinality=4)  # codes 0..11, eos 12, pad 13, bos 14
    assert [layout.allowed_ids(p) for p in range(3)] == [(0, 4), (4, 8), (8, 12)]
    with pytest.raises(ValueError, match="position_in_frame"):
        layout.allowed_ids(3)
    expected = {0: set(range(0, 4)) | {12}, 1: set(range(4, 8)), 2: set(range(8, 12))}
    for position in range(9):
        mask = layout.logits_mask(position)
        assert mask.dtype == torch.bool and mask.shape == (layout.vocab_size,)
        assert set(mask.nonzero().flatten().tolist()) == expected[position % 3]
    assert set(layout.logits_mask(3, allow_eos=False).nonzero().flatten().tolist()) == set(range(4))

    # In a joint vocabulary after a 10-id semantic part.
    mask = layout.logits_mask(4, vocab_size=30, offset=10)
    assert mask.shape == (30,) and set(mask.nonzero().flatten().tolist()) == set(range(14, 18))
    with pytest.raises(ValueError, match="do not fit"):
        layout.logits_mask(0, vocab_size=20, offset=10)

    logits = torch.zeros(2, 15)
    constrained = layout.constrain_logits(logits, next_position=6)
    assert torch.isfinite(constrained).sum(dim=-1).tolist() == [5, 5]
    assert torch.isfinite(constrained[0]).nonzero().flatten().tolist() == [0, 1, 2, 3, 12]
    sampled = torch.multinomial(constrained.softmax(-1), 50, replacement=True)
    assert ((sampled < 4) | (sampled == 12)).all()


def test_semantic_flatten_validates_and_dedup_hand_example():
    layout = SemanticLayout(cardinality=5)
    ids = torch.tensor([[0, 4, 4, 2]])
    assert torch.equal(layout.flatten(ids), ids)
    with pytest.raises(ValueError, match="cardinality=5"):
        layout.flatten(torch.tensor([[0, 5]]))
    dedup = SemanticLayout.dedup_consecutive(torch.tensor([3, 3, 1, 1, 1, 3, 0, 0, 2]))
    assert dedup.tolist() == [3, 1, 3, 0, 2]
    assert SemanticLayout.dedup_consecutive(torch.tensor([], dtype=torch.long)).tolist() == []

    with_eos = layout.append_eos(ids, lengths=torch.tensor([3]))
    assert with_eos.tolist() == [[0, 4, 4, layout.eos_id, layout.pad_id]]
    stripped, lengths = layout.strip_eos(with_eos)
    assert stripped.tolist() == [[0, 4, 4]] and lengths.tolist() == [3]


def test_concat_vocab_round_trip_and_range_errors():
    semantic, coarse = SemanticLayout(10), AcousticLayout(2, 4)
    vocab = ConcatVocab([semantic.vocab_size, coarse.vocab_size])
    assert vocab.offsets == (0, 13) and vocab.vocab_size == 13 + 11
    assert vocab.offset(1) == 13

    semantic_ids = torch.tensor([[0, 9, semantic.eos_id]])
    coarse_ids = torch.tensor([[0, 7, coarse.eos_id, coarse.bos_id]])
    joint = torch.cat([vocab.encode(0, semantic_ids), vocab.encode(1, coarse_ids)], dim=1)
    assert joint.tolist() == [[0, 9, 10, 13, 20, 21, 23]]
    assert torch.equal(vocab.decode(0, joint[:, :3]), semantic_ids)
    assert torch.equal(vocab.decode(1, joint[:, 3:]), coarse_ids)

    with pytest.raises(ValueError, match="part 1 must lie in \\[0, 11\\)"):
        vocab.encode(1, torch.tensor([11]))
    with pytest.raises(ValueError, match="part 0"):
        vocab.encode(0, torch.tensor([-1]))
    with pytest.raises(ValueError, match="part 1 must lie in \\[13, 24\\)"):
        vocab.decode(1, torch.tensor([12, 13]))
    with pytest.raises(ValueError, match="part 0"):
        vocab.decode(0, torch.tensor([13]))
    with pytest.raises(ValueError, match="part_index"):
        vocab.encode(2, torch.tensor([0]))
    with pytest.raises(ValueError, match="positive"):
        ConcatVocab([3, 0])
