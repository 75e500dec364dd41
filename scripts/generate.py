#!/usr/bin/env python
"""Generate audio with three trained AudioLM (or MusicLM) stages, or with a latent GAN; write a wav file and a
spectrogram PNG per sample.

    python scripts/generate.py --semantic //sig/S1 --coarse //sig/S2 --fine //sig/S3 --duration 4 \
        --num-samples 2 --top-k 50 --seed 0 --out samples/
    python scripts/generate.py --semantic //sig/M1 --coarse //sig/M2 --fine //sig/M3 --duration 10 \
        --text "a calm piano melody" --text "fast drums" --cfg 3 --num-candidates 4 --out samples/
    python scripts/generate.py ... --prompt intro.wav --duration 8      # continue the first seconds of a file
    python scripts/generate.py --latent-gan //sig/G1 --duration 61 --num-samples 2 --truncation 2 --seed 0
    python scripts/generate.py --latent-gan //sig/G1 --autoencoder //sig/AE --loop --duration 30

The codec is the coarse stage's `compression_model_checkpoint` unless `--codec` names one; the semantic rate
is that of the semantic stage's tokenizer unless `--semantic-rate` is given. With `--text` the stages must be
MusicLM's (``solver=musiclm/...``): samples are guided by the texts' MuLaN tokens (`--cfg`), and each is the
best of `--num-candidates` by MuLaN similarity to its text (`--mulan` defaults to the semantic stage's
``mulan_checkpoint``). Files are named ``sample_NNN`` in the order texts x samples.

With `--latent-gan`, every window of a piece is generated in parallel and the latents are decoded by the
autoencoder that made the training latents (`latent_gan.autoencoder` of the GAN's config, else the `model`
named by its training latent folder's meta.json, unless `--autoencoder` names one); stereo latents give
stereo files. `--truncation` bounds the anchors and style, `--loop` makes a piece that repeats.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import typing as tp
from pathlib import Path

import torch

from audiogen_lab.data.audio import audio_read, audio_write
from audiogen_lab.models.audiolm import AudioLM, MusicLM
from audiogen_lab.utils.spectrogram_png import log_mel_image, write_png


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    start = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--semantic", help="semantic stage: //sig/SIG, checkpoint or export")
    parser.add_argument("--coarse", help="coarse stage")
    parser.add_argument("--fine", help="fine stage")
    parser.add_argument("--latent-gan", default=None, help="a latent GAN instead of the three stages")
    parser.add_argument("--autoencoder", default=None, help="decoder of the latent GAN's latents (default: its own)")
    parser.add_argument("--truncation", type=float, default=None, help="latent GAN: truncate anchors and style")
    parser.add_argument("--loop", action="store_true", help="latent GAN: a looping piece")
    parser.add_argument("--codec", default=None, help="compression model (default: the coarse stage's)")
    parser.add_argument("--semantic-rate", type=float, default=None, help="semantic ids per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per sample")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--text", action="append", default=None, help="a text to condition on (MusicLM; repeat)")
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale with --text")
    parser.add_argument("--num-candidates", type=int, default=1, help="draws per sample, best kept by MuLaN")
    parser.add_argument("--mulan", default=None, help="MuLaN (default: the semantic stage's mulan_checkpoint)")
    parser.add_argument("--prompt", type=Path, default=None, help="audio file whose start is continued")
    parser.add_argument("--prompt-seconds", type=float, default=None, help="seconds of --prompt kept (default all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args(argv)
    if args.latent_gan:
        audio, rate = generate_with_latent_gan(args)
        return write_samples(audio, rate, args.out, time.time() - start)
    missing = [name for name in ("semantic", "coarse", "fine") if not getattr(args, name)]
    if missing:
        parser.error(f"name the {', '.join('--' + name for name in missing)} stage(s), or a --latent-gan")
    prompt, prompt_rate = None, None
    if args.prompt is not None:
        prompt, prompt_rate = audio_read(args.prompt, duration=args.prompt_seconds or -1.0)
    common = dict(num_samples=args.num_samples, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                  prompt_wave=prompt, prompt_sample_rate=prompt_rate)
    if args.text or args.mulan:
        lm = MusicLM.from_checkpoints(args.semantic, args.coarse, args.fine, codec=args.codec,
                                      semantic_rate=args.semantic_rate, device=args.device, mulan=args.mulan)
        audio = lm.generate(args.duration, text=args.text, cfg=args.cfg, num_candidates=args.num_candidates,
                            **common).cpu()
    else:
        lm = AudioLM.from_checkpoints(args.semantic, args.coarse, args.fine, codec=args.codec,
                                      semantic_rate=args.semantic_rate, device=args.device)
        audio = lm.generate(args.duration, **common).cpu()
    return write_samples(audio, lm.codec.sample_rate, args.out, time.time() - start)


def generate_with_latent_gan(args: argparse.Namespace) -> tp.Tuple[torch.Tensor, int]:
    """Audio `[N, C, round(duration * sample_rate)]` and its rate from `--latent-gan` (see the module docstring)."""
    from audiogen_lab.models.latent_gan import decode_latents
    from audiogen_lab.solvers.latent_gan import LatentGANSolver, autoencoder_source
    from audiogen_lab.solvers.loading import load_model, read_package
    gan = LatentGANSolver.model_from_checkpoint(args.latent_gan, device=args.device)
    source = args.autoencoder or autoencoder_source(read_package(args.latent_gan).cfg)
    if not source:
        raise ValueError(f"{args.latent_gan} names no autoencoder (no latent_gan.autoencoder, and its training "
                         "latent folder is gone): pass --autoencoder.")
    autoencoder = load_model(str(source), device=args.device, family="compression")
    if abs(autoencoder.frame_rate - gan.frame_rate) > 1e-6:
        raise ValueError(f"{source} runs at {autoencoder.frame_rate} latent frames/s but {args.latent_gan} was "
                         f"trained on latents at {gan.frame_rate}: pass the --autoencoder that made them.")
    covering = math.ceil(args.duration * gan.frame_rate - 1e-6) / gan.frame_rate  # whole frames, at least duration
    with torch.no_grad():
        latents = gan.generate(covering, args.num_samples, args.truncation, args.seed, loop=args.loop)
        audio = decode_latents(latents, autoencoder, channels=gan.channels, seed=args.seed)
    rate = autoencoder.sample_rate
    return audio[..., :round(args.duration * rate)].cpu(), rate


def write_samples(audio: torch.Tensor, rate: int, out: Path, seconds: float) -> int:
    """Write `sample_NNN.wav` and `.png` for each of `audio [N, C, T]` into `out`; returns the exit code."""
    out.mkdir(parents=True, exist_ok=True)
    for index, wav in enumerate(audio):
        stem = out / f"sample_{index:03d}"
        audio_write(stem.with_suffix(".wav"), wav, rate)
        write_png(log_mel_image(wav, rate), stem.with_suffix(".png"))
    print(f"{len(audio)} samples of {audio.shape[-1] / rate:.2f} s at {rate} Hz in {seconds:.1f} s: "
          f"{out}/sample_*.wav, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
