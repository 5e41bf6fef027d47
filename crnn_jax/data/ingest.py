"""Audio files -> one int16 array, songs end to end, decoded on every core.

    decode_files(groot, songs, sample_rate, path, workers=0) -> (Dataset, [(song, why)] skipped)

Each file's decoded length is known from its header before decoding, so the array (the .npy file `path`,
or memory when path is None) is allocated once with room for every song, and each file is decoded block
by block (decode.blocks) straight into its room. With a file, that is done by a pool of `workers` spawned
processes (0: one per CPU core, fewer for a small folder: see n_workers), which read the headers too
(FFmpeg's lengths come from demuxing), each opening the .npy itself and writing its song at its place
with os.pwrite: a worker holds one block, never a song, and the parent holds no audio at all. Files that
turn out shorter, or bad, leave gaps, closed at the end by moving the songs after them down. The result
does not depend on the number of workers, byte for byte.

A bad file costs that file only: in a worker its error comes back as a string, (0, why), and the file is
skipped with a warning; a worker that dies (out of memory, a decoder crash) is one DataError naming the
files it may have been decoding. One worker decodes in this process (no pool); decoding into memory (the
fallback when the cache cannot be written) uses threads, which the decoders' C code lets run in parallel.

Processes are started with "spawn", never "fork": the parent may have started JAX's threads, and a fork
copies a process with locks held by threads that do not exist in the child. Spawn imports the parent's
__main__ module in each worker (multiprocessing's rule): `python -m crnn_jax.train` costs each worker
train.py's imports; the `crnn-jax` console script costs nothing.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data.log import say
from crnn_jax.errors import ConfigError, DataError, one_line

LOG_EVERY = 10.0  # s between "decoded i/n files" lines when no progress bar is drawn (logs, pipes)
# File bytes each automatic worker must have: starting one (a fresh interpreter importing numpy, scipy,
# soundfile and PyAV) costs ~1 s of a core, and 16 MB is ~16 min of 128 kbit/s MP3, ~2 s of decoding on
# the 2.6 GHz EPYC core of experiments/BENCHMARKS.md (uncompressed WAV: 1.5 min, its cost bounded the same).
AUTO_BYTES = 16 << 20


def cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def n_workers(workers: int, n_files: int, n_bytes: int) -> int:
    """Config.workers -> the workers to start for `n_files` files of `n_bytes` bytes in all (>= 1).

    0 (automatic): one per core, but none with under AUTO_BYTES of files to decode, which would not win
    back its start. Any other number is taken as asked, up to one per file."""
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: one per CPU core), got {workers}")
    return max(1, min(workers or min(cores(), n_bytes // AUTO_BYTES), n_files))


class Pool:
    """`with Pool(workers) as p: p.each(fn, calls, names)`: calls run by `workers` spawned processes
    (threads if not `processes`), queued calls cancelled on exit; one worker runs them in this process."""

    def __init__(self, workers: int, processes: bool = True):
        self.workers, self.ex = workers, None
        if workers > 1 and processes:
            self.ex = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint)
        elif workers > 1:
            self.ex = concurrent.futures.ThreadPoolExecutor(workers)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        if self.ex is not None:
            self.ex.shutdown(wait=True, cancel_futures=True)

    def each(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str]) -> Iterator[tuple[int, Any]]:
        """fn(*calls[i]) for every i -> (i, result) as they complete (in order in this process).

        names[i] names call i in the one-line DataError raised when a worker process dies."""
        if self.ex is None:
            for i, args in enumerate(calls):
                yield i, fn(*args)
            return
        futures = {self.ex.submit(fn, *args): i for i, args in enumerate(calls)}
        pending = dict.fromkeys(range(len(calls)))  # in submission order, the order calls start in
        try:
            for f in concurrent.futures.as_completed(futures):
                result = f.result()
                del pending[futures[f]]
                yield futures[f], result
        except BrokenProcessPool:
            # Calls start in order, one per worker (and one queued): the culprit is among the first not done.
            first = [names[i] for i in list(pending)[:self.workers + 1]]
            raise DataError(f"a decoding process died (out of memory, killed, a decoder crash, or it could not "
                            f"start) while decoding one of: {', '.join(first)}; nothing was cached (move that "
                            f"file away, or decode in one process with --workers 1)") from None


def _ignore_sigint() -> None:
    """Ctrl-C reaches the whole process group: the parent stops the pool; a worker finishes its file
    instead of printing a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _SongWriter(data.SampleSink):
    """A worker's own handle on the .npy file the parent preallocated: SampleSink.write, nothing else."""

    def __init__(self, path: str, start: int):  # the file exists, sized, its header written by the parent
        self.path, self.start, self.fd = path, start, os.open(path, os.O_WRONLY)


def header(path: str, sample_rate: int) -> tuple[int, str]:
    """(samples `path` decodes to at most at `sample_rate` Hz, '') from its header, or (0, why it is bad)."""
    try:
        return decode.frames_out(path, sample_rate), ""
    except Exception as e:  # a bad file is that file's problem: one line back, never an exception
        return 0, _why(path, e)


def decode_song(sink: data.SampleSink | tuple[str, int], path: str, sample_rate: int, pos: int, room: int
                ) -> tuple[int, str]:
    """Decode `path` at `sample_rate` Hz into samples [pos, pos + room) of `sink` -> (samples written,
    '') or (0, why the file is skipped). sink: a SampleSink of this process, or (.npy path, header bytes)
    of the parent's file, opened here (in a worker process). Samples past `room` are dropped."""
    own = isinstance(sink, tuple)
    sink = _SongWriter(*sink) if own else sink
    try:
        done, blocks = 0, decode.blocks(path, sample_rate)
        while True:
            try:
                block = next(blocks, None)  # float32 [n], one block: all this call holds
            except Exception as e:  # a bad file; an OSError writing below (disk full) fails the cache instead
                return 0, _why(path, e)
            if block is None:
                return done, "" if done else f"{path}: no audio (0 samples)"
            block = data.to_int16(block)[:room - done]
            sink.write(pos + done, block)
            done += len(block)
    finally:
        if own:
            sink.close()


def _why(path: str, e: Exception) -> str:
    """A decoding failure -> one line naming the file (DataErrors already do)."""
    if isinstance(e, DataError):
        return str(e)
    return f"{path}: cannot be decoded ({type(e).__name__}: {one_line(e)})"


def decode_files(groot: str, songs: list[str], sample_rate: int, path: str | None, *, workers: int = 0,
                 n_bytes: int = 0) -> tuple[data.Dataset, list[tuple[str, str]]]:
    """Songs "<genre>/<path>" below `groot` -> (Dataset of the usable ones at `sample_rate` Hz, their
    audio the .npy file `path` memory-mapped, or memory if path is None; [(song, why)] of those skipped).

    workers: processes (threads when path is None), 0 = automatic (n_workers, by n_bytes: the files'
    size in bytes, also reported).
    Raises DataError when no song or only one genre is usable, or a worker process dies."""
    files = [os.path.join(groot, s) for s in songs]
    n = n_workers(workers, len(songs), n_bytes)
    t0, sink = time.time(), None
    if path:  # a cache that cannot be written fails now, before any worker starts (SampleSink rewrites it)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        open(path, "wb").close()
    try:
        with Pool(n, processes=path is not None) as p:
            sizes = np.zeros(len(songs), np.int64)  # samples reserved per song, from its header
            why = [""] * len(songs)  # why each song is skipped, "" = not (yet)
            for i, (size, bad) in p.each(header, [(f, sample_rate) for f in files], songs):
                sizes[i], why[i] = size, bad
            reserved = np.concatenate([[0], np.cumsum(sizes)])  # [n + 1] where each song's room starts
            sink = data.SampleSink(path, int(reserved[-1]))
            how = "in this process" if n == 1 else f"with {n} {'processes' if path else 'threads'}"
            say(f"decoding {len(songs)} files ({n_bytes / 1e6:.0f} MB) from {groot} at {sample_rate} Hz {how}"
                + ("; cached after this run" if path else ""))
            todo = [i for i in range(len(songs)) if not why[i]]
            lengths = np.zeros(len(songs), np.int64)  # samples decoded per song, 0 = skipped
            target = (path, sink.start) if path and p.ex is not None else sink
            calls = [(target, files[i], sample_rate, int(reserved[i]), int(sizes[i])) for i in todo]
            _collect(p.each(decode_song, calls, [songs[i] for i in todo]), todo, lengths, why, t0)
        skipped = [(s, w.replace(os.path.join(groot, ""), "")) for s, w in zip(songs, why) if w]
        for _, w in skipped:  # in song order, whatever order the workers finished in
            say(f"warning: skipping {w}")
        audio = _close_gaps(sink, reserved, lengths)
    finally:
        if sink is not None:
            sink.close()
    if skipped:
        say(f"skipped {len(skipped)} of {len(songs)} files (first: {skipped[0][1]})")
    keep = np.flatnonzero(lengths)  # the usable songs, in order
    names = [songs[i] for i in keep]
    for genre in sorted({s.split("/", 1)[0] for s in songs} - {s.split("/", 1)[0] for s in names}):
        say(f"warning: genre {genre} has no usable song and is left out")
    if not names:
        raise DataError(f"--data {groot}: none of its {len(songs)} audio files could be used (first: "
                        f"{skipped[0][1]})")
    ds = assemble(audio, lengths[keep], names, sample_rate, root=groot)
    say(f"{len(ds)} songs, {len(ds.class_names)} genres, {ds.lengths.sum() / sample_rate / 3600:.2f} h of audio "
        f"from {groot} ({time.time() - t0:.1f} s)")
    return ds, skipped


def _close_gaps(sink: data.SampleSink, reserved: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Songs decoded into their rooms (starting at reserved [n + 1]; lengths [n] samples, 0 = skipped)
    -> int16 [lengths.sum()], the songs back to back: each moved down to follow the one before."""
    keep = np.flatnonzero(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])[:-1]]).astype(np.int64)
    for i, dst in zip(keep, offsets):
        if reserved[i] != dst:
            sink.move(int(reserved[i]), int(dst), int(lengths[i]))
    return sink.finish(int(lengths.sum()))


def _collect(results: Iterator[tuple[int, Any]], todo: list[int], lengths: np.ndarray, why: list[str],
             t0: float) -> None:
    """decode_song's (k, (n, why)) for song todo[k], as they complete -> lengths and why, behind a
    progress bar on a terminal (else a line every LOG_EVERY s, for logs)."""
    bar = tqdm(total=len(todo), unit="file", desc="data: decoding", disable=not sys.stderr.isatty(),
               dynamic_ncols=True, leave=False)
    last = t0
    with bar:
        for done, (k, (got, bad)) in enumerate(results, 1):
            lengths[todo[k]], why[todo[k]] = got, bad
            bar.update()
            if bar.disable and time.time() - last > LOG_EVERY and done < len(todo):
                last = time.time()
                say(f"decoded {done}/{len(todo)} files ({last - t0:.0f} s)")


def assemble(audio: np.ndarray, lengths: np.ndarray, names: list[str], sample_rate: int,
             class_names: tuple[str, ...] | None = None, root: str = "") -> data.Dataset:
    """int16 [total] songs back to back, their lengths [n] (samples) and names "<genre>/..." -> Dataset
    (classes: `class_names`, or the genres present, sorted; DataError if fewer than 2)."""
    genres = [n.split("/", 1)[0] for n in names]
    if class_names is None:
        class_names = tuple(sorted(set(genres)))
        if len(class_names) < 2:
            raise DataError(f"only one genre ({class_names[0]}) has usable songs; at least 2 are needed")
    index = {g: i for i, g in enumerate(class_names)}
    return data.Dataset(audio=audio, lengths=np.asarray(lengths, np.int64),
                        labels=np.array([index[g] for g in genres], np.int32), names=tuple(names),
                        class_names=tuple(class_names), sample_rate=int(sample_rate), root=root)
