"""The built-in synthetic set made on several processes, for experiments/gpu/run.py's epoch stages.

Kept apart from the stages (and free of JAX) because the pool's workers are *spawned*: each imports this module
and run.py's top level (the spawn start method re-runs the main script's imports), and neither may start JAX.
"""

from __future__ import annotations

import os
import time

import numpy as np


def _clip(args):
    from crnn_jax.data import synth

    label, index, seconds, sample_rate, seed = args
    return synth.generate_clip(label, seconds=seconds, sample_rate=sample_rate, seed=seed, index=index)


def _parallel_generate(workers: int):
    """A drop-in for synth.generate that makes the clips on `workers` spawned processes."""
    import concurrent.futures
    import multiprocessing

    from crnn_jax.data import synth

    def generate(n_per_class, *, seconds, sample_rate=22050, seed=0):
        labels = np.repeat(np.arange(len(synth.CLASS_NAMES), dtype=np.int32), n_per_class)
        jobs = [(int(l), r % n_per_class, seconds, sample_rate, seed) for r, l in enumerate(labels)]
        # spawn, not fork: the parent already runs JAX's threads
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            clips = np.stack(list(pool.map(_clip, jobs, chunksize=max(1, len(jobs) // (4 * workers)))))
        except BaseException:  # a stage over its time limit, too: leave no workers running behind it
            pool.shutdown(wait=False, cancel_futures=True)
            for p in list((getattr(pool, "_processes", None) or {}).values()):  # private, hence the getattr
                p.terminate()
            raise
        pool.shutdown()
        return clips, labels

    return generate


def prebuild_synthetic(clips_per_class: int, seconds: float, *, cache: str, sample_rate: int = 22050,
                       seed: int = 0, workers: int | None = None, min_audio_s: float = 600.0) -> dict:
    """Fill data.synthetic's cache for these settings -> {"seconds" (wall s), "workers", "fallback"?}.

    synth.generate is single-threaded (about 0.15 s per 30 s clip: minutes for 1,000), so when the set holds
    at least `min_audio_s` seconds of audio the clips are made on `workers` spawned processes (default: every
    core): the same pure functions of (seed, label, index) in synth.generate's class-major order, stored by
    data.synthetic under its own key, so train.train then finds them cached. If the pool fails the set is
    made serially and "fallback" says why."""
    from crnn_jax.data import dataset as data_lib
    from crnn_jax.data import synth

    start = time.perf_counter()
    build = lambda: data_lib.synthetic(clips_per_class=clips_per_class, seconds=seconds, sample_rate=sample_rate,
                                       seed=seed, cache=cache)
    n_workers = workers or os.cpu_count() or 1
    if clips_per_class * len(synth.CLASS_NAMES) * seconds < min_audio_s or n_workers < 2:
        build()
        return {"seconds": time.perf_counter() - start, "workers": 1}
    original = synth.generate
    synth.generate = _parallel_generate(n_workers)
    fallback = None
    try:
        build()
    except Exception as e:  # e.g. a worker that could not start: slower, but the stage still measures
        fallback = f"parallel build failed ({type(e).__name__}: {e}); made serially"[:500]
    finally:
        synth.generate = original
    if fallback:
        build()
    return {"seconds": time.perf_counter() - start, "workers": 1 if fallback else n_workers,
            **({"fallback": fallback} if fallback else {})}
