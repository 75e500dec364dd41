"""Tokenize a manifest once: acoustic codes of a compression model and semantic ids, as token shards.

`tokenize_manifest` reads every file of a manifest once and writes, under `out_folder`, one token folder
per kind (see :mod:`audiogen_lab.data.token_dataset`):

- `acoustic/`: codes `[K, T']` of a compression model (``compression_model``: ``//sig/SIG``, a checkpoint,
  an export or ``//pretrained/NAME``), ``T' = ceil(T / hop_length)``; `meta.model` is the source string as
  given, `extra` holds the checkpoint's signature (``signature``) and ``weights_sha256``, a hash of the
  loaded weights, so that two names of one model can be told apart from two models;
- `semantic/`: ids `[1, T']` of a semantic tokenizer file (:func:`~audiogen_lab.models.semantic_tokenizer.
  save_semantic_tokenizer`); `meta.model` is the file's ``id``, `extra['tokenizer']` its path. With a
  ``dedup`` tokenizer, runs of equal ids are collapsed over the whole file (T' is then no longer
  ``duration * frame_rate``).
- `mulan/`: MuLaN conditioning tokens `[L, n]` (MusicLM) of a trained MuLaN and its fitted quantizer, one
  column per window of ``mulan_window`` seconds; `extra` marks the stream ``conditioning`` (read as one
  column per crop by :class:`~audiogen_lab.data.paired_token_dataset.PairedTokenDataset`) and holds the
  quantizer file's sha256, so that tokens of an earlier fit of the quantizer are refused.

Both folders list the same items in the same order (manifest order), each named after its source audio
file: item `i` of `acoustic/`, `semantic/` and `mulan/` come from the same file. Files that cannot be read, or
that give no frame to one of the models, are skipped for every kind and listed in `extra['skipped']`.

Long files: with `max_seconds`, a file is cut into non-overlapping chunks of `max_seconds` (rounded down
to a whole number of model frames; a last chunk shorter than half a chunk joins the previous one), each
encoded on its own and the codes concatenated. Frame counts are those of the whole file for models whose
frames are ``ceil`` or ``floor(T / hop)`` of the audio (codecs, log mel features); a HuBERT extractor,
whose convolutions are not padded, can lose a frame at each chunk boundary. Codes near a boundary see no
audio across it, and models that normalise their input do so chunk by chunk: that is fine for tokens.

Chunks (whole files without `max_seconds`) of equal length are encoded together, `batch_size` at a time;
audio is never padded, so a code never depends on padding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import logging
from pathlib import Path
import shutil
import typing as tp

import numpy as np
import torch

from ..utils import checkpoint
from .audio import AudioReadError, audio_read
from .audio_utils import convert_audio
from .manifest import load_audio_meta, resolve_manifest
from .token_dataset import META_NAME, PathLike, TokenShardMeta, load_token_meta, write_token_shards

logger = logging.getLogger(__name__)

ACOUSTIC, SEMANTIC, MULAN = 'acoustic', 'semantic', 'mulan'
#: config key naming the producer expected for each kind of tokens
PRODUCER_KEYS = {ACOUSTIC: 'compression_model_checkpoint', SEMANTIC: 'semantic_tokenizer_checkpoint',
                 MULAN: 'mulan_checkpoint'}


@dataclass
class _Producer:
    """A model turning audio `[B, C, T]` (at `sample_rate`, `channels`) into codes `[B, K, T']`."""
    kind: str
    meta: TokenShardMeta
    channels: int
    hop: int  # audio samples per frame (chunks are multiples of it)
    encode: tp.Callable[[torch.Tensor], torch.Tensor]
    dedup: bool = False
    frames: int = 0  # written so far

    @property
    def sample_rate(self) -> int:
        assert self.meta.sample_rate is not None
        return self.meta.sample_rate

    def chunk_samples(self, max_seconds: tp.Optional[float]) -> tp.Optional[int]:
        if max_seconds is None:
            return None
        return max(self.hop, int(max_seconds * self.sample_rate) // self.hop * self.hop)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the names, dtypes, shapes and values of `model`'s state dict (same weights, same hash)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        value = value.reshape(-1)  # 0-d tensors (e.g. a temperature) cannot be viewed as bytes
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b'')
    return digest.hexdigest()


def _signature(source: str) -> tp.Optional[str]:
    """The XP signature of a checkpoint or export (None for ``//pretrained/`` models or when not recorded)."""
    if source.startswith(checkpoint.SIG_PREFIX):
        return source[len(checkpoint.SIG_PREFIX):].strip('/')
    if source.startswith(checkpoint.PRETRAINED_PREFIX):
        return None
    state = checkpoint.load_checkpoint(checkpoint.resolve_checkpoint_path(source))
    sig = state.get('xp.sig') if isinstance(state, dict) else None
    return None if sig is None else str(sig)


def _hop(sample_rate: int, frame_rate: float) -> int:
    hop = sample_rate / frame_rate
    return int(round(hop)) if abs(hop - round(hop)) < 1e-6 else 1


def _acoustic_producer(source: str, n_q: tp.Optional[int], device: tp.Union[str, torch.device]) -> _Producer:
    from ..solvers.loading import load_model
    model = load_model(source, family='compression', device=device)
    if getattr(model, 'is_continuous', False):
        raise ValueError(f"compression_model={source} gives continuous latents, not codes: pass a discrete codec "
                         "(or write latents with scripts/latents.py).")
    if n_q is not None:
        if not 1 <= n_q <= model.total_codebooks:
            raise ValueError(f"n_q={n_q} must be in [1, {model.total_codebooks}] (the codebooks of {source}).")
        model.set_num_codebooks(n_q)
    extra = {'kind': ACOUSTIC, 'signature': _signature(source), 'weights_sha256': weights_sha256(model),
             'channels': model.channels, 'hop_length': model.hop_length}
    meta = TokenShardMeta(model=source, frame_rate=float(model.frame_rate), cardinality=int(model.cardinality),
                          num_codebooks=int(model.num_codebooks), sample_rate=int(model.sample_rate), extra=extra)

    def encode(wav: torch.Tensor) -> torch.Tensor:
        codes, _ = model.encode(wav.to(device))
        return codes

    return _Producer(ACOUSTIC, meta, model.channels, model.hop_length, encode)


def _semantic_producer(path: str, device: tp.Union[str, torch.device]) -> _Producer:
    from ..models.semantic_tokenizer import load_semantic_tokenizer, resolve_semantic_tokenizer_path
    tokenizer = load_semantic_tokenizer(path).to(device)
    dedup, tokenizer.dedup = tokenizer.dedup, False  # runs are collapsed over whole files, not per chunk
    extra = {'kind': SEMANTIC, 'tokenizer': str(resolve_semantic_tokenizer_path(path).resolve()), 'dedup': dedup,
             'extractor': type(tokenizer.extractor).__name__}
    meta = TokenShardMeta(model=tokenizer.id, frame_rate=float(tokenizer.frame_rate),
                          cardinality=tokenizer.cardinality, num_codebooks=1,
                          sample_rate=int(tokenizer.sample_rate), extra=extra)

    def encode(wav: torch.Tensor) -> torch.Tensor:
        return tokenizer.encode(wav[:, 0].to(device), tokenizer.sample_rate)[:, None]

    return _Producer(SEMANTIC, meta, 1, _hop(tokenizer.sample_rate, tokenizer.frame_rate), encode, dedup=dedup)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mulan_producer(source: str, window: tp.Optional[float], device: tp.Union[str, torch.device]) -> _Producer:
    """MuLaN tokens `[L, n]` of a file: one column per window of `window` seconds (default: the MuLaN's training
    crop, ``dataset.segment_duration``), ``n = max(1, round(T / window))``, the last window taking the rest."""
    from ..models.mulan_conditioner import load_mulan_conditioner, quantizer_path
    from ..solvers.loading import read_package
    conditioner = load_mulan_conditioner(source, device=device)
    if window is None:
        window = float(read_package(source).cfg.dataset.get('segment_duration') or 10.0)
    if window <= 0:
        raise ValueError(f"mulan_window must be > 0 seconds, got {window}.")
    sample_rate = int(conditioner.mulan.sample_rate)
    hop = max(1, int(round(window * sample_rate)))
    extra = {'kind': MULAN, 'conditioning': True, 'window_seconds': hop / sample_rate, 'signature': _signature(source),
             'weights_sha256': weights_sha256(conditioner),
             'quantizer_sha256': _file_sha256(quantizer_path(source))}
    meta = TokenShardMeta(model=source, frame_rate=sample_rate / hop, cardinality=conditioner.codebook_size,
                          num_codebooks=conditioner.num_levels, sample_rate=sample_rate, extra=extra)

    def encode(wav: torch.Tensor) -> torch.Tensor:
        length = wav.shape[-1]
        count = max(1, round(length / hop))
        bounds = [(i * hop, length if i == count - 1 else (i + 1) * hop) for i in range(count)]
        return torch.stack([conditioner.tokens_from_audio(wav[..., a:b].to(device), sample_rate)
                            for a, b in bounds], dim=-1)

    return _Producer(MULAN, meta, 1, hop, encode)


def split_chunks(length: int, chunk: tp.Optional[int]) -> tp.List[tp.Tuple[int, int]]:
    """Non-overlapping `(start, end)` sample ranges covering `[0, length)`: `chunk` samples each, the last
    one joined to the previous when shorter than `chunk / 2`; one range when `chunk` is None."""
    if chunk is None or length <= chunk:
        return [(0, length)]
    bounds = list(range(0, length, chunk)) + [length]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < chunk / 2:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass
class _Pending:
    """A file read and cut into chunks `[C, t]` per producer, waiting for its codes."""
    source: str
    seconds: float
    chunks: tp.List[tp.List[torch.Tensor]]
    codes: tp.List[tp.List[tp.Optional[torch.Tensor]]] = field(default_factory=list)


@torch.no_grad()
def _encode_pending(pending: tp.List[_Pending], producers: tp.Sequence[_Producer],
                    batch_size: int) -> None:
    """Fill `codes` of every pending file: chunks of equal length are stacked `batch_size` at a time."""
    for index, producer in enumerate(producers):
        by_length: tp.Dict[int, tp.List[tp.Tuple[int, int]]] = {}
        for file_index, item in enumerate(pending):
            item.codes.append([None] * len(item.chunks[index]))
            for chunk_index, chunk in enumerate(item.chunks[index]):
                by_length.setdefault(chunk.shape[-1], []).append((file_index, chunk_index))
        for places in by_length.values():
            for start in range(0, len(places), batch_size):
                group = places[start:start + batch_size]
                batch = torch.stack([pending[f].chunks[index][c] for f, c in group])
                codes = producer.encode(batch).cpu()
                for (f, c), row in zip(group, codes):
                    pending[f].codes[index][c] = row


def _finish(item: _Pending, producers: tp.Sequence[_Producer]) -> tp.Optional[tp.List[torch.Tensor]]:
    """The codes `[K, T']` of a file per producer, or None when one of them gives no frame."""
    out = []
    for producer, pieces in zip(producers, item.codes):
        codes = torch.cat([piece for piece in pieces if piece is not None], dim=-1)
        if producer.dedup and codes.shape[-1]:
            codes = torch.unique_consecutive(codes[0])[None]
        if codes.shape[-1] == 0:
            logger.warning("Skipping %s: %.3f s of audio give no %s frame.", item.source, item.seconds,
                           producer.kind)
            return None
        out.append(codes)
    return out


def _tokenized_files(manifest: PathLike, producers: tp.Sequence[_Producer], batch_size: int,
                     max_seconds: tp.Optional[float], stats: tp.Dict[str, tp.Any]
                     ) -> tp.Iterator[tp.Tuple[str, tp.List[torch.Tensor]]]:
    """`(source, codes per producer)` for every usable file of `manifest`, in manifest order."""
    chunk_sizes = [producer.chunk_samples(max_seconds) for producer in producers]
    pending: tp.List[_Pending] = []

    def flush() -> tp.Iterator[tp.Tuple[str, tp.List[torch.Tensor]]]:
        _encode_pending(pending, producers, batch_size)
        for item in pending:
            codes = _finish(item, producers)
            if codes is None:
                stats['skipped'].append(item.source)
                continue
            stats['seconds'] += item.seconds
            yield item.source, codes
        pending.clear()

    for entry in load_audio_meta(manifest):
        try:
            wav, sample_rate = audio_read(entry.path)
        except AudioReadError as err:
            logger.warning("Skipping %s", err)
            stats['skipped'].append(entry.path)
            continue
        chunks = []
        for producer, chunk in zip(producers, chunk_sizes):
            audio = convert_audio(wav, sample_rate, producer.sample_rate, producer.channels)
            chunks.append([audio[:, start:end] for start, end in split_chunks(audio.shape[-1], chunk)])
        pending.append(_Pending(entry.path, wav.shape[-1] / sample_rate, chunks))
        if sum(len(item.chunks[0]) for item in pending) >= batch_size:
            yield from flush()
    yield from flush()


class _Spill:
    """Code items `[K, T]` appended to one int32 file while another kind is being written, read back in order."""

    def __init__(self, folder: Path, num_codebooks: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / 'codes.int32'
        self.file = open(self.path, 'wb')
        self.num_codebooks = num_codebooks
        self.items: tp.List[tp.Tuple[str, int]] = []

    def add(self, codes: torch.Tensor, source: str) -> None:
        np.ascontiguousarray(codes.numpy(), dtype=np.int32).tofile(self.file)
        self.items.append((source, codes.shape[-1]))

    def read(self) -> tp.Iterator[tp.Tuple[np.ndarray, str]]:
        self.file.close()
        if not self.items:
            return
        values = np.memmap(self.path, dtype=np.int32, mode='r')
        offset = 0
        for source, frames in self.items:
            size = self.num_codebooks * frames
            yield np.array(values[offset:offset + size]).reshape(self.num_codebooks, frames), source
            offset += size


def tokenize_manifest(manifest: PathLike, out_folder: PathLike, *, compression_model: tp.Optional[str] = None,
                      n_q: tp.Optional[int] = None, semantic_tokenizer: tp.Optional[str] = None,
                      mulan: tp.Optional[str] = None, mulan_window: tp.Optional[float] = None, batch_size: int = 8,
                      device: tp.Union[str, torch.device] = 'cpu',
                      max_seconds: tp.Optional[float] = None, overwrite: bool = False) -> tp.Dict[str, Path]:
    """Write the token folders of the audio of `manifest` under `out_folder` (see the module docstring).

    Args:
        manifest: manifest file, or folder holding `data.jsonl[.gz]`.
        out_folder: gets `acoustic/` and / or `semantic/`.
        compression_model: source of a discrete compression model (``//sig/SIG``, checkpoint, export,
            ``//pretrained/NAME``); recorded as given in `meta.model`.
        n_q: codebooks kept (default: the model's current number).
        semantic_tokenizer: tokenizer file written by ``save_semantic_tokenizer``.
        mulan: a trained MuLaN (``//sig/SIG``, ...) whose quantizer was fitted: its tokens `[L, n]` per
            window of `mulan_window` seconds go to `mulan/`, a conditioning stream (MusicLM).
        mulan_window: seconds per MuLaN window (default: the MuLaN's training crop).
        batch_size: chunks of equal length encoded together.
        device: where the models run.
        max_seconds: encode long files in non-overlapping chunks of this many seconds.
        overwrite: replace existing token folders.
    Returns:
        the folder written for each kind, ``{'acoustic': ..., 'semantic': ..., 'mulan': ...}``.
    """
    if compression_model is None and semantic_tokenizer is None and mulan is None:
        raise ValueError("Nothing to tokenize: pass compression_model, semantic_tokenizer and / or mulan.")
    if batch_size < 1 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"batch_size must be >= 1 and max_seconds > 0 or None, got {batch_size}, {max_seconds}.")
    out_folder = Path(out_folder)
    kinds = [kind for kind, given in ((ACOUSTIC, compression_model), (SEMANTIC, semantic_tokenizer),
                                      (MULAN, mulan)) if given]
    folders = {kind: out_folder / kind for kind in kinds}
    for folder in folders.values():
        if (folder / META_NAME).exists() and not overwrite:
            raise FileExistsError(f"{folder / META_NAME} exists: pass overwrite=True (--overwrite) to replace it.")
    manifest = resolve_manifest(manifest)
    producers = []
    if compression_model is not None:
        producers.append(_acoustic_producer(compression_model, n_q, device))
    if semantic_tokenizer is not None:
        producers.append(_semantic_producer(semantic_tokenizer, device))
    if mulan is not None:
        producers.append(_mulan_producer(mulan, mulan_window, device))
    stats: tp.Dict[str, tp.Any] = {'seconds': 0., 'skipped': []}
    spill_root = out_folder / '.tokenize_spill'
    spills = [_Spill(spill_root / producer.kind, producer.meta.num_codebooks) for producer in producers[1:]]

    def first_kind() -> tp.Iterator[tp.Tuple[torch.Tensor, str]]:
        for source, codes in _tokenized_files(manifest, producers, batch_size, max_seconds, stats):
            for producer, item in zip(producers, codes):
                producer.frames += item.shape[-1]
            for spill, item in zip(spills, codes[1:]):
                spill.add(item, source)
            yield codes[0], source

    def meta(producer: _Producer) -> TokenShardMeta:
        producer.meta.extra.update({'manifest': str(manifest), 'max_seconds': max_seconds,
                                    'audio_seconds': stats['seconds'], 'skipped': list(stats['skipped'])})
        return producer.meta

    try:
        # The first kind's meta is written after its items: stats are complete by then.
        _write(folders[producers[0].kind], first_kind(), producers[0], meta, overwrite)
        for producer, spill in zip(producers[1:], spills):
            _write(folders[producer.kind], spill.read(), producer, meta, overwrite)
    finally:
        for spill in spills:
            spill.file.close()
        shutil.rmtree(spill_root, ignore_errors=True)
    for producer in producers:
        logger.info("Tokenized %s: %d %s frames (%.1f s of audio, %d files skipped) to %s.", manifest,
                    producer.frames, producer.kind, stats['seconds'], len(stats['skipped']), folders[producer.kind])
    return folders


def _write(folder: Path, items: tp.Iterable[tp.Any], producer: _Producer,
           meta: tp.Callable[[_Producer], TokenShardMeta], overwrite: bool) -> None:
    """write_token_shards, with `meta(producer)` called after the last item (it adds totals to the meta
    object that write_token_shards writes once the items are consumed)."""
    write_token_shards(folder, _then(items, lambda: meta(producer)), producer.meta, overwrite=overwrite)


def _then(items: tp.Iterable[tp.Any], callback: tp.Callable[[], tp.Any]) -> tp.Iterator[tp.Any]:
    yield from items
    callback()


def _same_model(recorded: str, expected: str) -> bool:
    """Equal strings, or two names (``//sig/``, folders, files) of the same checkpoint file."""
    if recorded == expected:
        return True
    try:
        first = checkpoint.resolve_checkpoint_path(recorded).resolve()
        second = checkpoint.resolve_checkpoint_path(expected).resolve()
    except (FileNotFoundError, OSError):
        return False
    return first == second


def check_token_producer(folder: PathLike, expected_model: str, kind: str) -> TokenShardMeta:
    """Raise ValueError when the tokens of `folder` were not produced by `expected_model`; returns the meta.

    For ``acoustic`` tokens `expected_model` is the compression model source (`compression_model_checkpoint`),
    matched as a string or as the same checkpoint file; for ``semantic`` tokens it is a tokenizer file
    (`semantic_tokenizer_checkpoint`), matched by its id, or the id itself.
    """
    if kind not in PRODUCER_KEYS:
        raise ValueError(f"kind must be one of {sorted(PRODUCER_KEYS)}, got {kind!r}.")
    key = PRODUCER_KEYS[kind]
    meta, _ = load_token_meta(folder)
    found_kind = meta.extra.get('kind')
    if found_kind is not None and found_kind != kind:
        raise ValueError(f"{folder} holds {found_kind} tokens, not {kind} tokens: point the {kind} token "
                         f"folder at the `{kind}/` folder written by scripts/tokenize_dataset.py.")
    if kind == SEMANTIC:
        from ..models.semantic_tokenizer import read_semantic_tokenizer_file, resolve_semantic_tokenizer_path
        expected_id, shown = expected_model, repr(expected_model)
        if resolve_semantic_tokenizer_path(expected_model).is_file():  # a file, an XP folder or //sig/SIG
            expected_id = read_semantic_tokenizer_file(expected_model)['id']
            shown = f"{expected_model!r} (id {expected_id})"
        matches = meta.model == expected_id
        found = f"{meta.model!r}" + (f" ({meta.extra['tokenizer']})" if meta.extra.get('tokenizer') else '')
    else:
        matches, shown = _same_model(meta.model, expected_model), repr(expected_model)
        found = f"{meta.model!r}" + (f" (signature {meta.extra['signature']})" if meta.extra.get('signature') else '')
    if matches and kind == MULAN and meta.extra.get('quantizer_sha256'):
        from ..models.mulan_conditioner import quantizer_path
        path = quantizer_path(expected_model)
        if path.exists() and _file_sha256(path) != meta.extra['quantizer_sha256']:
            raise ValueError(f"{Path(folder) / META_NAME}: its MuLaN tokens were made with another fit of the "
                             f"quantizer of {expected_model!r} than {path} holds now: tokenize the data again "
                             "(scripts/tokenize_dataset.py --mulan).")
    if not matches:
        raise ValueError(f"{Path(folder) / META_NAME}: its {kind} tokens were produced by {found}, but "
                         f"{key}={shown}. Tokenize the data again with that model (scripts/tokenize_dataset.py) "
                         f"or set {key} to the model that produced them.")
    return meta

