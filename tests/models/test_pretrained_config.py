"""The solver presets for Meta's EnCodec build models whose state dicts match the converted weights, so
that ``continue_from=//pretrained/encodec_{24,48}khz`` can load them."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audiogen_lab.models.builders import get_compression_model
from audiogen_lab.models.meta_encodec import convert_encodec_state_dict
from audiogen_lab.models.pretrained import pretrained_config

from .test_pretrained import _package_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'config'
MODEL_SECTIONS = ('compression_model', 'encodec', 'seanet', 'rvq', 'sample_rate', 'channels')


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base='1.3'):
        return compose(config_name='config', overrides=list(overrides))


@pytest.mark.parametrize('name, overrides', [
    ('encodec_24khz', ['solver=compression/encodec_24khz_meta']),
    ('encodec_24khz', ['solver=compression/encodec_24khz', 'model=encodec/meta_24khz']),
    ('encodec_48khz', ['solver=compression/encodec_48khz_meta']),
])
def test_solver_preset_matches_converted_state_dict(name, overrides):
    cfg = _compose(*overrides)
    assert cfg.solver == 'compression'
    registry = pretrained_config(name)
    for key in MODEL_SECTIONS:  # the solver builds exactly the registered architecture
        assert OmegaConf.select(cfg, key) == OmegaConf.select(registry, key), key
    model = get_compression_model(cfg)
    converted = convert_encodec_state_dict(_package_model(name).state_dict())
    expected = {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}
    assert {key: (tuple(value.shape), value.dtype) for key, value in converted.items()} == expected
    model.load_state_dict(converted)  # strict
    layers = model.quantizer.vq.layers
    assert len(layers) == registry.rvq.n_q and all(bool(layer._codebook.initted) for layer in layers)
    with torch.no_grad():
        model.eval()
        x = torch.randn(1, model.channels, 1600) * 0.1
        assert model(x).x.shape == x.shape
