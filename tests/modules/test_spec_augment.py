import math

import pytest
import torch

from audiogen_lab.modules.spec_augment import RandomTimeStretch, SpecAugment, random_crop, time_stretch

LENGTHS = torch.tensor([40, 25, 12])


def _spec(seed: int = 0, lengths: torch.Tensor = LENGTHS, freq: int = 16) -> torch.Tensor:
    """Spectrograms [B, F, T] with values far from 0 and -1 on valid frames, and 0.0 on padding."""
    spec = torch.randn(len(lengths), freq, int(lengths.max()), generator=torch.Generator().manual_seed(seed)) + 10
    valid = torch.arange(spec.shape[-1])[None, :] < lengths[:, None]
    return spec * valid[:, None, :]


def _bands(flags: torch.Tensor):
    """(start, stop) of each run of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).int()
    edges = (padded[1:] - padded[:-1]).nonzero()[:, 0].tolist()
    return list(zip(edges[0::2], edges[1::2]))


# SpecAugment

def test_spec_augment_masks_within_widths_inside_valid_frames_and_leaves_padding():
    aug = SpecAugment(freq_mask_param=5, time_mask_param=6, num_freq_masks=1, num_time_masks=1, mask_value=-1.0)
    torch.manual_seed(0)
    freq_widths, time_widths, short_item_masks = [], [], 0
    for seed in range(40):
        spec = _spec(seed)
        out = aug(spec, LENGTHS)
        assert out.shape == spec.shape and out.dtype == spec.dtype
        masked = out == -1.0
        # Every cell is either kept or masked.
        assert torch.equal(out[~masked], spec[~masked])
        for b, length in enumerate(LENGTHS.tolist()):
            assert (out[b, :, length:] == 0.0).all(), "padding frames must keep the fill value"
            rows = masked[b, :, :length].all(dim=1)  # frequency bands (lengths > time_mask_param)
            cols = masked[b].all(dim=0)  # time spans (F > freq_mask_param)
            row_bands, col_bands = _bands(rows), _bands(cols)
            assert len(row_bands) <= 1 and len(col_bands) <= 1
            assert torch.equal(masked[b, :, :length], rows[:, None] | cols[None, :length])
            for start, stop in row_bands:
                freq_widths.append(stop - start)
            for start, stop in col_bands:
                assert stop <= length, "time masks must stay inside the valid frames"
                time_widths.append(stop - start)
                short_item_masks += b == 2 and stop > start
    assert max(freq_widths) == 4 and max(time_widths) == 6  # FrequencyMasking draws widths < param
    assert len(time_widths) > 80 and len(freq_widths) > 80
    # Width 0 has probability 1/7; a mask drawn over the padded length would mostly miss the 12 valid frames.
    assert short_item_masks >= 28


def test_spec_augment_changes_input_per_item_and_is_identity_in_eval():
    aug = SpecAugment(mask_value=-1.0)
    spec = _spec(1)
    same = torch.stack([spec[0]] * 3)
    torch.manual_seed(3)
    out = aug(same, torch.full((3,), 40))
    assert not torch.equal(out, same)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2]), "masks are drawn per item"
    aug.eval()
    assert aug(spec, LENGTHS) is spec


def test_spec_augment_several_masks_cover_at_most_their_widths():
    aug = SpecAugment(freq_mask_param=3, time_mask_param=4, num_freq_masks=3, num_time_masks=2, mask_value=-1.0)
    torch.manual_seed(1)
    for seed in range(10):
        out = aug(_spec(seed), LENGTHS)
        for b, length in enumerate(LENGTHS.tolist()):
            masked = out[b, :, :length] == -1.0
            assert masked.all(dim=1).sum() <= 3 * 2
            assert masked.all(dim=0).sum() <= 2 * 4


def test_spec_augment_is_reproducible_under_manual_seed():
    aug = SpecAugment()
    spec = _spec(2)
    torch.manual_seed(7)
    first = aug(spec, LENGTHS)
    torch.manual_seed(7)
    assert torch.equal(aug(spec, LENGTHS), first)
    assert not torch.equal(aug(spec, LENGTHS), first)


def test_spec_augment_rejects_bad_lengths():
    with pytest.raises(ValueError, match="lengths"):
        SpecAugment()(_spec(0), torch.tensor([41, 1, 1]))


# Time stretch

def test_time_stretch_of_a_ramp_matches_linear_interpolation():
    ramp = torch.arange(4.0).expand(2, 4)[None].clone()  # [1, F=2, T=4]
    out, lengths = time_stretch(ramp, torch.tensor([4]), torch.tensor([0.5]))
    # Output frame j samples the input at (j + 0.5) / 2 - 0.5, clamped to [0, 3].
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    assert lengths.tolist() == [8] and out.shape == (1, 2, 8)
    assert torch.allclose(out[0], expected.expand(2, 8))
    fast, fast_lengths = time_stretch(ramp, torch.tensor([4]), torch.tensor([2.0]))
    assert fast_lengths.tolist() == [2]
    assert torch.allclose(fast[0], torch.tensor([0.5, 2.5]).expand(2, 2))


def test_random_time_stretch_changes_input_and_lengths_follow_drawn_rates():
    aug = RandomTimeStretch(min_rate=0.8, max_rate=1.25)
    spec = _spec(0)
    for seed in range(5):
        rates = aug.sample_rates(3, torch.Generator().manual_seed(seed))
        assert ((rates >= 0.8) & (rates <= 1.25)).all() and (rates != 1.0).all()
        out, lengths = aug(spec, LENGTHS, generator=torch.Generator().manual_seed(seed))
        assert out.dtype == spec.dtype and lengths.dtype == LENGTHS.dtype
        assert out.shape == (3, 16, int(lengths.max()))
        assert ((lengths.double() - LENGTHS.double() / rates).abs() <= 1).all()
        assert not torch.equal(lengths, LENGTHS) or not torch.equal(out, spec), "time stretch did nothing"
        for b, length in enumerate(lengths.tolist()):
            assert (out[b, :, length:] == 0.0).all()
            assert (out[b, :, :length] > 5).all(), "valid frames are interpolated from valid frames only"


@pytest.mark.parametrize('rate', [0.8, 1.25, 2.0])
def test_fixed_rate_changes_every_length_by_the_rate(rate):
    aug = RandomTimeStretch(min_rate=rate, max_rate=rate)
    spec = _spec(3)
    out, lengths = aug(spec, LENGTHS)
    assert ((lengths.double() - LENGTHS.double() / rate).abs() <= 1).all()
    assert (lengths != LENGTHS).all()
    assert out.shape[-1] == int(lengths.max())
    assert out.shape[-1] != spec.shape[-1]


def test_time_stretch_of_constant_rows_keeps_the_values():
    spec = torch.zeros(2, 3, 30)
    spec[0, :, :30] = 4.0
    spec[1, :, :17] = -2.0
    out, lengths = time_stretch(spec, torch.tensor([30, 17]), torch.tensor([1.2, 0.9]))
    assert lengths.tolist() == [25, 19]
    assert torch.allclose(out[0, :, :25], torch.tensor(4.0)) and torch.allclose(out[1, :, :19], torch.tensor(-2.0))
    assert (out[0, :, 25:] == 0).all()


def test_random_time_stretch_identity_in_eval_and_with_prob_zero_and_reproducible():
    spec = _spec(4)
    aug = RandomTimeStretch().eval()
    out, lengths = aug(spec, LENGTHS)
    assert out is spec and lengths is LENGTHS
    out, lengths = RandomTimeStretch(prob=0.0)(spec, LENGTHS)
    assert torch.equal(out, spec) and torch.equal(lengths, LENGTHS)
    aug.train()
    torch.manual_seed(11)
    first = aug(spec, LENGTHS)
    torch.manual_seed(11)
    second = aug(spec, LENGTHS)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_random_time_stretch_rejects_bad_ranges():
    with pytest.raises(ValueError, match="min_rate"):
        RandomTimeStretch(min_rate=1.5, max_rate=1.2)
    with pytest.raises(ValueError, match="prob"):
        RandomTimeStretch(prob=1.5)


# Random crop

def _wave(lengths: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Audio [B, C, T] whose valid samples are all distinct and non-zero, zero-padded."""
    b, t = len(lengths), int(lengths.max())
    wave = (torch.arange(b)[:, None, None] * 1000 + torch.arange(channels)[None, :, None] * 100
            + torch.arange(t)[None, None, :] + 1).float()
    return wave * (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]


def test_random_crop_is_a_contiguous_slice_of_the_source():
    lengths = torch.tensor([50, 30, 7, 0])
    wave = _wave(lengths)
    seen_lengths, seen_starts = set(), set()
    for seed in range(30):
        out, new = random_crop(wave, lengths, min_ratio=0.5, generator=torch.Generator().manual_seed(seed))
        assert out.dtype == wave.dtype and out.shape == (4, 2, int(new.max()))
        for b, (length, n) in enumerate(zip(lengths.tolist(), new.tolist())):
            assert math.ceil(0.5 * length) <= n <= length
            assert (out[b, :, n:] == 0).all()
            if n == 0:
                continue
            start = int(out[b, 0, 0]) - (b * 1000 + 1)
            assert 0 <= start and start + n <= length
            assert torch.equal(out[b, :, :n], wave[b, :, start:start + n])
            if b == 0:
                seen_lengths.add(n)
                seen_starts.add(start)
    assert len(seen_lengths) > 5 and len(seen_starts) > 5
    assert min(seen_lengths) < 35


def test_random_crop_with_ratio_one_keeps_everything():
    lengths = torch.tensor([9, 6])
    wave = _wave(lengths)
    out, new = random_crop(wave, lengths, min_ratio=1.0)
    assert torch.equal(new, lengths) and torch.equal(out, wave)


def test_random_crop_is_reproducible_and_checks_min_ratio():
    lengths = torch.tensor([40, 33])
    wave = _wave(lengths)
    torch.manual_seed(5)
    first = random_crop(wave, lengths, 0.3)
    torch.manual_seed(5)
    second = random_crop(wave, lengths, 0.3)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with_gen = [random_crop(wave, lengths, 0.3, generator=torch.Generator().manual_seed(2)) for _ in range(2)]
    assert torch.equal(with_gen[0][0], with_gen[1][0])
    with pytest.raises(ValueError, match="min_ratio"):
        random_crop(wave, lengths, 0.0)
