import pytest
import torch
from torch.nn.utils import parametrize

from audiogen_lab.modules.conv import StreamableConv1d, StreamableConvTranspose1d
from audiogen_lab.modules.seanet import SEANetDecoder, SEANetEncoder

SMALL = dict(channels=1, dimension=6, n_filters=2, ratios=[4, 2], n_residual_layers=1, lstm=1,
             norm='weight_norm', pad_mode='constant')


def _convs(module):
    return [m for m in module.modules() if isinstance(m, (StreamableConv1d, StreamableConvTranspose1d))]


def _is_normalized(conv):
    inner = conv.conv.conv if isinstance(conv, StreamableConv1d) else conv.convtr.convtr
    return parametrize.is_parametrized(inner, 'weight')


@pytest.mark.parametrize('length', [64, 70])
def test_encoder_decoder_shapes(length):
    torch.manual_seed(0)
    encoder, decoder = SEANetEncoder(**SMALL), SEANetDecoder(**SMALL)
    assert encoder.hop_length == decoder.hop_length == 8
    z = encoder(torch.randn(3, 1, length))
    assert z.shape == (3, 6, -(-length // 8))
    assert decoder(z).shape == (3, 1, z.shape[-1] * 8)


def test_stereo_round_trip_shape_and_final_activation():
    torch.manual_seed(0)
    kwargs = dict(SMALL, channels=2, ratios=[5, 3], norm='time_group_norm', lstm=0)
    encoder = SEANetEncoder(**kwargs)
    decoder = SEANetDecoder(**kwargs, final_activation='Tanh')
    x = torch.randn(2, 2, 150) * 10
    y = decoder(encoder(x))
    assert y.shape == x.shape
    assert y.abs().max() <= 1.


@pytest.mark.parametrize('ratios', [[4, 2], [2, 3]])
def test_causal_encoder_and_decoder_do_not_look_ahead(ratios):
    torch.manual_seed(0)
    kwargs = dict(SMALL, ratios=ratios, causal=True)
    encoder, decoder = SEANetEncoder(**kwargs), SEANetDecoder(**kwargs)
    hop = encoder.hop_length
    x = torch.randn(1, 1, 20 * hop)
    x2 = x.clone()
    x2[..., 12 * hop:] = torch.randn(1, 1, 8 * hop)
    z, z2 = encoder(x), encoder(x2)
    torch.testing.assert_close(z[..., :12], z2[..., :12], rtol=0, atol=0)
    assert not torch.allclose(z[..., 12:], z2[..., 12:])
    y, y2 = decoder(z), decoder(z2)
    torch.testing.assert_close(y[..., :12 * hop], y2[..., :12 * hop], rtol=0, atol=0)


def test_non_causal_encoder_looks_ahead():
    torch.manual_seed(0)
    encoder = SEANetEncoder(**SMALL)
    x = torch.randn(1, 1, 160)
    x2 = x.clone()
    x2[..., 96:] += 1.
    assert not torch.allclose(encoder(x)[..., :12], encoder(x2)[..., :12])


def test_disable_norm_outer_blocks():
    n_blocks = len(SMALL['ratios']) + 2
    encoder = SEANetEncoder(**SMALL, disable_norm_outer_blocks=1)
    decoder = SEANetDecoder(**SMALL, disable_norm_outer_blocks=1)
    enc_convs, dec_convs = _convs(encoder), _convs(decoder)
    # only the convolutions touching the waveform lose their norm
    assert not _is_normalized(enc_convs[0]) and all(_is_normalized(c) for c in enc_convs[1:])
    assert not _is_normalized(dec_convs[-1]) and all(_is_normalized(c) for c in dec_convs[:-1])
    encoder = SEANetEncoder(**SMALL, disable_norm_outer_blocks=n_blocks)
    assert not any(_is_normalized(c) for c in _convs(encoder))
    with pytest.raises(AssertionError, match='disable_norm_outer_blocks'):
        SEANetEncoder(**SMALL, disable_norm_outer_blocks=n_blocks + 1)


def test_structure_options():
    base = SEANetEncoder(**SMALL)
    more = SEANetEncoder(**dict(SMALL, n_residual_layers=2, true_skip=False))
    # per stage: one more residual unit (2 convs) and a 1x1 shortcut conv in each of the 2 units
    assert len(_convs(more)) == len(_convs(base)) + 2 * (2 + 2)
    assert not any(isinstance(m, torch.nn.LSTM) for m in SEANetEncoder(**dict(SMALL, lstm=0)).modules())
    leaky = SEANetEncoder(**dict(SMALL, activation='LeakyReLU', activation_params={'negative_slope': 0.3}))
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.3 for m in leaky.modules())
    with pytest.raises(ValueError, match='activation'):
        SEANetEncoder(**dict(SMALL, activation='Swishy'))


def test_autoencoder_learns_identity():
    torch.manual_seed(0)
    kwargs = dict(SMALL, n_filters=4, lstm=0)
    encoder, decoder = SEANetEncoder(**kwargs), SEANetDecoder(**kwargs)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    t = torch.arange(256) / 256
    x = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (3., 5., 7., 11.)])[:, None]
    losses = []
    for _ in range(60):
        loss = (decoder(encoder(x)) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
