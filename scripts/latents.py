#!/usr/bin/env python
"""Encode a folder of audio to continuous latents, and decode latent files back to audio.

    python scripts/latents.py encode //sig/SIG data/music latents/music [--max-chunk-seconds 10]
        [--overlap-seconds 1] [--device cuda] [--dtype float16] [--stereo]
    python scripts/latents.py decode //sig/SIG latents/music decoded/music [--steps 1] [--seed 0]

`encode` writes a latent folder (see audiogen_lab.data.latent_dataset): one `.npy` [D, T'] per audio
file and `meta.json` naming the checkpoint as given (`model`), the frame rate, the latent dim, the
sample rate and in `extra` the hop length and the latent statistics over all frames: the per-channel
`latent_mean` and `latent_std`, and `latent_scale`, the global std a latent GAN normalises by. Files
that cannot be read are skipped and listed. With `--stereo`, a mono model codes the left and right
channels one by one (mono files twice) and their latents are concatenated as features, `[2 D, T']`, with
`extra['channels'] = 2`; `decode` then writes stereo files. `decode` writes one wav per latent file, named after the
audio file it came from, after checking that the latent folder was made by the same model.
"""
from __future__ import annotations

import argparse
import math
import sys
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audiogen_lab.data.audio import AudioReadError, audio_read, audio_write  # noqa: E402
from audiogen_lab.data.latent_dataset import LatentMeta, load_latent_meta, write_latent_files  # noqa: E402
from audiogen_lab.data.scan import AUDIO_EXTENSIONS, scan_audio_files  # noqa: E402
from audiogen_lab.data.token_dataset import META_NAME  # noqa: E402
from audiogen_lab.models.encoder_decoder import EncoderDecoder  # noqa: E402


class LatentStatistics:
    """Running per-channel mean and std of latents [D, T] over all their frames (float64 sums)."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = np.zeros(dim, dtype=np.float64)
        self.sum_squares = np.zeros(dim, dtype=np.float64)

    def update(self, latents: np.ndarray) -> None:
        """Add latents [D, T]."""
        values = latents.astype(np.float64)
        self.count += values.shape[1]
        self.sum += values.sum(axis=1)
        self.sum_squares += (values ** 2).sum(axis=1)

    def as_dict(self) -> tp.Dict[str, tp.Any]:
        """`latent_mean` and `latent_std` [D], `latent_scale` (std over every value) and `frames`."""
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sum_squares / self.count - mean ** 2, 0.))
        overall = self.sum.sum() / (self.count * len(mean))
        scale = math.sqrt(max(self.sum_squares.sum() / (self.count * len(mean)) - overall ** 2, 0.))
        return {'latent_mean': mean.tolist(), 'latent_std': std.tolist(), 'latent_scale': scale,
                'frames': self.count}


def encode_channels(codec: EncoderDecoder, wav: torch.Tensor, sample_rate: int,
                    channels: tp.Optional[int] = None) -> torch.Tensor:
    """Latents of audio `wav [C, T]`: `[D, T']` as the model codes it, or with `channels`, each of that many
    audio channels (mono audio repeated, extra channels dropped) coded alone by a mono model and
    concatenated as features, `[channels * D, T']`."""
    if channels is None:
        return codec.encode(wav, sample_rate=sample_rate)
    if codec.channels != 1:
        raise ValueError(f"--stereo codes each channel with a mono model, but {codec.source} codes "
                         f"{codec.channels}-channel audio: drop --stereo.")
    wav = wav.expand(channels, -1) if wav.shape[0] == 1 else wav[:channels]
    if wav.shape[0] < channels:
        raise ValueError(f"Audio of {wav.shape[0]} channels cannot give {channels}.")
    return torch.cat([codec.encode(channel[None], sample_rate=sample_rate) for channel in wav])


def decode_channels(codec: EncoderDecoder, latents: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Audio `[channels, T]` of latents `[channels * D, T']` (see `encode_channels`)."""
    if channels == 1:
        return codec.decode(latents)
    return torch.cat([codec.decode(part) for part in latents.chunk(channels, dim=0)])


def encode_folder(args: argparse.Namespace) -> int:
    """The `encode` command; returns the exit code (1 when no file could be encoded)."""
    if (Path(args.out_folder) / META_NAME).exists() and not args.overwrite:
        raise FileExistsError(f"{Path(args.out_folder) / META_NAME} exists: pass --overwrite to replace these latents.")
    codec = EncoderDecoder(args.checkpoint, device=args.device, max_chunk_seconds=args.max_chunk_seconds,
                           overlap_seconds=args.overlap_seconds, max_batch_size=args.max_batch_size)
    scan = scan_audio_files(args.audio_folder)
    failed = [f"{skipped.path}: {skipped.category} ({skipped.detail})" for skipped in scan.skipped]
    items: tp.List[tp.Tuple[np.ndarray, None, str]] = []
    stats: tp.Optional[LatentStatistics] = None
    for meta in scan.metas:
        try:
            wav, sample_rate = audio_read(meta.path)
        except AudioReadError as err:
            failed.append(f"{meta.path}: {err.reason}")
            continue
        latents = encode_channels(codec, wav, sample_rate, 2 if args.stereo else None).numpy()
        if not np.isfinite(latents).all():
            failed.append(f"{meta.path}: encoded to NaN or infinite latents")
            continue
        stats = stats or LatentStatistics(latents.shape[0])
        stats.update(latents)
        items.append((latents.astype(args.dtype), None, meta.path))
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    if stats is None:
        print(f"No audio file of {args.audio_folder} could be encoded ({len(failed)} skipped).", file=sys.stderr)
        return 1
    extra = {'hop_length': codec.hop_length, **stats.as_dict(), **({'channels': 2} if args.stereo else {})}
    meta = LatentMeta(model=args.checkpoint, frame_rate=codec.frame_rate, dim=len(extra['latent_mean']),
                      sample_rate=codec.sample_rate, extra=extra)
    write_latent_files(args.out_folder, items, meta, dtype=args.dtype, overwrite=args.overwrite)
    print(f"Encoded {len(items)} files ({stats.count / codec.frame_rate:.1f} s) from {args.audio_folder} to "
          f"{args.out_folder}: {meta.dim} x {codec.frame_rate:g} frames/s, latent scale {extra['latent_scale']:.4g}; "
          f"{len(failed)} files skipped.")
    return 0


def _same_model(recorded: str, given: str) -> bool:
    """Whether two checkpoint strings name the same model: equal, or paths to the same file."""
    if recorded == given:
        return True
    first, second = Path(recorded).expanduser(), Path(given).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def check_latent_meta(meta: LatentMeta, codec: EncoderDecoder, folder: Path, ignore_model: bool = False) -> None:
    """Raise ValueError naming `folder`/meta.json when its latents were not made by `codec`'s model."""
    where = folder / META_NAME
    if not ignore_model and not _same_model(meta.model, codec.source):
        raise ValueError(f"{where} says its latents come from {meta.model!r}, not {codec.source!r}: decode with "
                         "that model, or pass --ignore-model if it is the same one under another name.")
    if codec.latent_dim is not None and meta.dim != codec.latent_dim * meta.channels:
        raise ValueError(f"{where} holds {meta.dim}-channel latents of {meta.channels}-channel audio; {codec.source} "
                         f"decodes {codec.latent_dim} per channel.")
    if abs(meta.frame_rate - codec.frame_rate) > 1e-6:
        raise ValueError(f"{where} holds latents at {meta.frame_rate} frames/s; {codec.source} decodes "
                         f"{codec.frame_rate} frames/s.")


def _output_name(record: tp.Dict[str, tp.Any], used: tp.Set[str]) -> str:
    """`<source stem>.wav` (the latent file's stem when no audio source is recorded), unique in `used`."""
    source, stem = Path(str(record.get('source') or '')), Path(record['file']).stem
    name = source.stem if source.suffix.lower() in AUDIO_EXTENSIONS else stem
    if name in used:
        name = f"{name}_{stem}"
    used.add(name)
    return f"{name}.wav"


def decode_folder(args: argparse.Namespace) -> int:
    """The `decode` command; returns the exit code."""
    folder, out = Path(args.latent_folder), Path(args.out_audio_folder)
    meta, files = load_latent_meta(folder)
    codec = EncoderDecoder(args.checkpoint, device=args.device, max_chunk_seconds=args.max_chunk_seconds,
                           overlap_seconds=args.overlap_seconds, max_batch_size=args.max_batch_size,
                           steps=args.steps, seed=args.seed)
    check_latent_meta(meta, codec, folder, args.ignore_model)
    used: tp.Set[str] = set()
    samples = 0
    for record in files:
        latents = torch.from_numpy(np.load(folder / record['file']).astype(np.float32))
        audio = decode_channels(codec, latents, meta.channels)
        audio_write(out / _output_name(record, used), audio, codec.sample_rate)
        samples += audio.shape[-1]
    print(f"Decoded {len(files)} latent files from {folder} to {out}: {samples / codec.sample_rate:.1f} s at "
          f"{codec.sample_rate} Hz, {args.steps} steps, seed {args.seed}.")
    return 0


def _add_model_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument('checkpoint', help="//sig/SIG, an XP folder, a checkpoint or an export file")
    command.add_argument('--max-chunk-seconds', type=float, default=10., help="longest window per model call")
    command.add_argument('--overlap-seconds', type=float, default=1., help="context / overlap between windows")
    command.add_argument('--max-batch-size', type=int, default=8, help="most windows per model call")
    command.add_argument('--device', default=None, help="cuda or cpu (default: cuda when available)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='scripts/latents.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    encode = commands.add_parser('encode', help="audio folder -> latent folder")
    _add_model_arguments(encode)
    encode.add_argument('audio_folder', help="folder searched recursively for wav, flac, ogg and mp3 files")
    encode.add_argument('out_folder', help="latent folder to write")
    encode.add_argument('--dtype', choices=['float32', 'float16'], default='float32', help="latents on disk")
    encode.add_argument('--overwrite', action='store_true', help="replace an existing latent folder")
    encode.add_argument('--stereo', action='store_true',
                        help="code left and right one by one with a mono model, latents concatenated as features")
    encode.set_defaults(run=encode_folder)
    decode = commands.add_parser('decode', help="latent folder -> one wav per latent file")
    _add_model_arguments(decode)
    decode.add_argument('latent_folder', help="latent folder written by `encode`")
    decode.add_argument('out_audio_folder', help="folder for the wav files")
    decode.add_argument('--steps', type=int, default=1, help="denoising steps")
    decode.add_argument('--seed', type=int, default=0, help="noise seed (same seed, same audio)")
    decode.add_argument('--ignore-model', action='store_true',
                        help="decode even if meta.json names another checkpoint (dim and frame rate still checked)")
    decode.set_defaults(run=decode_folder)
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Run `encode` or `decode` with the command-line arguments `argv`; returns the exit code."""
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"scripts/latents.py: error: {err}", file=sys.stderr)
        sys.exit(2)
