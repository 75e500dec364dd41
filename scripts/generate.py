#!/usr/bin/env python
"""Generate audio with three trained AudioLM stages and write a wav file and a spectrogram PNG per sample.

    python scripts/generate.py --semantic //sig/S1 --coarse //sig/S2 --fine //sig/S3 --duration 4 \
        --num-samples 2 --top-k 50 --seed 0 --out samples/

The codec is the coarse stage's `compression_model_checkpoint` unless `--codec` names one; the semantic rate
is that of the semantic stage's tokenizer unless `--semantic-rate` is given.
"""
from __future__ import annotations

import argparse
import sys
import time
import typing as tp
from pathlib import Path

import torch

from audiogen_lab.data.audio import audio_write
from audiogen_lab.models.audiolm import AudioLM
from audiogen_lab.utils.spectrogram_png import log_mel_image, write_png


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--semantic", required=True, help="semantic stage: //sig/SIG, checkpoint or export")
    parser.add_argument("--coarse", required=True, help="coarse stage")
    parser.add_argument("--fine", required=True, help="fine stage")
    parser.add_argument("--codec", default=None, help="compression model (default: the coarse stage's)")
    parser.add_argument("--semantic-rate", type=float, default=None, help="semantic ids per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per sample")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args(argv)
    lm = AudioLM.from_checkpoints(args.semantic, args.coarse, args.fine, codec=args.codec,
                                  semantic_rate=args.semantic_rate, device=args.device)
    start = time.time()
    audio = lm.generate(args.duration, num_samples=args.num_samples, temperature=args.temperature,
                        top_k=args.top_k, seed=args.seed).cpu()
    args.out.mkdir(parents=True, exist_ok=True)
    rate = lm.codec.sample_rate
    for index, wav in enumerate(audio):
        stem = args.out / f"sample_{index:03d}"
        audio_write(stem.with_suffix(".wav"), wav, rate)
        write_png(log_mel_image(wav, rate), stem.with_suffix(".png"))
    print(f"{len(audio)} samples of {audio.shape[-1] / rate:.2f} s at {rate} Hz in {time.time() - start:.1f} s: "
          f"{args.out}/sample_*.wav, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
