import os
import warnings

import pytest
import torch

from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.pretrained import (PRETRAINED_CHECKPOINTS, PRETRAINED_ENV, EncodecPretrainedModel,
                                            build_package_model, find_pretrained_checkpoint,
                                            get_pretrained_model)


def _package_model(name: str, seed: int = 0):
    """A randomly initialised ``encodec`` package model with usable (random, initialised) codebooks."""
    torch.manual_seed(seed)
    model = build_package_model(name)
    with torch.no_grad():
        latents = model.encoder(torch.randn(1, model.channels, 4800) * 0.1)
        for k, layer in enumerate(model.quantizer.vq.layers):  # codewords at the scale of the residuals
            layer._codebook.embed.normal_(std=latents.std().item() * 0.7 ** k)
            layer._codebook.inited.fill_(1.)
    return model.eval()


@pytest.fixture
def checkpoint_dir(tmp_path, monkeypatch):
    """An empty pretrained folder pointed to by the env var, and an empty torch hub folder."""
    folder = tmp_path / 'pretrained'
    folder.mkdir()
    monkeypatch.setenv(PRETRAINED_ENV, str(folder))
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return folder


def _write(model, folder, name):
    path = folder / PRETRAINED_CHECKPOINTS[name]
    torch.save(model.state_dict(), path)
    return path


def test_24khz_matches_package_model(checkpoint_dir):
    reference = _package_model('encodec_24khz')
    _write(reference, checkpoint_dir, 'encodec_24khz')
    model = CompressionModel.get_pretrained('//pretrained/encodec_24khz')
    assert isinstance(model, EncodecPretrainedModel) and not model.training
    assert (model.sample_rate, model.channels, model.frame_rate) == (24000, 1, 75.)
    assert (model.total_codebooks, model.num_codebooks, model.cardinality) == (32, 32, 1024)
    torch.manual_seed(1)
    x = torch.randn(2, 1, 4000) * 0.1
    with torch.no_grad():
        codes, scale = model.encode(x)
        [(ref_codes, ref_scale)] = reference.encode(x)
        assert scale is None and ref_scale is None
        assert codes.shape == (2, 32, 13) and torch.equal(codes, ref_codes)
        assert (codes[..., 1:] != codes[..., :-1]).any() and len(codes.unique()) > 32  # non-trivial codes
        assert torch.equal(model.decode(codes), reference.decode([(ref_codes, None)]))
        result = model(x)
        assert torch.equal(result.x, reference(x))
        assert result.bandwidth.item() == pytest.approx(24.)
        assert model.decode_latent(codes).shape == (2, 128, 13)
        model.set_num_codebooks(8)
        reference.set_target_bandwidth(6.)
        codes8, _ = model.encode(x)
        assert codes8.shape[1] == 8 and torch.equal(codes8, reference.encode(x)[0][0])
        assert model(x).bandwidth.item() == pytest.approx(6.)
    with pytest.raises(ValueError, match='num_codebooks'):
        model.set_num_codebooks(33)


def test_24khz_bare_name_and_chunked(checkpoint_dir):
    _write(_package_model('encodec_24khz', seed=1), checkpoint_dir, 'encodec_24khz')
    model = CompressionModel.get_pretrained('encodec_24khz')
    model.set_num_codebooks(4)
    torch.manual_seed(2)
    x = torch.randn(1, 1, 24000) * 0.1
    with torch.no_grad():
        codes, _ = model.encode(x)
        chunked, _ = model.encode_chunked(x, chunk_seconds=0.3, overlap_seconds=0.2)
        assert chunked.shape == codes.shape == (1, 4, 75)
        assert (chunked == codes).float().mean() > 0.9
        audio = model.decode(codes)
        chunked_audio = model.decode_chunked(codes, chunk_seconds=0.3, overlap_seconds=0.2)
    assert ((chunked_audio - audio).norm() / audio.norm()).item() < 1e-3


def test_48khz_matches_package_model(checkpoint_dir):
    reference = _package_model('encodec_48khz')
    _write(reference, checkpoint_dir, 'encodec_48khz')
    model = get_pretrained_model('encodec_48khz')
    assert (model.sample_rate, model.channels, model.frame_rate, model.total_codebooks) == (48000, 2, 150., 16)
    model.set_num_codebooks(4)
    reference.set_target_bandwidth(6.)
    torch.manual_seed(3)
    x = torch.randn(1, 2, 49000) * 0.1  # two 1 s segments with 1 % overlap; the second is short
    with torch.no_grad():
        codes, scale = model.encode(x)
        frames = reference.encode(x)
        assert len(frames) == 2 and scale.shape == (1, 2)
        assert torch.equal(codes, torch.cat([c for c, _ in frames], dim=-1))
        assert torch.equal(scale, torch.cat([s for _, s in frames], dim=1))
        assert codes.shape[:2] == (1, 4) and codes.shape[-1] == 150 + frames[1][0].shape[-1]
        decoded = reference.decode(frames)
        assert torch.equal(model.decode(codes, scale), decoded)
        assert torch.equal(model(x).x, decoded[..., :x.shape[-1]])  # what the package's forward returns
        assert torch.equal(model.encode_chunked(x)[0], codes)
    with pytest.raises(AssertionError, match='one per segment'):
        model.decode(codes, scale[:, :1])


def test_missing_checkpoint_names_file_and_locations(checkpoint_dir, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CompressionModel.get_pretrained('//pretrained/encodec_24khz')
    message = str(info.value)
    assert 'encodec_24khz-d7cc33bc.th' in message
    assert str(checkpoint_dir) in message and str(tmp_path / 'hub' / 'checkpoints') in message
    assert PRETRAINED_ENV in message
    with pytest.raises(KeyError, match='encodec_32khz'):
        CompressionModel.get_pretrained('//pretrained/encodec_32khz')


def test_lookup_order_and_explicit_repository(checkpoint_dir, tmp_path, monkeypatch):
    hub = tmp_path / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    hub_file = _write(_package_model('encodec_24khz'), hub, 'encodec_24khz')
    assert find_pretrained_checkpoint('encodec_24khz') == hub_file
    env_file = _write(_package_model('encodec_24khz'), checkpoint_dir, 'encodec_24khz')
    assert find_pretrained_checkpoint('encodec_24khz') == env_file  # the env var comes first
    other = tmp_path / 'elsewhere'
    other.mkdir()
    with pytest.raises(FileNotFoundError, match='elsewhere'):  # an explicit folder is the only place searched
        find_pretrained_checkpoint('encodec_24khz', repository=other)
    renamed = other / 'my_weights.th'
    os.replace(env_file, renamed)
    assert find_pretrained_checkpoint('encodec_24khz', repository=renamed) == renamed
    monkeypatch.delenv(PRETRAINED_ENV)
    assert find_pretrained_checkpoint('encodec_24khz') == hub_file


def test_unsafe_or_corrupt_checkpoint_is_refused(checkpoint_dir, tmp_path):
    marker = tmp_path / 'ran'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    path = checkpoint_dir / PRETRAINED_CHECKPOINTS['encodec_24khz']
    torch.save({'payload': Payload()}, path)
    with pytest.raises(RuntimeError, match=str(path)):
        get_pretrained_model('encodec_24khz')
    assert not marker.exists()
    torch.save({'encoder.bogus': torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match='not a state dict'):
        get_pretrained_model('encodec_24khz')
    with pytest.raises(RuntimeError, match='sha256'):
        EncodecPretrainedModel.from_name('encodec_24khz', verify_checksum=True)


def test_package_construction_warnings_are_silenced():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_package_model('encodec_24khz')
