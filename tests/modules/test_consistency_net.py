import math

import pytest
import torch

from audiogen_lab.modules.consistency_net import (PRESETS, ConsistencyDecoder, ConsistencyEncoder, LevelPlan,
                                                  build_consistency_nets, consistency_net_kwargs)
from audiogen_lab.modules.unet2d import FrequencyAttention, FrequencyScaling, Upsample2d


pytestmark = pytest.mark.usefixtures("one_thread")  # the debug networks are tiny


def _debug(seed: int = 0):
    torch.manual_seed(seed)
    return build_consistency_nets('debug')


def _spec(batch: int = 2, frames: int = 16, bins: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 2, bins, frames, generator=torch.Generator().manual_seed(seed))


def _perturb_head(decoder: ConsistencyDecoder) -> None:
    with torch.no_grad():
        decoder.conv_out.weight.normal_(0, 0.1)
        decoder.conv_out.bias.normal_(0, 0.1)


def test_level_plan():
    plan = LevelPlan.build(1024, 64, (1, 2, 4, 4, 4), (True, False, False, False), freq_only_factor=4)
    assert plan.channels == (64, 128, 256, 256, 256)
    assert plan.freq_bins == (1024, 256, 128, 64, 32)
    assert plan.time_downsampling == 8
    with pytest.raises(AssertionError, match='one flag per transition'):
        LevelPlan.build(1024, 64, (1, 2), (True, False))
    with pytest.raises(AssertionError, match='divisible by 32'):
        LevelPlan.build(1000, 64, (1, 2, 4, 4, 4), (True, False, False, False))


def test_encoder_shapes_and_bound():
    encoder, _ = _debug()
    assert encoder.time_downsampling == 8 and encoder.frequency_bins == 64
    x = _spec(frames=24) * 10
    features = encoder.extract_features(x)
    assert features.shape == (2, encoder.feature_dim, 3)
    assert encoder.feature_dim == 32 * 8  # channels x bins of the last level
    z = encoder(x)
    assert z.shape == (2, 8, 3)
    assert z.abs().max() <= 1


def test_encoder_rejects_bad_inputs():
    encoder, decoder = _debug()
    with pytest.raises(AssertionError, match='pad the time axis to a multiple of 8 frames'):
        encoder(_spec(frames=20))
    with pytest.raises(AssertionError, match=r'\[B, 2, 64, N\]'):
        encoder(_spec(bins=32))
    with pytest.raises(AssertionError, match='multiple of 8'):
        decoder(_spec(frames=20), torch.zeros(2), decoder.prepare(torch.zeros(2, 8, 3)))


def test_upsampler_pyramid_matches_levels():
    encoder, decoder = _debug()
    pyramid = decoder.prepare(encoder(_spec(frames=16)))
    plan = decoder.plan
    assert [tuple(p.shape) for p in pyramid] == [
        (2, c, f, 16 // 2 ** level) for level, (c, f) in enumerate(zip(plan.channels, plan.freq_bins))]


def test_decoder_shape_and_zero_head():
    encoder, decoder = _debug()
    x = _spec()
    out = decoder(x, torch.randn(2), decoder.prepare(encoder(x)))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))


def test_pyramid_is_reused_unchanged():
    encoder, decoder = _debug()
    _perturb_head(decoder)
    x, c_noise = _spec(), torch.tensor([0.3, -1.0])
    with torch.no_grad():
        z = encoder(x)
        pyramid = decoder.prepare(z)
        saved = [p.clone() for p in pyramid]
        first = decoder(x, c_noise, pyramid)
        decoder(x + 1, c_noise + 1, pyramid)  # another sampling step with the same pyramid
        again = decoder(x, c_noise, pyramid)
        recomputed = decoder(x, c_noise, decoder.prepare(z))
    assert all(torch.equal(a, b) for a, b in zip(saved, pyramid))
    assert torch.equal(first, again)
    torch.testing.assert_close(first, recomputed)


def test_decoder_checks_pyramid():
    encoder, decoder = _debug()
    x = _spec()
    pyramid = decoder.prepare(encoder(x))
    with pytest.raises(AssertionError, match='decoder.prepare'):
        decoder(x, torch.zeros(2), pyramid[:-1])
    with pytest.raises(AssertionError, match='one noise level per example'):
        decoder(x, torch.zeros(3), pyramid)


def test_gradients_reach_the_encoder():
    encoder, decoder = _debug()
    _perturb_head(decoder)
    x = _spec()
    out = decoder(x + 0.1 * torch.randn_like(x), torch.full((2,), -1.0), decoder.prepare(encoder(x)))
    (out - x).square().mean().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    for module in (encoder.conv_in, encoder.proj_out, decoder.upsampler.proj_in, decoder.conv_in):
        assert module.weight.grad.abs().sum() > 0


def test_noise_level_conditions_the_output():
    encoder, decoder = _debug()
    _perturb_head(decoder)
    x = _spec()
    with torch.no_grad():
        pyramid = decoder.prepare(encoder(x))
        low = decoder(x, torch.full((2,), -1.5), pyramid)
        high = decoder(x, torch.full((2,), 1.0), pyramid)
    assert (low - high).abs().mean() > 1e-3 * low.abs().mean()


def test_frequency_scaling_starts_as_identity_and_learns_a_map():
    scaling = FrequencyScaling(emb_dim=8, channels=4, freq_bins=6, rank=2)
    x, emb = torch.randn(3, 4, 6, 5), torch.randn(3, 8)
    assert torch.equal(scaling(x, emb), x)
    with torch.no_grad():
        scaling.to_bins.weight.normal_()
    scale = scaling.scale(emb)
    assert scale.shape == (3, 4, 6)
    torch.testing.assert_close(scaling(x, emb), x * (1 + scale[..., None]))


def test_frequency_attention_is_per_frame():
    torch.manual_seed(0)
    attention = FrequencyAttention(8, heads=2)
    attention.norm = torch.nn.Identity()  # GroupNorm statistics span all frames; the attention does not
    with torch.no_grad():
        attention.out.weight.normal_()
    x = torch.randn(2, 8, 6, 5)
    changed = x.clone()
    changed[..., 3] += 1.0  # only frame 3 changes
    diff = (attention(changed) - attention(x)).abs().sum(dim=(0, 1, 2))
    assert diff[3] > 0 and torch.all(diff[[0, 1, 2, 4]] < 1e-5)


def test_upsample_shape():
    assert Upsample2d(4, 3, (4, 1))(torch.randn(1, 4, 5, 6)).shape == (1, 3, 20, 6)


def test_reference_size_and_latent_shape_on_meta():
    with torch.device('meta'):
        encoder, decoder = build_consistency_nets('reference')
        x = torch.empty(1, 2, 1024, 64)
        z = encoder(x)
        out = decoder(x, torch.empty(1), decoder.prepare(z))
    total = sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in decoder.parameters())
    assert abs(total - 58e6) / 58e6 < 0.03, total
    assert encoder.frequency_bins == 1024 and encoder.time_downsampling == 8
    assert z.shape == (1, 64, 8)
    assert out.shape == x.shape


def test_presets_are_copies():
    kwargs = consistency_net_kwargs('debug')
    kwargs['encoder']['latent_dim'] = 3
    assert PRESETS['debug']['encoder']['latent_dim'] == 8
    with pytest.raises(ValueError, match='debug'):
        consistency_net_kwargs('huge')
    encoder, decoder = build_consistency_nets('debug', latent_dim=4, decoder_kwargs=dict(emb_dim=16))
    assert isinstance(encoder, ConsistencyEncoder) and encoder.latent_dim == 4
    assert decoder.upsampler.latent_dim == 4 and decoder.noise_embedding.mlp[0].out_features == 16


def test_debug_autoencoder_overfits_a_batch():
    encoder, decoder = _debug()
    x = _spec(batch=2, frames=8)
    sigma = 0.01
    x_noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    c_noise = torch.full((2,), math.log(sigma) / 4)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = (decoder(x_noisy, c_noise, decoder.prepare(encoder(x))) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
