import pytest
import torch

from audiogen_lab.metrics.retrieval import retrieval_metrics, zero_shot_accuracy


def test_identity_embeddings_are_perfect():
    embeddings = torch.eye(5)
    metrics = retrieval_metrics(embeddings, embeddings.clone())
    assert set(metrics) == {f"{d}_{m}" for d in ("t2a", "a2t") for m in ("r1", "r5", "r10", "median_rank")}
    assert all(value == 1.0 for value in metrics.values())


def test_hand_computed_ranks_both_directions():
    audio = torch.eye(4)
    text = torch.tensor([[1.0, 0.5, 0.0, 0.0],
                         [0.9, 0.5, 0.8, 0.0],
                         [0.0, 0.0, 0.1, 0.3],
                         [0.4, 0.3, 0.2, 0.1]])
    # t2a: caption i scores clip j with text[i, j]; ranks of the diagonal entry along the rows: 1, 3, 2, 4.
    # a2t: clip j scores caption i with text[i, j]; along the columns: 1, 2 (0.5 ties 0.5: counted
    # against the query), 3, 2.
    metrics = retrieval_metrics(audio, text, ks=(1, 2, 3))
    assert metrics == {
        "t2a_r1": 0.25, "t2a_r2": 0.5, "t2a_r3": 0.75, "t2a_median_rank": 2.5,
        "a2t_r1": 0.25, "a2t_r2": 0.75, "a2t_r3": 1.0, "a2t_median_rank": 2.0,
    }


def test_known_permutation():
    # Captions 3, 4, 5 describe clips 4, 5, 3: those queries score 0 on their own item, tied with the
    # four other zeros, so they rank last (6); the three fixed points rank first.
    perm = [0, 1, 2, 4, 5, 3]
    audio, text = torch.eye(6), torch.eye(6)[perm]
    metrics = retrieval_metrics(audio, text)
    for direction in ("t2a", "a2t"):
        assert metrics[f"{direction}_r1"] == 0.5
        assert metrics[f"{direction}_r5"] == 0.5
        assert metrics[f"{direction}_r10"] == 1.0
        assert metrics[f"{direction}_median_rank"] == 3.5


def test_invariant_to_reordering_the_pairs():
    gen = torch.Generator().manual_seed(0)
    audio, text = torch.randn(20, 8, generator=gen), torch.randn(20, 8, generator=gen)
    groups = [f"caption {i % 7}" for i in range(20)]
    order = torch.randperm(20, generator=gen)
    reordered = retrieval_metrics(audio[order], text[order], groups=[groups[i] for i in order])
    assert reordered == retrieval_metrics(audio, text, groups=groups)


def test_constant_embeddings_get_the_worst_rank():
    metrics = retrieval_metrics(torch.ones(4, 3), torch.ones(4, 3), ks=(1, 3))
    assert metrics["t2a_r1"] == 0.0 and metrics["t2a_r3"] == 0.0 and metrics["a2t_median_rank"] == 4.0


def test_groups_make_identical_captions_correct():
    audio = torch.eye(3)
    text = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # captions 0 and 1 are the same
    groups = ["solo piano", "solo piano", "drums"]
    without = retrieval_metrics(audio, text, ks=(1, 2))
    # t2a ranks 1, 3, 1: caption 1 prefers clip 0 and its own clip ties the rest at 0.
    # a2t ranks 2, 3, 1: clip 0 ties captions 0 and 1 (counted against it); clip 1 scores 0 everywhere.
    assert without["t2a_r1"] == pytest.approx(2 / 3) and without["t2a_median_rank"] == 1.0
    assert without["a2t_r1"] == pytest.approx(1 / 3) and without["a2t_r2"] == pytest.approx(2 / 3)
    assert without["a2t_median_rank"] == 2.0
    grouped = retrieval_metrics(audio, text, ks=(1, 2), groups=groups)
    # t2a ranks 1, 1, 1: caption 1 finds clip 0 (same caption) first.
    # a2t ranks 1, 2, 1: clip 0's tie is now between two correct captions; clip 1's best correct
    # caption (score 0) ties the wrong caption 2 (score 0).
    assert grouped["t2a_r1"] == 1.0 and grouped["t2a_median_rank"] == 1.0
    assert grouped["a2t_r1"] == pytest.approx(2 / 3) and grouped["a2t_r2"] == 1.0
    with pytest.raises(AssertionError, match="one label per item"):
        retrieval_metrics(audio, text, groups=groups[:2])


def test_bad_shapes_and_ks():
    with pytest.raises(AssertionError, match="same non-zero number of pairs"):
        retrieval_metrics(torch.eye(3), torch.eye(3)[:2])
    with pytest.raises(AssertionError, match="same D"):
        retrieval_metrics(torch.eye(3), torch.ones(3, 2))
    with pytest.raises(AssertionError, match="ks"):
        retrieval_metrics(torch.eye(3), torch.eye(3), ks=(0,))


def test_zero_shot_accuracy_hand_case():
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    # most similar prompts: 0, 1, 1 (0.8 > 0.6), 1 (0 > -1)
    assert zero_shot_accuracy(audio, prompts, torch.tensor([0, 1, 0, 1])) == 0.75
    assert zero_shot_accuracy(audio, prompts, torch.tensor([0, 1, 1, 1])) == 1.0
    tie = torch.tensor([[1.0, 1.0]])  # ties go to the lowest class index
    assert zero_shot_accuracy(tie, prompts, torch.tensor([0])) == 1.0
    assert zero_shot_accuracy(tie, prompts, torch.tensor([1])) == 0.0
    with pytest.raises(AssertionError, match=r"\[0, 2\)"):
        zero_shot_accuracy(audio, prompts, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(AssertionError, match="one class index per clip"):
        zero_shot_accuracy(audio, prompts, torch.tensor([0, 1]))
