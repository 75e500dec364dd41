"""From config to data loaders: a registry of dataset kinds, each yielding dict batches.

`dataset.kind` picks the dataset of every split named in `datasource` (`datasource.<split>` is the
manifest / folder of that split):

- `audio`: `AudioDataset` clips -> `audio [B, C, T]`, `mask [B, T]`, `paths` (+ `info` with `return_info`);
- `audio_text`: `AudioTextDataset`, the same plus `text` (one caption per item);
- `tokens`: `TokenShardDataset` (iterable, memory-mapped shards) -> `tokens [B, K, T]`, `mask`, `paths`;
- `latents`: `LatentDataset` -> `latents [B, D, T]`, `mask`, `paths`, `scale [B]`;
- `paired_tokens`: `PairedTokenDataset` over the sub-folders `dataset.streams` (e.g. `[semantic, acoustic]`)
  of `datasource.<split>` -> `streams {name: [B, K, T]}`, `stream_masks {name: [B, T]}`, `paths`.

`dataset.<key>` options apply to every split and `dataset.<split>.<key>` overrides them. The train split
is shuffled; without `num_samples` it holds one epoch of batches (`optim.updates_per_epoch` ×
`batch_size`). Other splits are not shuffled: `num_samples: null` gives one item per file, `N` gives N
items fixed across epochs (see `sampling`). A new family adds one line to `DATASET_KINDS`.
"""
import logging
import typing as tp

import flashy.distrib
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from .audio_dataset import AudioDataset
from .audio_text_dataset import AudioTextDataset
from .batch import collate
from .latent_dataset import LatentDataset
from .paired_token_dataset import PairedTokenDataset
from .token_dataset import TokenShardDataset

logger = logging.getLogger(__name__)

DATASET_SPLITS = ("train", "valid", "evaluate", "generate")
# Options read by the builder itself, never passed to a dataset.
LOADER_KEYS = ("batch_size", "num_workers", "kind")
# Options the token and latent datasets understand; the audio-only keys of `dataset` are ignored there.
CODE_OPTIONS = ("segment_duration", "shuffle", "num_samples", "pad")
LATENT_OPTIONS = CODE_OPTIONS + ("swap_channels",)

# factory(path, cfg, split, options, batch_size): `options` are the split's `dataset` keys (minus the loader
# keys), `batch_size` the per-rank batch size (iterable datasets hand whole batches to each worker).
DatasetFactory = tp.Callable[[str, DictConfig, str, tp.Dict[str, tp.Any], int], torch.utils.data.Dataset]


def _audio_factory(klass: tp.Type[AudioDataset]) -> DatasetFactory:
    def build(path: str, cfg: DictConfig, split: str, options: tp.Dict[str, tp.Any],
              batch_size: int) -> torch.utils.data.Dataset:
        try:
            return klass.from_meta(path, sample_rate=cfg.sample_rate, channels=cfg.channels, seed=cfg.seed,
                                   name=split, **options)
        except TypeError as exc:
            raise TypeError(f"dataset.{split}: an option is not understood by {klass.__name__} ({exc}); "
                            f"check the keys under `dataset`.") from exc
    return build


def _code_options(options: tp.Dict[str, tp.Any], keys: tp.Sequence[str] = CODE_OPTIONS) -> tp.Dict[str, tp.Any]:
    return {key: options[key] for key in keys if key in options}


def _tokens(path: str, cfg: DictConfig, split: str, options: tp.Dict[str, tp.Any],
            batch_size: int) -> torch.utils.data.Dataset:
    return TokenShardDataset(path, seed=cfg.seed, name=split, block_size=batch_size, **_code_options(options))


def _latents(path: str, cfg: DictConfig, split: str, options: tp.Dict[str, tp.Any],
             batch_size: int) -> torch.utils.data.Dataset:
    return LatentDataset(path, seed=cfg.seed, name=split, **_code_options(options, LATENT_OPTIONS))


def _paired_tokens(path: str, cfg: DictConfig, split: str, options: tp.Dict[str, tp.Any],
                   batch_size: int) -> torch.utils.data.Dataset:
    streams = options.get("streams")
    if not streams or isinstance(streams, str):
        raise ValueError(f"dataset.kind=paired_tokens needs dataset.streams, the list of sub-folders of {path} "
                         f"to read together (e.g. [semantic, acoustic]); got {streams!r}.")
    folders = {str(stream): f"{path}/{stream}" for stream in streams}
    return PairedTokenDataset(folders, seed=cfg.seed, name=split, block_size=batch_size, **_code_options(options))


DATASET_KINDS: tp.Dict[str, DatasetFactory] = {
    "audio": _audio_factory(AudioDataset),
    "audio_text": _audio_factory(AudioTextDataset),
    "tokens": _tokens,
    "latents": _latents,
    "paired_tokens": _paired_tokens,
}


def split_batch_size(batch_size: int, key: str = "dataset.batch_size") -> int:
    """Global batch size → per-rank batch size."""
    world = flashy.distrib.world_size()
    if batch_size % world != 0:
        raise ValueError(f"{key}={batch_size} is global and must be divisible by the world size {world}.")
    return batch_size // world


def check_datasource(cfg: DictConfig) -> None:
    """Refuse a `sample_rate` / `channels` above what the datasource holds (`datasource.max_sample_rate`,
    `datasource.max_channels`; unset limits are not checked)."""
    for key, limit_key in (("sample_rate", "max_sample_rate"), ("channels", "max_channels")):
        value = OmegaConf.select(cfg, key, default=None)
        limit = OmegaConf.select(cfg, f"datasource.{limit_key}", default=None)
        if value is not None and limit is not None and value > limit:
            raise ValueError(f"{key}={value} exceeds datasource.{limit_key}={limit}: the data holds nothing "
                             f"above that. Lower {key} or pick a datasource (dset=...) with a higher "
                             f"datasource.{limit_key}.")


def loader_length(loader: tp.Iterable) -> tp.Optional[int]:
    """Batches per pass of `loader`, or None when unknown (iterable datasets, generators)."""
    if isinstance(getattr(loader, "dataset", None), torch.utils.data.IterableDataset):
        return None
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _split_options(cfg: DictConfig, extra: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Dict[str, tp.Any]]:
    base = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert isinstance(base, dict), "`dataset` must be a mapping."
    per_split = {split: base.pop(split, None) or {} for split in DATASET_SPLITS}
    return {split: {**base, **per_split[split], **extra} for split in DATASET_SPLITS}


def get_dataloaders(cfg: DictConfig, updates_per_epoch: tp.Optional[int] = None,
                    **extra: tp.Any) -> tp.Dict[str, torch.utils.data.DataLoader]:
    """One data loader of dict batches per split named in `datasource` (see the module docstring).

    Args:
        cfg: the XP config (`dataset`, `datasource`, `sample_rate`, `channels`, `seed`).
        updates_per_epoch: train batches per epoch; sets the train split's default `num_samples`.
        extra: options overriding `dataset.*` for every split (e.g. `return_info=True`).
    """
    check_datasource(cfg)
    loaders = {}
    for split, options in _split_options(cfg, extra).items():
        path = cfg.datasource.get(split)
        if path is None:
            continue
        kind = options.get("kind") or "audio"
        if kind not in DATASET_KINDS:
            raise KeyError(f"dataset.kind={kind!r} is unknown; choose one of {sorted(DATASET_KINDS)}.")
        batch_size = split_batch_size(options["batch_size"], f"dataset.{split}.batch_size")
        num_workers = options.get("num_workers") or 0
        options = {key: value for key, value in options.items() if key not in LOADER_KEYS}
        if split == "train":
            options.setdefault("shuffle", True)
            if options.get("num_samples") is None and updates_per_epoch:
                options["num_samples"] = updates_per_epoch * batch_size * flashy.distrib.world_size()
        else:
            options["shuffle"] = False
        if options.get("num_samples") is None:
            options.pop("num_samples", None)
        dataset = DATASET_KINDS[kind](to_absolute_path(str(path)), cfg, split, options, batch_size)
        common = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                      drop_last=split == "train", persistent_workers=False)
        if isinstance(dataset, torch.utils.data.IterableDataset):  # splits itself across ranks and workers
            loaders[split] = torch.utils.data.DataLoader(dataset, **common)
        else:
            loaders[split] = flashy.distrib.loader(dataset, shuffle=False, **common)
        size = dataset.num_items() if hasattr(dataset, "num_items") else len(dataset)  # type: ignore[arg-type]
        logger.info("Dataset %s (%s): %d items from %s", split, kind, size, path)
    return loaders
