#!/usr/bin/env python
"""Export a trained model's best weights and config to a compact file.

    python scripts/export.py //sig/SIG exports/codec.th
    python scripts/export.py outputs/xps/SIG/checkpoint.th exports/codec.th

Read it back with `CompressionModel.get_pretrained('exports/codec.th')`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiogen_lab.utils.export import export_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="//sig/SIG, an XP folder or a checkpoint file")
    parser.add_argument("out", help="the export file to write")
    parser.add_argument("--models", nargs="+", default=None,
                        help="which models to export (default: every model the solver marks for export)")
    args = parser.parse_args()
    path = export_checkpoint(args.checkpoint, args.out, names=args.models)
    print(f"Exported {args.checkpoint} to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
