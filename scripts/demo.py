#!/usr/bin/env python
"""The end-to-end demo: train a small codec on the example data, then use it like a researcher would.

1. `dora run solver=compression/debug` (a few minutes on 2 CPU cores, or GPU when available);
2. `CompressionSolver.model_from_checkpoint('//sig/SIG')`;
3. export the best weights and reload the export with `CompressionModel.get_pretrained(path)`;
4. encode and decode one example file, write the reconstruction; then score every evaluate clip (never
   seen in training) with the trained codec and with the same codec before training (same config and
   seed), music and speech apart, and print the bitrate.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def print_scores(scores: tp.Dict[str, tp.Dict[str, list]], bitrate: str) -> None:
    """One line per kind of clip: mean SI-SNR and mel distance, untrained -> trained."""
    print(f"\n=== evaluate clips (unseen in training), codec at {bitrate} ===")
    print(f"{'clips':<12} {'SI-SNR (dB): untrained -> trained':>36} {'mel distance: untrained -> trained':>38}")
    kinds = sorted(scores) + (["all"] if len(scores) > 1 else [])
    for kind in kinds:
        table = scores[kind] if kind != "all" else {
            key: [v for t in scores.values() for v in t[key]] for key in next(iter(scores.values()))}
        mean = {key: sum(values) / len(values) for key, values in table.items()}
        label = f"{kind} ({len(table['trained_mel'])})"
        print(f"{label:<12} {mean['untrained_si_snr']:>17.2f} -> {mean['trained_si_snr']:>7.2f}"
              f" {mean['untrained_mel']:>25.3f} -> {mean['trained_mel']:>6.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="dataset/example", help="example dataset folder (with train/valid/...)")
    parser.add_argument("--out", default="outputs/demo", help="where the export and reconstruction go")
    parser.add_argument("--solver", default="compression/debug",
                        help="the codec preset to train, e.g. compression/soundstream_debug")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for the training run")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))

    dataset = Path(args.dataset).resolve()
    overrides = [f"solver={args.solver}"]
    if dataset != (ROOT / "dataset/example").resolve():
        overrides += [f"datasource.{split}={dataset / split}" for split in ("train", "valid", "evaluate", "generate")]
    overrides += args.overrides

    begin = time.time()
    print(f"[1/4] Training: dora run {' '.join(overrides)}", flush=True)
    env = {**os.environ, "DORA_PACKAGE": "audiogen_lab"}
    subprocess.run([sys.executable, "-m", "dora", "run", *overrides], env=env, check=True)
    train_seconds = time.time() - begin

    import torch

    from audiogen_lab.data.audio import audio_read, audio_write
    from audiogen_lab.data.audio_dataset import load_audio_meta, resolve_manifest
    from audiogen_lab.data.audio_utils import convert_audio
    from audiogen_lab.metrics.audio import MelDistance, si_snr
    from audiogen_lab.metrics.reconstruction import score_reconstructions
    from audiogen_lab.models import builders as model_builders
    from audiogen_lab.models.compression import CompressionModel
    from audiogen_lab.solvers.compression import CompressionSolver
    from audiogen_lab.train import main as train_main
    from audiogen_lab.utils.export import export_checkpoint
    from audiogen_lab.utils.utils import dict_from_config, seed_everything

    xp = train_main.get_xp(overrides)
    xp.link.load()
    sig = xp.sig
    history = xp.link.history
    print(f"[2/4] Loading //sig/{sig} with CompressionSolver.model_from_checkpoint", flush=True)
    model = CompressionSolver.model_from_checkpoint(f"//sig/{sig}")

    out = Path(args.out)
    export_path = export_checkpoint(f"//sig/{sig}", out / f"compression_{sig}.th")
    print(f"[3/4] Exported to {export_path}; reloading with CompressionModel.get_pretrained", flush=True)
    exported = CompressionModel.get_pretrained(str(export_path))

    meta = load_audio_meta(resolve_manifest(dataset / "evaluate"))[0]
    wav, sr = audio_read(meta.path)
    wav = convert_audio(wav, sr, exported.sample_rate, exported.channels)
    with torch.no_grad():
        codes, scale = exported.encode(wav[None])
        recon = exported.decode(codes, scale)[0, :, :wav.shape[-1]]
        same = torch.allclose(model.decode(*model.encode(wav[None]))[0, :, :wav.shape[-1]], recon, atol=1e-5)
    ref_path = audio_write(out / "reference.wav", wav, exported.sample_rate)
    rec_path = audio_write(out / "reconstruction.wav", recon, exported.sample_rate)
    mel_kwargs = dict_from_config(xp.cfg.metrics.mel)
    mel = float(MelDistance(**mel_kwargs)(recon[None], wav[None]).mean())
    bits = math.log2(exported.cardinality)
    kbps = exported.num_codebooks * bits * exported.frame_rate / 1000
    bitrate = (f"{kbps:.2f} kbps ({exported.num_codebooks} codebooks x {bits:g} bits x "
               f"{exported.frame_rate:g} frames/s)")
    print(f"[4/4] Encoded {Path(meta.path).name}: codes {tuple(codes.shape)} "
          f"({exported.num_codebooks} codebooks x {codes.shape[-1]} frames at {exported.frame_rate:g} Hz), "
          f"SI-SNR {float(si_snr(recon[None], wav[None]).mean()):.2f} dB, mel distance {mel:.3f}; "
          f"export matches the checkpoint: {same}", flush=True)

    # The same architecture with the same seed, before any update: what training bought.
    seed_everything(xp.cfg.seed)
    untrained = model_builders.get_compression_model(xp.cfg).eval()
    scores = score_reconstructions({"untrained": untrained, "trained": exported}, dataset / "evaluate",
                                   mel_kwargs)

    last = history[-1]
    summary = {stage: {k: round(v, 4) for k, v in last[stage].items() if k != "duration"}
               for stage in ("valid", "evaluate") if stage in last}
    print("\n=== audiogen_lab demo ===")
    print(f"signature      : {sig}   (//sig/{sig})")
    print(f"XP folder      : {xp.folder}")
    print(f"codec          : {sum(p.numel() for p in exported.parameters()) / 1e6:.2f} M parameters, {bitrate}")
    print(f"training       : {len(history)} epochs x {xp.cfg.optim.updates_per_epoch} updates in "
          f"{train_seconds:.0f} s (including start-up, valid and evaluate stages)")
    print(f"valid si_snr   : {[round(h['valid']['si_snr'], 2) for h in history]} (by epoch)")
    print(f"last metrics   : {json.dumps(summary)}")
    print(f"samples        : {xp.folder / 'samples'}")
    print(f"export         : {export_path}")
    print(f"reference      : {ref_path}")
    print(f"reconstruction : {rec_path}")
    print_scores(scores, bitrate)
    print(f"\ntook {time.time() - begin:.0f} s. Table of XPs: dora info -f {sig}; grids: dora grid compression.debug")
    print("note: a small codec trained for a few minutes on CPU is far from transparent; train longer "
          f"(`dora run solver={args.solver} optim.epochs=50`) or a full config on a GPU "
          "(`dora run solver=compression/encodec_mmd_32khz`).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
