"""Build compression models from the Hydra config (the only place that reads config nodes).

Config layout (``config/model/encodec/*.yaml``)::

    compression_model: encodec
    encodec: {autoencoder: seanet, quantizer: rvq, causal: false, renormalize: false}
    seanet: {...common SEANet kwargs..., encoder: {...encoder only...}, decoder: {...decoder only...}}
    rvq: {...ResidualVectorQuantizer kwargs...}

and for SoundStream (``config/model/soundstream/*.yaml``)::

    compression_model: soundstream
    soundstream: {quantizer: rvq, causal: true}
    soundstream_net: {...SoundStreamEncoder/Decoder kwargs..., encoder: {...}, decoder: {...}}

and for the consistency autoencoder (``config/model/consistency_ae/*.yaml``)::

    compression_model: consistency_ae
    consistency_ae: {n_fft, hop_length, alpha, beta, sigma_data, sigma_min, sigma_max, rho, decode_steps}
    consistency_net: {...ConsistencyEncoder/Decoder kwargs..., encoder: {...}, decoder: {...}}
"""
from __future__ import annotations

import typing as tp

import omegaconf
from torch import nn

from ..modules.consistency_net import ConsistencyDecoder, ConsistencyEncoder
from ..modules.seanet import SEANetDecoder, SEANetEncoder
from ..modules.soundstream import SoundStreamDecoder, SoundStreamEncoder
from ..quantization.base import BaseQuantizer, DummyQuantizer
from ..quantization.grvq import GroupedResidualVectorQuantizer
from ..quantization.rfsq import ResidualFiniteScalarQuantizer
from ..quantization.rlfq import ResidualLookupFreeQuantizer
from ..quantization.rvq import ResidualVectorQuantizer
from .compression import CompressionModel
from .consistency_ae import ConsistencyAE
from .encodec import EncodecModel
from .soundstream import SoundStreamModel

AUTOENCODERS: tp.Dict[str, tp.Tuple[tp.Type[nn.Module], tp.Type[nn.Module]]] = {
    'seanet': (SEANetEncoder, SEANetDecoder),
}
QUANTIZERS: tp.Dict[str, tp.Type[BaseQuantizer]] = {
    'rvq': ResidualVectorQuantizer,
    'grvq': GroupedResidualVectorQuantizer,
    'rfsq': ResidualFiniteScalarQuantizer,
    'rlfq': ResidualLookupFreeQuantizer,
    'no_quant': DummyQuantizer,
}
COMPRESSION_MODELS: tp.Dict[str, tp.Type[CompressionModel]] = {
    'encodec': EncodecModel,
    'soundstream': SoundStreamModel,
    'consistency_ae': ConsistencyAE,
}


def _pick(table: tp.Dict[str, tp.Any], name: str, key: str) -> tp.Any:
    if name not in table:
        raise KeyError(f"config key '{key}': unknown value {name!r}, choose one of {sorted(table)}.")
    return table[name]


def _kwargs(cfg: omegaconf.DictConfig, key: str) -> tp.Dict[str, tp.Any]:
    """The resolved node `cfg.<key>` as a plain dict (empty when the node is null)."""
    if key not in cfg:
        raise KeyError(f"config key '{key}' is missing: add a '{key}:' section to the model config.")
    node = cfg[key]
    if node is None:
        return {}
    container = omegaconf.OmegaConf.to_container(node, resolve=True)
    if not isinstance(container, dict):
        raise TypeError(f"config key '{key}' must be a mapping of keyword arguments, got {container!r}.")
    return container


def _instantiate(klass: tp.Type, kwargs: tp.Dict[str, tp.Any], key: str) -> tp.Any:
    try:
        return klass(**kwargs)
    except TypeError as err:
        raise TypeError(f"config '{key}' does not match {klass.__name__}: {err}") from err


def get_encodec_autoencoder(name: str, cfg: omegaconf.DictConfig) -> tp.Tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of autoencoder `name` from ``cfg.<name>``; its ``encoder`` / ``decoder``
    sub-sections hold the arguments of one side only."""
    encoder_class, decoder_class = _pick(AUTOENCODERS, name, 'encodec.autoencoder')
    encoder_kwargs, decoder_kwargs = _split_sides(_kwargs(cfg, name))
    encoder = _instantiate(encoder_class, encoder_kwargs, f'{name}.encoder')
    decoder = _instantiate(decoder_class, decoder_kwargs, f'{name}.decoder')
    return encoder, decoder


def get_quantizer(name: str, cfg: omegaconf.DictConfig, dimension: int,
                  key: str = 'encodec.quantizer') -> BaseQuantizer:
    """Quantizer `name` over latents of `dimension`, from ``cfg.<name>``: 'rvq' (residual VQ), 'grvq'
    (grouped residual VQ), 'rfsq' (residual FSQ), 'rlfq' (residual LFQ) or 'no_quant' (continuous).
    `key` is the config key that chose it, named in errors."""
    klass = _pick(QUANTIZERS, name, key)
    if klass is DummyQuantizer:
        return DummyQuantizer()
    kwargs = _kwargs(cfg, name)
    kwargs['dimension'] = dimension
    return _instantiate(klass, kwargs, name)


def _build_encodec(cfg: omegaconf.DictConfig) -> EncodecModel:
    kwargs = _kwargs(cfg, 'encodec')
    for key in ('autoencoder', 'quantizer'):
        if key not in kwargs:
            raise KeyError(f"config key 'encodec.{key}' is missing.")
    encoder, decoder = get_encodec_autoencoder(kwargs.pop('autoencoder'), cfg)
    quantizer = get_quantizer(kwargs.pop('quantizer'), cfg, encoder.dimension)
    sample_rate = int(cfg.sample_rate)
    channels = int(cfg.channels)
    assert encoder.channels == channels, \
        f"config: the autoencoder has {encoder.channels} channels but 'channels' is {channels}"
    frame_rate = sample_rate / encoder.hop_length
    return _instantiate(EncodecModel, dict(encoder=encoder, decoder=decoder, quantizer=quantizer,
                                           frame_rate=frame_rate, sample_rate=sample_rate,
                                           channels=channels, **kwargs), 'encodec')


def _split_sides(kwargs: tp.Dict[str, tp.Any]) -> tp.Tuple[tp.Dict[str, tp.Any], tp.Dict[str, tp.Any]]:
    """(encoder kwargs, decoder kwargs): the shared ones updated by the ``encoder`` / ``decoder`` entries."""
    encoder_only = kwargs.pop('encoder', None) or {}
    decoder_only = kwargs.pop('decoder', None) or {}
    return {**kwargs, **encoder_only}, {**kwargs, **decoder_only}


def _build_soundstream(cfg: omegaconf.DictConfig) -> SoundStreamModel:
    kwargs = _kwargs(cfg, 'soundstream')
    if 'quantizer' not in kwargs:
        raise KeyError("config key 'soundstream.quantizer' is missing.")
    encoder_kwargs, decoder_kwargs = _split_sides(_kwargs(cfg, 'soundstream_net'))
    encoder = _instantiate(SoundStreamEncoder, encoder_kwargs, 'soundstream_net.encoder')
    decoder = _instantiate(SoundStreamDecoder, decoder_kwargs, 'soundstream_net.decoder')
    quantizer = get_quantizer(kwargs.pop('quantizer'), cfg, encoder.dimension, 'soundstream.quantizer')
    sample_rate, channels = int(cfg.sample_rate), int(cfg.channels)
    assert encoder.channels == channels, \
        f"config: soundstream_net has {encoder.channels} channels but 'channels' is {channels}"
    return _instantiate(SoundStreamModel, dict(encoder=encoder, decoder=decoder, quantizer=quantizer,
                                               frame_rate=sample_rate / encoder.hop_length,
                                               sample_rate=sample_rate, channels=channels, **kwargs),
                        'soundstream')


def _build_consistency_ae(cfg: omegaconf.DictConfig) -> ConsistencyAE:
    encoder_kwargs, decoder_kwargs = _split_sides(_kwargs(cfg, 'consistency_net'))
    encoder = _instantiate(ConsistencyEncoder, encoder_kwargs, 'consistency_net.encoder')
    decoder = _instantiate(ConsistencyDecoder, decoder_kwargs, 'consistency_net.decoder')
    return _instantiate(ConsistencyAE, dict(encoder=encoder, decoder=decoder, sample_rate=int(cfg.sample_rate),
                                            channels=int(cfg.channels), **_kwargs(cfg, 'consistency_ae')),
                        'consistency_ae')


def get_compression_model(cfg: omegaconf.DictConfig) -> CompressionModel:
    """The compression model named by ``cfg.compression_model``, built from its config sections and the
    top-level ``sample_rate`` and ``channels``."""
    for key in ('compression_model', 'sample_rate', 'channels'):
        if key not in cfg:
            raise KeyError(f"config key '{key}' is missing.")
    klass = _pick(COMPRESSION_MODELS, cfg.compression_model, 'compression_model')
    if klass is SoundStreamModel:
        return _build_soundstream(cfg)
    if klass is EncodecModel:
        return _build_encodec(cfg)
    if klass is ConsistencyAE:
        return _build_consistency_ae(cfg)
    raise NotImplementedError(f"no builder for compression_model={cfg.compression_model!r}")
