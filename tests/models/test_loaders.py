import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.compression import CompressionModel
from audiogen_lab.models.loaders import load_compression_model, load_compression_model_cfg, load_export
from audiogen_lab.models.pretrained import PRETRAINED_ENV
from audiogen_lab.utils.export import EXPORT_FORMAT

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'config' / 'model' / 'encodec'


def _cfg():
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / 'debug.yaml'), {'sample_rate': 16000, 'channels': 1})
    cfg.rvq.bins = 16
    return cfg


def _trained_model(cfg):
    """A debug model whose codebooks were initialised by one training forward, in eval mode."""
    torch.manual_seed(0)
    model = get_compression_model(cfg)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 3200) * 0.1)
    return model.eval()


def _export(path, cfg, state, **overrides):
    package = {'format': EXPORT_FORMAT, 'version': 1, 'family': 'compression',
               'xp.cfg': OmegaConf.to_yaml(cfg, resolve=False), 'xp.sig': 'abc123', 'model': state}
    package.update(overrides)
    torch.save(package, path)
    return path


def test_export_round_trip(tmp_path):
    cfg = _cfg()
    model = _trained_model(cfg)
    path = _export(tmp_path / 'model.th', cfg, model.state_dict())
    loaded = CompressionModel.get_pretrained(str(path))
    assert not loaded.training and type(loaded) is type(model)
    x = torch.randn(2, 1, 1600) * 0.1
    with torch.no_grad():
        codes, scale = model.encode(x)
        loaded_codes, loaded_scale = loaded.encode(x)
        assert torch.equal(loaded_codes, codes) and loaded_scale is None and scale is None
        assert torch.equal(loaded.decode(codes), model.decode(codes))
        assert torch.equal(loaded(x).x, model(x).x)
    loaded_cfg = load_compression_model_cfg(path)
    assert loaded_cfg.rvq.bins == 16 and loaded_cfg.seanet.channels == 1  # interpolations resolve
    assert load_compression_model(path, device='cpu').frame_rate == model.frame_rate


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    path = _export(tmp_path / 'evil.th', _cfg(), {'weight': Payload()})
    with pytest.raises(RuntimeError, match=str(path)) as info:
        load_compression_model(path)
    assert 'unpickling' in str(info.value)
    assert not marker.exists()
    with pytest.raises(RuntimeError, match=str(path)):
        load_compression_model_cfg(path)
    assert not marker.exists()


def test_bad_exports_give_clear_errors(tmp_path):
    cfg = _cfg()
    state = _trained_model(cfg).state_dict()
    with pytest.raises(ValueError, match='not an audiogen_lab export'):
        load_compression_model(_export(tmp_path / 'a.th', cfg, state, format='something.else'))
    torch.save(state, tmp_path / 'raw.th')
    with pytest.raises(ValueError, match='not an audiogen_lab export'):
        load_compression_model(tmp_path / 'raw.th')
    with pytest.raises(ValueError, match="'latent_gan' model"):
        load_compression_model(_export(tmp_path / 'b.th', cfg, state, family='latent_gan'))
    with pytest.raises(ValueError, match='version 7'):
        load_compression_model(_export(tmp_path / 'c.th', cfg, state, version=7))
    with pytest.raises(ValueError, match='YAML text'):
        load_compression_model(_export(tmp_path / 'd.th', cfg, state, **{'xp.cfg': {'a': 1}}))
    other = _cfg()
    other.rvq.n_q = 2
    with pytest.raises(RuntimeError, match='do not match'):
        load_compression_model(_export(tmp_path / 'e.th', other, state))
    (tmp_path / 'truncated.th').write_bytes((tmp_path / 'raw.th').read_bytes()[:100])
    with pytest.raises(RuntimeError, match='truncated.th.*corrupt'):
        load_compression_model(tmp_path / 'truncated.th')
    with pytest.raises(FileNotFoundError, match='nowhere.th'):
        load_compression_model(tmp_path / 'nowhere.th')
    with pytest.raises(ValueError, match='model_from_checkpoint'):
        load_compression_model('//sig/abc123')
    assert load_export(_export(tmp_path / 'f.th', cfg, state))['xp.sig'] == 'abc123'


def test_pretrained_names_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path))
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    for name in ('//pretrained/encodec_48khz', 'encodec_48khz'):
        with pytest.raises(FileNotFoundError, match='encodec_48khz-7e698e3e.th'):
            load_compression_model(name)
    with pytest.raises(KeyError, match='//pretrained/encodec_24khz'):
        load_compression_model('//pretrained/encodec')
