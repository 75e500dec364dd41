"""Packing of [BOS] prefix target rows: exact rows, targets, weights and levels; losses on hand cases."""
import math

import torch

from audiogen_lab.models.token_sequences import IGNORE, pack_sequences, per_level_metrics, weighted_ce

BOS, PAD, EOS = 90, 91, 92


def test_rows_are_packed_left_with_next_token_targets():
    target = torch.tensor([[10, 11, 12, 13], [20, 21, 0, 0]])
    prefix = torch.tensor([[1, 2, 3], [4, 0, 0]])
    seq = pack_sequences(target, torch.tensor([4, 2]), torch.tensor([False, True]), bos_id=BOS, pad_id=PAD,
                         eos_id=EOS, prefix=prefix, prefix_lengths=torch.tensor([3, 1]), prefix_weight=0.5)
    assert seq.inputs.tolist() == [[BOS, 1, 2, 3, 10, 11, 12, 13], [BOS, 4, 20, 21, PAD, PAD, PAD, PAD]]
    assert seq.targets.tolist() == [[1, 2, 3, 10, 11, 12, 13, IGNORE],  # cut inside the item: no EOS
                                    [4, 20, 21, EOS, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert seq.weights.tolist() == [[0.5, 0.5, 0.5, 1, 1, 1, 1, 0], [0.5, 1, 1, 1, 0, 0, 0, 0]]
    assert seq.target_index.tolist() == [[-1, -1, -1, 0, 1, 2, 3, -1], [-1, 0, 1, -1, -1, -1, -1, -1]]


def test_without_prefix_loss_the_prefix_is_not_predicted():
    seq = pack_sequences(torch.tensor([[10, 11]]), torch.tensor([2]), torch.tensor([True]), bos_id=BOS, pad_id=PAD,
                         eos_id=EOS, prefix=torch.tensor([[1, 2]]), prefix_lengths=torch.tensor([2]))
    assert seq.targets.tolist() == [[IGNORE, IGNORE, 10, 11, EOS]]
    assert seq.weights.tolist() == [[0, 0, 1, 1, 1]]


def test_semantic_rows_have_no_prefix():
    seq = pack_sequences(torch.tensor([[5, 6, 7]]), torch.tensor([3]), torch.tensor([True]), bos_id=BOS,
                         pad_id=PAD, eos_id=EOS)
    assert seq.inputs.tolist() == [[BOS, 5, 6, 7]] and seq.targets.tolist() == [[5, 6, 7, EOS]]


def test_weighted_ce_and_per_level_metrics_on_uniform_logits():
    target = torch.tensor([[10, 11, 12, 13]])
    seq = pack_sequences(target, torch.tensor([4]), torch.tensor([False]), bos_id=BOS, pad_id=PAD, eos_id=EOS,
                         prefix=torch.tensor([[1]]), prefix_lengths=torch.tensor([1]), prefix_weight=0.25)
    logits = torch.zeros(1, seq.inputs.shape[1], 100)
    assert math.isclose(float(weighted_ce(logits, seq)), math.log(100), rel_tol=1e-6)
    logits[0, 1, 10] = 50.0  # level 0 of frame 0 predicted surely
    metrics = per_level_metrics(logits, seq, num_levels=2)
    assert float(metrics["accuracy_level_0"]) == 0.5 and float(metrics["ce_level_0"]) < math.log(100)
    assert math.isclose(float(metrics["ce_level_1"]), math.log(100), rel_tol=1e-6)
    assert float(metrics["accuracy_level_1"]) == 0.0
