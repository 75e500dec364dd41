"""Rendering jobs: make one clip per job, in this process or in a pool of spawned worker processes.

A job is a plain dict (picklable): index, kind ('music' or 'speech'), output path, clip duration,
sample rate, seed, music backend, SoundFont and, for music, the candidate scores to try in order.
"""
import multiprocessing
import time
import typing as tp
import warnings

import numpy as np

from .clips import SkipCandidate
from .corpus import ScoreCandidate
from .music import make_music_clip
from .speech import make_speech_clip


def init_worker() -> None:
    """Set up a rendering process: one thread each, no music21 notation warnings."""
    warnings.filterwarnings('ignore', module=r'music21(\.|$)')
    import torch
    torch.set_num_threads(1)


def run_job(job: tp.Dict[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Make one clip (trying the job's candidates in order), write its audio and sidecar."""
    import torch
    from ..audio import audio_write
    from ..info_dataset import write_sidecar
    skipped: tp.List[tp.Tuple[str, str]] = []
    result: tp.Optional[tp.Tuple[np.ndarray, tp.Dict[str, tp.Any]]] = None
    if job['kind'] == 'speech':
        try:
            result = make_speech_clip(job['index'], job['clip_duration'], job['sample_rate'], job['seed'])
        except SkipCandidate as exc:
            skipped.append((f"speech:{job['index']}", str(exc)))
    else:
        for fields in job['candidates']:
            candidate = ScoreCandidate(*fields)
            try:
                result = make_music_clip(candidate, job['clip_duration'], job['sample_rate'], job['seed'],
                                         job['music_backend'], job['soundfont'])
                break
            except SkipCandidate as exc:
                skipped.append((candidate.source, str(exc)))
    out: tp.Dict[str, tp.Any] = {'index': job['index'], 'kind': job['kind'], 'skipped': skipped, 'ok': False}
    if result is None:
        return out
    wav, info = result
    path = audio_write(job['path'], torch.from_numpy(wav)[None], job['sample_rate'])
    write_sidecar(path, **info)
    out.update(ok=True, path=str(path), frames=int(wav.shape[0]), collection=info.get('collection', 'speech'))
    return out


def run_jobs(jobs: tp.List[tp.Dict[str, tp.Any]], workers: int, say: tp.Callable[[str], None],
             done_before: int, total: int, start_time: float) -> tp.List[tp.Dict[str, tp.Any]]:
    """Run `jobs` with `workers` processes (1: in this process) and return their results as they finish.

    Prints a progress line through `say` about every tenth of `total` clips; `done_before` clips were made
    by earlier rounds and `start_time` is when the build started.
    """
    results = []
    every = max(1, total // 10)

    def report(res):
        results.append(res)
        done = done_before + sum(r['ok'] for r in results)
        if res['ok'] and (done % every == 0 or done == total):
            say(f"[example data] {done}/{total} clips ({time.time() - start_time:.1f}s)")

    if workers <= 1 or len(jobs) <= 1:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', module=r'music21(\.|$)')
            for job in jobs:
                report(run_job(job))
    else:
        context = multiprocessing.get_context('spawn')
        with context.Pool(min(workers, len(jobs)), initializer=init_worker) as pool:
            for res in pool.imap_unordered(run_job, jobs):
                report(res)
    return results
