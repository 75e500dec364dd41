"""Find audio files under a folder, check them, and build a manifest (the manifest-builder CLI).

    python -m audiogen_lab.data.audio_dataset ROOT OUT [--resolve] [--complete] [--headers-only]

Every file is decoded once (unless `--headers-only`) and left out, with a warning naming it, when it
cannot be read, holds no frames, holds NaN or infinite samples, decodes to fewer frames than its header
claims (truncated), is a dangling symlink, or has a caption sidecar that cannot be read. The builder
prints a summary of what it left out.
"""
import argparse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
import sys
import typing as tp

from .audio import AudioReadError, audio_info, audio_scan
from .info_dataset import find_sidecar, read_captions, sidecar_path
from .manifest import MANIFEST_NAMES, AudioMeta, save_audio_meta

logger = logging.getLogger(__name__)

PathLike = tp.Union[str, Path]
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3')
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)

# Why a file was left out (the keys of `ScanResult.reasons`).
UNREADABLE = 'unreadable'
EMPTY = 'no audio frames'
NONFINITE = 'NaN or infinite samples'
TRUNCATED = 'truncated'
DANGLING = 'dangling symlink'
BAD_SIDECAR = 'unreadable caption sidecar'


@dataclass
class Skipped:
    """A file left out of a manifest: its path, the category (see the module constants) and details."""
    path: str
    category: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.category} ({self.detail})"


@dataclass
class ScanResult:
    """Entries kept (sorted by path) and files left out."""
    metas: tp.List[AudioMeta] = field(default_factory=list)
    skipped: tp.List[Skipped] = field(default_factory=list)

    @property
    def reasons(self) -> tp.Dict[str, int]:
        """How many files were left out per category."""
        return dict(Counter(s.category for s in self.skipped))

    def summary(self) -> str:
        """One line per category, then the files (at most `limit` shown)."""
        if not self.skipped:
            return "No file left out."
        counts = ', '.join(f"{n} {category}" for category, n in sorted(self.reasons.items()))
        lines = [f"Left out {len(self.skipped)} files: {counts}."]
        lines += [f"  {s}" for s in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ...and {len(self.skipped) - 20} more")
        return '\n'.join(lines)


def _scan_one(path: Path, check: bool, complete: bool) -> tp.Union[AudioMeta, Skipped]:
    try:
        info = audio_info(path)
        amplitude = None
        if check or complete:
            scan = audio_scan(path)
            if scan.nonfinite:
                return Skipped(str(path), NONFINITE, f"{scan.nonfinite} bad samples")
            if scan.truncated:
                return Skipped(str(path), TRUNCATED, f"the header claims {scan.header_frames} frames, "
                                                     f"decoding stopped after {scan.frames}")
            amplitude = scan.peak if complete else None
        if info.duration <= 0:
            return Skipped(str(path), EMPTY, "the header claims 0 frames")
    except AudioReadError as exc:
        return Skipped(str(path), UNREADABLE, exc.reason)
    sidecar = find_sidecar(path)
    if sidecar is None and sidecar_path(path).is_symlink():
        return Skipped(str(path), BAD_SIDECAR, f"{sidecar_path(path)} is a dangling symlink")
    if sidecar is not None:
        try:
            read_captions(sidecar)
        except AudioReadError as exc:
            return Skipped(str(path), BAD_SIDECAR, f"{sidecar}: {exc.reason}")
    return AudioMeta(path=str(path), duration=info.duration, sample_rate=info.sample_rate,
                     channels=info.channels, amplitude=amplitude,
                     info_path=None if sidecar is None else str(sidecar))


def scan_audio_files(root: PathLike, exts: tp.Sequence[str] = AUDIO_EXTENSIONS, progress: bool = False,
                     resolve: bool = True, workers: int = DEFAULT_WORKERS, complete: bool = False,
                     check: bool = True) -> ScanResult:
    """Scan `root` recursively for audio files, check them and read their headers.

    Args:
        root: folder to scan.
        exts: file extensions to keep (case-insensitive).
        progress: print progress to stderr.
        resolve: make paths absolute with symlinks resolved; otherwise paths are `root` joined with
            the file's relative path.
        workers: threads reading files.
        complete: fill `amplitude` (the peak absolute value).
        check: decode every file to catch NaN / infinite samples and truncation (headers only otherwise).
    Returns:
        A `ScanResult`: entries sorted by path, with `info_path` set when a caption sidecar
        `<stem>.json` sits beside the file, and the files left out with the reason.
    Raises:
        FileNotFoundError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Cannot scan {root} for audio: no such folder.")
    exts = tuple(ext.lower() if ext.startswith('.') else '.' + ext.lower() for ext in exts)
    candidates = sorted(p for p in root.rglob('*') if p.suffix.lower() in exts)
    result = ScanResult()
    paths = []
    for path in candidates:
        if path.is_symlink() and not path.exists():
            result.skipped.append(Skipped(str(path), DANGLING, f"points to {os.readlink(path)}"))
        elif path.is_file():
            paths.append(path.resolve() if resolve else path)
    step = max(1, len(paths) // 10)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for idx, item in enumerate(pool.map(lambda p: _scan_one(p, check, complete), paths)):
            (result.skipped if isinstance(item, Skipped) else result.metas).append(item)
            if progress and ((idx + 1) % step == 0 or idx + 1 == len(paths)):
                print(f"Scanned {idx + 1}/{len(paths)} files in {root}", file=sys.stderr, flush=True)
    result.skipped.sort(key=lambda s: s.path)
    return result


def find_audio_files(root: PathLike, exts: tp.Sequence[str] = AUDIO_EXTENSIONS, progress: bool = False,
                     resolve: bool = True, workers: int = DEFAULT_WORKERS, complete: bool = False,
                     check: bool = True) -> tp.List[AudioMeta]:
    """The entries of `scan_audio_files` (same arguments); files left out are named in one warning."""
    result = scan_audio_files(root, exts, progress=progress, resolve=resolve, workers=workers,
                              complete=complete, check=check)
    if result.skipped:
        logger.warning("Scanning %s: %s", root, result.summary())
    return result.metas


def _manifest_path(out: PathLike) -> Path:
    out = Path(out)
    if out.name.endswith('.jsonl') or out.name.endswith('.jsonl.gz'):
        return out
    return out / MANIFEST_NAMES[0]


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """Build a manifest: `python -m audiogen_lab.data.audio_dataset ROOT OUT [options]`. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog='python -m audiogen_lab.data.audio_dataset',
        description="Scan a folder for audio files (wav, flac, ogg, mp3), check them and write a jsonl manifest.")
    parser.add_argument('root', help="folder to scan recursively")
    parser.add_argument('out', help="manifest file (.jsonl or .jsonl.gz), or a folder to hold data.jsonl")
    parser.add_argument('--resolve', action='store_true',
                        help="store absolute paths with symlinks resolved (default: paths relative to the "
                             "manifest's folder, so the dataset can be moved)")
    parser.add_argument('--complete', action='store_true', help="store every file's peak amplitude")
    parser.add_argument('--headers-only', action='store_true',
                        help="read headers only (fast, but NaN / infinite samples and truncated files go "
                             "unnoticed until training)")
    parser.add_argument('--workers', type=int, default=DEFAULT_WORKERS, help="threads reading files")
    parser.add_argument('--quiet', action='store_true', help="no progress output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

    if not Path(args.root).is_dir():
        print(f"error: {args.root} is not a folder: nothing to scan.", file=sys.stderr)
        return 2
    result = scan_audio_files(args.root, progress=not args.quiet, resolve=args.resolve, workers=args.workers,
                              complete=args.complete, check=not args.headers_only)
    for skipped in result.skipped:
        logger.warning("Leaving out %s", skipped)
    metas = result.metas
    if not metas:
        print(f"No usable audio file ({', '.join(AUDIO_EXTENSIONS)}) under {args.root}. {result.summary()}",
              file=sys.stderr)
        return 1
    out = save_audio_meta(_manifest_path(args.out), metas, relative=not args.resolve)
    hours = sum(m.duration for m in metas) / 3600
    captions = sum(m.info_path is not None for m in metas)
    print(f"Wrote {out}: {len(metas)} files, {hours:.3f} hours, {captions} with captions.")
    print(result.summary())
    return 0
