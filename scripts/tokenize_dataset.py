#!/usr/bin/env python
"""Tokenize the audio of a manifest once, for token language models: acoustic codes, semantic ids and MuLaN
conditioning tokens.

    python scripts/tokenize_dataset.py MANIFEST OUT --compression-model //sig/SIG --n-q 4 \\
        --semantic-tokenizer tok.th [--mulan //sig/MULAN [--mulan-window 10]] [--max-seconds 30] \\
        [--batch-size 8] [--device cuda] [--overwrite]

Writes OUT/acoustic/, OUT/semantic/ and / or OUT/mulan/, token folders read by
audiogen_lab.data.token_dataset.TokenShardDataset, whose items line up (same files, same order); see
audiogen_lab.data.tokenize for the metadata and the chunking of long files.
"""
from __future__ import annotations

import argparse
import sys
import time
import typing as tp
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiogen_lab.data.token_dataset import load_token_meta  # noqa: E402
from audiogen_lab.data.tokenize import tokenize_manifest  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='scripts/tokenize_dataset.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('manifest', help="manifest file, or folder holding data.jsonl[.gz]")
    parser.add_argument('out_folder', help="gets acoustic/, semantic/ and / or mulan/")
    parser.add_argument('--compression-model', default=None,
                        help="//sig/SIG, an XP folder, a checkpoint, an export or //pretrained/NAME")
    parser.add_argument('--n-q', type=int, default=None, help="codebooks kept (default: the model's)")
    parser.add_argument('--semantic-tokenizer', default=None, help="file written by save_semantic_tokenizer")
    parser.add_argument('--mulan', default=None,
                        help="a trained MuLaN (//sig/SIG, ...) with its fitted quantizer: MuLaN tokens for MusicLM")
    parser.add_argument('--mulan-window', type=float, default=None,
                        help="seconds of audio per MuLaN token column (default: the MuLaN's training crop)")
    parser.add_argument('--batch-size', type=int, default=8, help="chunks of equal length encoded together")
    parser.add_argument('--device', default='cpu', help="cpu or cuda")
    parser.add_argument('--max-seconds', type=float, default=None,
                        help="encode long files in non-overlapping chunks of this many seconds")
    parser.add_argument('--overwrite', action='store_true', help="replace existing token folders")
    return parser


def summary(folders: tp.Mapping[str, Path], seconds_taken: float) -> str:
    """One line per token folder (items, frames, codebooks, rate, producer), then audio seconds and time."""
    lines, audio_seconds, skipped = [], 0., 0
    for kind, folder in folders.items():
        meta, shards = load_token_meta(folder)
        items, frames = sum(s['items'] for s in shards), sum(s['frames'] for s in shards)
        audio_seconds, skipped = meta.extra.get('audio_seconds', 0.), len(meta.extra.get('skipped', []))
        lines.append(f"{kind}: {items} items, {frames} frames of {meta.num_codebooks} x {meta.cardinality} codes "
                     f"at {meta.frame_rate:g} Hz from {meta.model} -> {folder}")
    lines.append(f"{audio_seconds:.1f} s of audio tokenized in {seconds_taken:.1f} s; {skipped} files skipped.")
    return '\n'.join(lines)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Tokenize with the command-line arguments `argv`, print the summary; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.compression_model is None and args.semantic_tokenizer is None and args.mulan is None:
        _parser().error("pass --compression-model, --semantic-tokenizer and / or --mulan")
    begin = time.time()
    folders = tokenize_manifest(args.manifest, args.out_folder, compression_model=args.compression_model,
                                n_q=args.n_q, semantic_tokenizer=args.semantic_tokenizer, mulan=args.mulan,
                                mulan_window=args.mulan_window,
                                batch_size=args.batch_size, device=args.device, max_seconds=args.max_seconds,
                                overwrite=args.overwrite)
    print(summary(folders, time.time() - begin))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"scripts/tokenize_dataset.py: error: {err}", file=sys.stderr)
        sys.exit(2)
