#!/usr/bin/env python
"""Build the example dataset: music21 scores rendered with FluidSynth, and espeak-ng speech, with captions.

    python scripts/build_example_dataset.py                      # 150 clips of 8 s in dataset/example
    python scripts/build_example_dataset.py --num-clips 20 --duration 4 --out dataset/tiny

Needs `fluidsynth`, a General MIDI SoundFont and `espeak-ng` (apt-get install fluidsynth
timgm6mb-soundfont espeak-ng); without them the scores are rendered by a built-in synthesiser and the
speech clips are left out. Re-running with the same parameters keeps the existing build (see --force).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiogen_lab.data.example import BACKENDS, build_example_dataset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="dataset/example", help="output folder (one sub-folder per split)")
    parser.add_argument("--num-clips", type=int, default=150, help="number of clips over all splits")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per clip")
    parser.add_argument("--sample-rate", type=int, default=32000, help="sample rate in Hz")
    parser.add_argument("--seed", type=int, default=0, help="the dataset is a deterministic function of it")
    parser.add_argument("--speech-fraction", type=float, default=0.2, help="fraction of speech clips")
    parser.add_argument("--soundfont", default=None, help="General MIDI .sf2 file (default: search the system)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="music renderer: fluidsynth when available (auto), or the built-in synthesiser")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--force", action="store_true", help="rebuild even if the same build exists")
    args = parser.parse_args()
    build_example_dataset(args.out, num_clips=args.num_clips, clip_duration=args.duration,
                          sample_rate=args.sample_rate, seed=args.seed, speech_fraction=args.speech_fraction,
                          soundfont=args.soundfont, workers=args.workers, force=args.force,
                          backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
