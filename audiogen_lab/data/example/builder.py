"""Build the example dataset: plan clips and splits, render them, write manifests and a build summary.

A build is kept when `build_info.json` records the same parameters, so re-running is cheap; any other
parameters clean the previous clips before rendering.
"""
from pathlib import Path
import json
import random
import time
import typing as tp

from .backends import resolve_backends
from .corpus import CandidateDrawer, corpus_catalogue
from .jobs import run_jobs

PathLike = tp.Union[str, Path]

BUILD_VERSION = 1
DEFAULT_SPLITS = (('train', 0.8), ('valid', 0.1), ('evaluate', 0.05), ('generate', 0.05))
MAX_ROUNDS = 8  # a music clip whose score fails gets fresh scores in the next round


def split_counts(num_clips: int, splits: tp.Sequence[tp.Tuple[str, float]]) -> tp.Dict[str, int]:
    """Clips per split: proportional to the fractions, at least one per split when there are enough clips."""
    total = sum(f for _, f in splits)
    if total <= 0 or any(f < 0 for _, f in splits):
        raise ValueError(f"Split fractions must be >= 0 with a positive sum, got {list(splits)}.")
    wanted = {name: num_clips * f / total for name, f in splits}
    floor = 1 if num_clips >= len(splits) else 0
    counts = {name: max(floor if w > 0 else 0, int(w)) for name, w in wanted.items()}
    while sum(counts.values()) > num_clips:
        name = max((n for n in counts if counts[n] > floor), key=lambda n: (counts[n] - wanted[n], counts[n]))
        counts[name] -= 1
    while sum(counts.values()) < num_clips:
        name = max(counts, key=lambda n: wanted[n] - counts[n])
        counts[name] += 1
    return counts


def _say(verbose: bool) -> tp.Callable[[str], None]:
    return (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)


def _clean(out_dir: Path, split_names: tp.Iterable[str]) -> None:
    """Remove the files of a previous build (clips, sidecars, manifests, build info)."""
    (out_dir / 'build_info.json').unlink(missing_ok=True)
    for name in split_names:
        folder = out_dir / name
        if folder.is_dir():
            for pattern in ('clip_*.wav', 'clip_*.json', 'data.jsonl'):
                for path in folder.glob(pattern):
                    path.unlink()


def build_example_dataset(out_dir: PathLike, num_clips: int = 150, clip_duration: float = 8.0,
                          sample_rate: int = 32000, seed: int = 0, speech_fraction: float = 0.2,
                          soundfont: tp.Optional[PathLike] = None,
                          splits: tp.Sequence[tp.Tuple[str, float]] = DEFAULT_SPLITS, workers: int = 2,
                          force: bool = False, backend: str = 'auto', verbose: bool = True) -> tp.Dict[str, tp.Any]:
    """Build the example dataset of music and speech clips with captions.

    Writes `out_dir/<split>/clip_NNNN.{wav,json}` (mono wav at `sample_rate`, caption sidecar),
    `out_dir/<split>/data.jsonl` manifests and `out_dir/build_info.json`.

    Args:
        out_dir: output folder.
        num_clips: total number of clips over all splits.
        clip_duration: seconds per clip.
        sample_rate: in Hz.
        seed: the dataset is a deterministic function of the seed and the other parameters.
        speech_fraction: fraction of speech clips (0 when espeak-ng is missing).
        soundfont: General MIDI SoundFont for FluidSynth (see `find_soundfont`).
        splits: `(name, fraction)` pairs.
        workers: processes rendering clips in parallel (1 renders in this process).
        force: rebuild even when `out_dir` already holds a build with the same parameters.
        backend: music renderer, 'auto' (FluidSynth when available, else the built-in synthesiser),
            'fluidsynth' (fail when missing) or 'synth' (always the built-in synthesiser).
        verbose: print progress lines and the summary.
    Returns:
        A summary: clips per split, per source and per collection, seconds taken, backends used,
        skipped scores, and `reused=True` when an existing build was kept.
    """
    from ..audio_dataset import AudioMeta, save_audio_meta
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}.")
    if clip_duration <= 0 or sample_rate <= 0:
        raise ValueError(f"clip_duration and sample_rate must be > 0, got {clip_duration} and {sample_rate}.")
    if not 0 <= speech_fraction <= 1:
        raise ValueError(f"speech_fraction must be in [0, 1], got {speech_fraction}.")
    splits = [(str(name), float(fraction)) for name, fraction in splits]
    if len({name for name, _ in splits}) != len(splits):
        raise ValueError(f"Split names must be unique, got {[n for n, _ in splits]}.")
    say = _say(verbose)
    start_time = time.time()
    out_dir = Path(out_dir)
    music_backend, font, has_speech = resolve_backends(backend, soundfont, speech_fraction > 0, say)
    params = {
        'version': BUILD_VERSION, 'num_clips': num_clips, 'clip_duration': float(clip_duration),
        'sample_rate': sample_rate, 'seed': seed, 'speech_fraction': float(speech_fraction),
        'splits': [list(s) for s in splits], 'music_backend': music_backend,
        'soundfont': None if font is None else {'name': font.name, 'bytes': font.stat().st_size},
        'speech_backend': 'espeak-ng' if has_speech else None,
    }
    info_path = out_dir / 'build_info.json'
    previous = json.loads(info_path.read_text()) if info_path.is_file() else None
    if previous is not None and not force and previous.get('params') == params and all(
            (out_dir / name / 'data.jsonl').is_file() for name, _ in splits):
        summary = dict(previous['summary'], reused=True)
        say(f"[example data] {out_dir} already holds this build: kept it (pass force=True / --force "
            f"to rebuild).\n{format_summary(summary)}")
        return summary
    old_splits = [s[0] for s in previous['params']['splits']] if previous else []
    _clean(out_dir, set(old_splits) | {name for name, _ in splits})

    # Plan: which clips are speech, which split each clip goes to, which scores the music clips try.
    plan_rng = random.Random(f"example-dataset-plan-{seed}")
    num_speech = int(round(num_clips * speech_fraction)) if has_speech else 0
    kinds = ['speech'] * num_speech + ['music'] * (num_clips - num_speech)
    plan_rng.shuffle(kinds)
    split_of = [name for name, count in split_counts(num_clips, splits).items() for _ in range(count)]
    plan_rng.shuffle(split_of)
    drawer = CandidateDrawer(corpus_catalogue(), seed) if num_speech < num_clips else None
    say(f"[example data] building {num_clips} clips of {clip_duration:g}s at {sample_rate} Hz in {out_dir} "
        f"({num_clips - num_speech} music via {music_backend}, {num_speech} speech via espeak-ng, "
        f"{workers} worker(s))")
    base = {'clip_duration': float(clip_duration), 'sample_rate': sample_rate, 'seed': seed,
            'music_backend': music_backend, 'soundfont': None if font is None else str(font)}
    pending = list(range(num_clips))
    results: tp.Dict[int, tp.Dict[str, tp.Any]] = {}
    skipped: tp.List[tp.Tuple[str, str]] = []
    for round_idx in range(MAX_ROUNDS):
        jobs = []
        for index in pending:
            job = dict(base, index=index, kind=kinds[index],
                       path=str(out_dir / split_of[index] / f"clip_{index + 1:04d}.wav"))
            if kinds[index] == 'music':
                assert drawer is not None
                # One score per clip first; clips whose score failed get two fresh ones per round.
                draws = 1 if round_idx == 0 else 2
                job['candidates'] = [(c.collection, c.path, c.number) for c in
                                     (drawer.draw() for _ in range(draws))]
            jobs.append(job)
        for res in run_jobs(jobs, workers, say, len(results), num_clips, start_time):
            skipped.extend(res['skipped'])
            if res['ok']:
                results[res['index']] = res
        pending = [i for i in pending if i not in results]
        if not pending:
            break
        tried = len(skipped) + len(results)
        if len(skipped) > max(20, tried // 2):
            reasons = '; '.join(f"{src}: {why}" for src, why in skipped[:8])
            raise RuntimeError(f"Too many clips failed ({len(skipped)} of {tried} attempts), e.g. {reasons}")
    if pending:
        raise RuntimeError(f"Could not make clips {pending} after {MAX_ROUNDS} rounds; skipped: {skipped[:8]}")

    # Manifests: paths relative to each split folder.
    for name, _ in splits:
        metas = []
        for index in sorted(i for i in results if split_of[i] == name):
            res = results[index]
            audio = Path(res['path'])
            metas.append(AudioMeta(path=audio.name, duration=res['frames'] / sample_rate,
                                   sample_rate=sample_rate, channels=1,
                                   info_path=audio.with_suffix('.json').name))
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        save_audio_meta(out_dir / name / 'data.jsonl', metas)
    collections: tp.Dict[str, int] = {}
    for res in results.values():
        collections[res['collection']] = collections.get(res['collection'], 0) + 1
    summary = {
        'out_dir': str(out_dir), 'num_clips': num_clips, 'clip_duration': float(clip_duration),
        'sample_rate': sample_rate,
        'splits': {name: sum(1 for i in results if split_of[i] == name) for name, _ in splits},
        'sources': {'music': num_clips - num_speech, 'speech': num_speech},
        'collections': dict(sorted(collections.items())),
        'backends': {'music': music_backend if font is None else f"fluidsynth ({font.name})",
                     'speech': 'espeak-ng' if has_speech else None},
        'skipped': len(skipped), 'skip_examples': [f"{src}: {why}" for src, why in skipped[:5]],
        'seconds': round(time.time() - start_time, 1), 'reused': False,
    }
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps({'params': params, 'summary': summary}, indent=1) + '\n')
    say(format_summary(summary))
    return summary


def format_summary(summary: tp.Dict[str, tp.Any]) -> str:
    """One readable paragraph describing a build summary."""
    splits = ', '.join(f"{k} {v}" for k, v in summary['splits'].items())
    sources = ', '.join(f"{k} {v}" for k, v in summary['sources'].items())
    colls = ', '.join(f"{k} {v}" for k, v in summary['collections'].items())
    backends = ', '.join(f"{k}: {v}" for k, v in summary['backends'].items() if v)
    lines = [f"[example data] {summary['num_clips']} clips of {summary['clip_duration']:g}s at "
             f"{summary['sample_rate']} Hz in {summary['out_dir']} ({summary['seconds']}s"
             f"{', reused' if summary.get('reused') else ''})",
             f"  splits: {splits}", f"  sources: {sources}", f"  collections: {colls}",
             f"  backends: {backends}", f"  skipped scores: {summary['skipped']}"]
    lines += [f"    {example}" for example in summary.get('skip_examples', [])]
    return '\n'.join(lines)
