"""Teacher-forced reconstruction metrics: a perfect stage reaches the codec's ceiling, random logits do not,
only the stage's levels are replaced, and padding frames never count."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.encodec import EncodecModel
from audiogen_lab.models.token_reconstruction import (check_codec, mix_levels, teacher_forced_codes,
                                                      teacher_forced_reconstruction)
from audiogen_lab.models.token_sequences import IGNORE, Sequences, pack_sequences
from audiogen_lab.modules.seanet import SEANetDecoder, SEANetEncoder
from audiogen_lab.quantization.rvq import ResidualVectorQuantizer
from audiogen_lab.solvers.audiolm import stage_plan

SAMPLE_RATE, HOP, LEVELS, CODES, COARSE, CLUSTERS = 4000, 40, 4, 16, 2, 8
FRAMES, LENGTHS = 24, [24, 24, 12]  # the last item ends inside the crop: 12 padding frames


@pytest.fixture(scope="module")
def codec() -> EncodecModel:
    """A tiny EnCodec (4 levels of 16 codes, 100 frames/s at 4 kHz), codebooks initialised on sines, decoder
    biases at zero so that its audio depends on the codes only (an untrained decoder's is mostly its biases)."""
    torch.manual_seed(0)
    kwargs = dict(channels=1, dimension=8, n_filters=4, ratios=[5, 4, 2], lstm=0, norm="weight_norm")
    model = EncodecModel(SEANetEncoder(**kwargs), SEANetDecoder(**kwargs),
                         ResidualVectorQuantizer(dimension=8, n_q=LEVELS, bins=CODES, kmeans_iters=5),
                         frame_rate=SAMPLE_RATE / HOP, sample_rate=SAMPLE_RATE, channels=1)
    model.train()
    with torch.no_grad():
        model(_sines(8, 100))
        for name, param in model.decoder.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    return model.eval()


def _sines(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * HOP) / SAMPLE_RATE
    freqs = torch.rand(batch, 1, 3, 1, generator=gen) * 600 + 50
    return (0.3 * torch.sin(2 * math.pi * freqs * t)).sum(dim=2)


def _batch(codec: EncodecModel, stage: str):
    """True codes [3, 4, FRAMES] (random codes on padding frames), lengths, packed rows and the stage plan,
    as the AudioLM solver builds them."""
    with torch.no_grad():
        codes = codec.encode(_sines(len(LENGTHS), FRAMES, seed=1))[0]
    lengths = torch.tensor(LENGTHS)
    padding = torch.arange(FRAMES)[None, None, :] >= lengths[:, None, None]
    codes = torch.where(padding, torch.randint(0, CODES, codes.shape, generator=torch.Generator().manual_seed(2)),
                        codes)
    plan = stage_plan(OmegaConf.create({"stage": stage, "cardinality": CLUSTERS, "acoustic_cardinality": CODES,
                                        "num_acoustic_levels": LEVELS, "num_coarse": COARSE}))
    offset = plan.vocab.offset(1)
    if stage == "coarse":
        prefix, prefix_lengths = torch.randint(0, CLUSTERS, (3, FRAMES // 2)), lengths // 2
        target = plan.target.flatten(codes[:, :COARSE]) + offset
    else:
        prefix, prefix_lengths = plan.prefix.flatten(codes[:, :COARSE]), lengths * COARSE
        target = plan.target.flatten(codes[:, COARSE:]) + offset
    seq = pack_sequences(target, lengths * 2, lengths < FRAMES, bos_id=plan.bos_id, pad_id=plan.pad_id,
                         eos_id=plan.eos_id, prefix=prefix, prefix_lengths=prefix_lengths, prefix_weight=0.1)
    return codes, lengths, seq, plan


def _perfect_logits(seq, vocab_size: int) -> torch.Tensor:
    logits = torch.zeros(*seq.targets.shape, vocab_size)
    return logits.scatter(-1, seq.targets.clamp_min(0)[..., None], 20.0) * (seq.targets != IGNORE)[..., None]


def _scores(codec, codes, lengths, seq, plan, logits, **kwargs) -> dict:
    scores = teacher_forced_reconstruction(codec, logits, seq, codes, lengths, plan.target, plan.vocab.offset(1),
                                           **kwargs)
    return {key: float(value) for key, value in scores.items()}


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_perfect_logits_reach_the_codec_ceiling_and_random_ones_do_not(codec, stage):
    codes, lengths, seq, plan = _batch(codec, stage)
    perfect = _scores(codec, codes, lengths, seq, plan, _perfect_logits(seq, plan.vocab.vocab_size))
    assert set(perfect) == {"recon_si_snr", "recon_mel", "recon_si_snr_shuffled", "recon_mel_shuffled"}
    assert perfect["recon_si_snr"] > 40 and perfect["recon_mel"] < 1e-6, perfect  # same audio (SI-SNR: epsilon-bound)
    noise = torch.randn(*seq.targets.shape, plan.vocab.vocab_size, generator=torch.Generator().manual_seed(3))
    random = _scores(codec, codes, lengths, seq, plan, noise)
    assert random["recon_si_snr"] < perfect["recon_si_snr"] - 25, random
    assert random["recon_mel"] > 0.05, random
    assert perfect["recon_si_snr_shuffled"] < perfect["recon_si_snr"] - 25  # the chance reference is far below...
    assert random["recon_si_snr_shuffled"] == perfect["recon_si_snr_shuffled"]  # ...and does not depend on the LM
    assert all(math.isfinite(value) for value in [*perfect.values(), *random.values()])


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_only_the_stage_levels_of_real_frames_are_replaced(codec, stage):
    codes, lengths, seq, plan = _batch(codec, stage)
    offset, first = plan.vocab.offset(1), plan.target.first_level
    logits = torch.randn(*seq.targets.shape, plan.vocab.vocab_size, generator=torch.Generator().manual_seed(4))
    predicted = teacher_forced_codes(logits, seq, plan.target, offset, FRAMES)
    expected = torch.full((3, 2, FRAMES), -1)
    for item, position in (seq.target_index >= 0).nonzero().tolist():
        index = int(seq.target_index[item, position])
        level, frame = index % 2, index // 2
        low = offset + level * CODES
        expected[item, level, frame] = int(logits[item, position, low:low + CODES].argmax())
    assert torch.equal(predicted, expected)
    assert bool((predicted[2, :, 12:] == -1).all()) and bool((predicted[:, :, :12] >= 0).all())
    mixed = mix_levels(codes, predicted, first)
    stage_levels = torch.zeros(LEVELS, dtype=torch.bool)
    stage_levels[first:first + 2] = True
    assert torch.equal(mixed[:, ~stage_levels], codes[:, ~stage_levels])  # the other levels stay true
    assert torch.equal(mixed[:2, stage_levels], predicted[:2])
    assert torch.equal(mixed[2, stage_levels, :12], predicted[2, :, :12])
    assert torch.equal(mixed[2, :, 12:], codes[2, :, 12:])  # padding frames keep their codes
    assert bool((mixed[:, stage_levels] != codes[:, stage_levels]).any())


def test_padding_frames_are_ignored(codec):
    codes, lengths, seq, plan = _batch(codec, "fine")
    logits = torch.randn(*seq.targets.shape, plan.vocab.vocab_size, generator=torch.Generator().manual_seed(5))
    base = _scores(codec, codes, lengths, seq, plan, logits)
    other = codes.clone()
    other[2, :, 12:] = (other[2, :, 12:] + 5) % CODES
    unused = seq.target_index < 0
    noisy = torch.where(unused[..., None], torch.randn_like(logits), logits)
    again = _scores(codec, other, lengths, seq, plan, noisy)
    assert base == pytest.approx(again, abs=1e-5)
    alone = _scores(codec, codes[2:, :, :12], lengths[2:], _rows(seq, 2, 3), plan, logits[2:])  # the short item
    first_two = _scores(codec, codes[:2], lengths[:2], _rows(seq, 0, 2), plan, logits[:2])
    for key in ("recon_si_snr", "recon_mel"):  # (the chance reference draws other permutations item by item)
        assert base[key] == pytest.approx((first_two[key] * 2 + alone[key]) / 3, rel=1e-4), key


def _rows(seq: Sequences, start: int, stop: int) -> Sequences:
    return Sequences(seq.inputs[start:stop], seq.targets[start:stop], seq.weights[start:stop],
                     seq.target_index[start:stop])


def test_max_items_and_codec_checks(codec):
    codes, lengths, seq, plan = _batch(codec, "fine")
    logits = torch.randn(*seq.targets.shape, plan.vocab.vocab_size, generator=torch.Generator().manual_seed(6))
    first = _scores(codec, codes, lengths, seq, plan, logits, max_items=1)
    assert first == pytest.approx(_scores(codec, codes[:1], lengths[:1], _rows(seq, 0, 1), plan, logits[:1]))
    check_codec(codec, LEVELS, CODES)
    with pytest.raises(ValueError, match="compression_model_checkpoint"):
        check_codec(codec, LEVELS + 1, CODES)
    with pytest.raises(ValueError, match="compression_model_checkpoint"):
        check_codec(codec, LEVELS, CODES * 2)
