"""//pretrained/ EnCodec: the package's checkpoints converted into our EncodecModel give the package's
codes and audio; lookup order, errors and safety of the checkpoint files."""
import os
import warnings

import encodec
import pytest
import torch
import vector_quantize_pytorch.vector_quantize_pytorch as vq_impl

from audiogen_lab.environment import AudioGenEnvironment
from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.encodec import EncodecModel
from audiogen_lab.models.loaders import load_compression_model
from audiogen_lab.models.meta_encodec import decode_segmented, encode_segmented
from audiogen_lab.models.pretrained import (PRETRAINED, PRETRAINED_ENV, find_pretrained_checkpoint,
                                            get_pretrained_model, pretrained_config, pretrained_state_dict)

PACKAGE_BUILDERS = {'encodec_24khz': encodec.EncodecModel.encodec_model_24khz,
                    'encodec_48khz': encodec.EncodecModel.encodec_model_48khz}


def _package_model(name: str, seed: int = 0) -> encodec.EncodecModel:
    """A random ``encodec`` package model whose codebooks look trained: codewords at the scale of the
    residuals, EMA statistics consistent with them, marked initialised."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # the package uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter('ignore')
        model = PACKAGE_BUILDERS[name](pretrained=False)
    with torch.no_grad():
        latents = model.encoder(torch.randn(1, model.channels, 4800) * 0.1)
        for k, layer in enumerate(model.quantizer.vq.layers):
            codebook = layer._codebook
            codebook.embed.normal_(std=latents.std().item() * 0.85 ** k)
            codebook.cluster_size.uniform_(1., 50.)
            codebook.embed_avg.copy_(codebook.embed * codebook.cluster_size[:, None])
            codebook.inited.fill_(1.)
    return model.eval()


@pytest.fixture
def checkpoint_dir(tmp_path, monkeypatch):
    """An empty pretrained folder pointed to by the env var, no team reference folder, an empty hub."""
    folder = tmp_path / 'pretrained'
    folder.mkdir()
    monkeypatch.setenv(PRETRAINED_ENV, str(folder))
    monkeypatch.delenv('AUDIOGEN_LAB_REFERENCE_DIR', raising=False)
    monkeypatch.setattr(AudioGenEnvironment, 'get_reference_dir', classmethod(lambda cls: None))
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return folder


def _write(model, folder, name):
    """Save `model`'s state dict as the checkpoint file of `name` in `folder` (a placeholder file when
    `model` is None: for lookups only)."""
    path = folder / PRETRAINED[name].checkpoints[0]
    if model is None:
        path.write_bytes(b'placeholder')
    else:
        torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_24khz_codes_and_audio_equal_the_package(checkpoint_dir):
    reference = _package_model('encodec_24khz')
    _write(reference, checkpoint_dir, 'encodec_24khz')
    model = CompressionModel.get_pretrained('//pretrained/encodec_24khz')
    assert type(model) is EncodecModel and not model.training
    assert (model.sample_rate, model.channels, model.frame_rate) == (24000, 1, 75.)
    assert (model.total_codebooks, model.cardinality) == (32, 1024)
    torch.manual_seed(1)
    x = torch.randn(1, 1, 4000) * 0.1  # not a multiple of the hop: the convolutions pad the last window
    with torch.no_grad():
        latents = reference.encoder(x)
        torch.testing.assert_close(model.encoder(x), latents, rtol=0, atol=1e-5 * latents.abs().max().item())
        for bandwidth, n_q in ((1.5, 2), (6., 8), (24., 32)):
            model.set_num_codebooks(n_q)
            ref_codes = reference.quantizer.encode(latents, reference.frame_rate, bandwidth).transpose(0, 1)
            codes = model.quantizer.encode(latents)
            assert codes.shape == (1, n_q, 13) and torch.equal(codes, ref_codes)
            ref_audio = reference.decode([(ref_codes, None)])
            torch.testing.assert_close(model.decode(codes), ref_audio, rtol=0,
                                       atol=1e-5 * ref_audio.abs().max().item())
        assert len(codes.unique()) > 50 and (codes[..., 1:] != codes[..., :-1]).any()  # non-trivial codes
        # the whole path at 24 kbps: encode, and forward (encode, decode, trim)
        reference.set_target_bandwidth(24.)
        encoded, scale = model.encode(x)
        assert scale is None and torch.equal(encoded, codes)
        result = model(x)
        torch.testing.assert_close(result.x, reference(x), rtol=0, atol=1e-5 * ref_audio.abs().max().item())
        assert result.bandwidth.item() == pytest.approx(24.)


@pytest.mark.slow
def test_48khz_codes_and_audio_equal_the_package(checkpoint_dir):
    reference = _package_model('encodec_48khz')
    _write(reference, checkpoint_dir, 'encodec_48khz')
    model = load_compression_model('encodec_48khz')
    assert type(model) is EncodecModel and model.renormalize and not model.causal
    assert (model.sample_rate, model.channels, model.frame_rate, model.total_codebooks) == (48000, 2, 150., 16)
    torch.manual_seed(3)
    short = torch.randn(1, 2, 9000) * 0.1  # under 0.99 s: one segment in the package
    long = torch.randn(1, 2, 9800) * 0.1
    with torch.no_grad():
        for bandwidth, n_q in ((3., 2), (24., 16)):
            reference.set_target_bandwidth(bandwidth)
            model.set_num_codebooks(n_q)
            [(ref_codes, ref_scale)] = reference.encode(short)
            codes, scale = model.encode(short)
            assert torch.equal(codes, ref_codes) and codes.shape == (1, n_q, 29)
            torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)
            ref_audio = reference.decode([(ref_codes, ref_scale)])
            tolerance = 1e-5 * ref_audio.abs().max().item()
            torch.testing.assert_close(model.decode(codes, scale), ref_audio, rtol=0, atol=tolerance)
        torch.testing.assert_close(model(short).x, reference(short), rtol=0, atol=tolerance)
        # segmented coding, with 0.1 s segments instead of 1 s to keep the test short: 3 segments with
        # 1 % overlap, the last one short
        reference.segment = 0.1
        frames = reference.encode(long)
        codes, scale = encode_segmented(model, long, segment=0.1)
        assert len(frames) == 3 and scale.shape == (1, 3)
        assert torch.equal(codes, torch.cat([c for c, _ in frames], dim=-1))
        torch.testing.assert_close(scale, torch.cat([s for _, s in frames], dim=1), rtol=1e-6, atol=0)
        ref_audio = reference.decode(frames)
        torch.testing.assert_close(decode_segmented(model, codes, scale, segment=0.1), ref_audio, rtol=0,
                                   atol=1e-5 * ref_audio.abs().max().item())
    with pytest.raises(AssertionError, match='one per segment'):
        decode_segmented(model, codes, scale[:, :1], segment=0.1)


def test_converted_codebooks_are_not_reinitialised(checkpoint_dir, monkeypatch):
    reference = _package_model('encodec_24khz')
    _write(reference, checkpoint_dir, 'encodec_24khz')
    model = get_pretrained_model('encodec_24khz')
    layers = model.quantizer.vq.layers
    assert all(bool(layer._codebook.initted) for layer in layers)
    torch.testing.assert_close(layers[3]._codebook.embed[0], reference.quantizer.vq.layers[3]._codebook.embed)

    def no_kmeans(*args, **kwargs):
        raise AssertionError('k-means ran on converted codebooks')

    monkeypatch.setattr(vq_impl, 'kmeans', no_kmeans)
    before = layers[0]._codebook.embed.clone()
    model.train()
    model(torch.randn(1, 1, 3200) * 0.1)  # one training step: an EMA update, no k-means
    change = (layers[0]._codebook.embed - before).norm() / before.norm()
    assert 0 < change.item() < 0.5  # EMA and dead-code updates only


def test_missing_checkpoint_names_file_and_locations(checkpoint_dir, tmp_path, monkeypatch):
    reference_dir = tmp_path / 'team_reference'
    monkeypatch.setattr(AudioGenEnvironment, 'get_reference_dir', classmethod(lambda cls: reference_dir))
    with pytest.raises(FileNotFoundError) as info:
        CompressionModel.get_pretrained('//pretrained/encodec_24khz')
    message = str(info.value)
    assert 'encodec_24khz-d7cc33bc.th' in message
    for place in (checkpoint_dir, reference_dir, tmp_path / 'hub' / 'checkpoints'):
        assert str(place) in message
    assert PRETRAINED_ENV in message and 'reference_dir' in message
    with pytest.raises(KeyError, match='encodec_32khz'):
        CompressionModel.get_pretrained('//pretrained/encodec_32khz')


def test_lookup_order(checkpoint_dir, tmp_path, monkeypatch):
    """Explicit repository only; else $AUDIOGEN_LAB_PRETRAINED_DIR, the team reference folder, the hub."""
    model = None
    hub = tmp_path / 'hub' / 'checkpoints'
    reference_dir = tmp_path / 'reference'
    for folder in (hub, reference_dir):
        folder.mkdir(parents=True)
    monkeypatch.setattr(AudioGenEnvironment, 'get_reference_dir', classmethod(lambda cls: reference_dir))
    hub_file = _write(model, hub, 'encodec_24khz')
    assert find_pretrained_checkpoint('encodec_24khz') == hub_file
    reference_file = _write(model, reference_dir, 'encodec_24khz')
    assert find_pretrained_checkpoint('encodec_24khz') == reference_file
    env_file = _write(model, checkpoint_dir, 'encodec_24khz')
    assert find_pretrained_checkpoint('encodec_24khz') == env_file
    other = tmp_path / 'elsewhere'
    other.mkdir()
    with pytest.raises(FileNotFoundError, match='elsewhere'):  # an explicit folder is the only place searched
        find_pretrained_checkpoint('encodec_24khz', repository=other)
    renamed = other / 'my_weights.th'
    os.replace(env_file, renamed)
    assert find_pretrained_checkpoint('encodec_24khz', repository=renamed) == renamed
    assert find_pretrained_checkpoint('encodec_24khz') == reference_file


def test_team_reference_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(PRETRAINED_ENV, raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    monkeypatch.setenv('AUDIOGEN_LAB_REFERENCE_DIR', str(tmp_path))
    AudioGenEnvironment.reset()
    try:
        path = _write(None, tmp_path, 'encodec_24khz')
        assert find_pretrained_checkpoint('//pretrained/encodec_24khz') == path
    finally:
        AudioGenEnvironment.reset()


def test_unsafe_or_corrupt_checkpoint_is_refused(checkpoint_dir, tmp_path):
    marker = tmp_path / 'ran'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    path = checkpoint_dir / PRETRAINED['encodec_24khz'].checkpoints[0]
    torch.save({'payload': Payload()}, path)
    with pytest.raises(RuntimeError, match=str(path)):
        get_pretrained_model('encodec_24khz')
    assert not marker.exists()
    torch.save({'encoder.bogus': torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match='not a state dict'):
        get_pretrained_model('encodec_24khz')
    with pytest.raises(RuntimeError, match='sha256'):
        pretrained_state_dict('encodec_24khz', verify_checksum=True)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RuntimeError, match='corrupt or truncated'):
        pretrained_state_dict('//pretrained/encodec_24khz')


def test_registry_config_builds_the_released_architecture():
    for name, (sample_rate, channels, norm, n_q) in {'encodec_24khz': (24000, 1, 'weight_norm', 32),
                                                     'encodec_48khz': (48000, 2, 'time_group_norm', 16)}.items():
        cfg = pretrained_config(name)
        assert (cfg.sample_rate, cfg.channels, cfg.seanet.norm, cfg.rvq.n_q) == (sample_rate, channels, norm, n_q)
        assert PRETRAINED[name].family == 'compression'
