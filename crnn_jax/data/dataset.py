"""Audio in memory, splits by song, and the pure batch sampler.

A `Dataset` is every song of a collection end to end in one int16 array (16-bit, like the files; half
the memory of float32, so GTZAN is ~1.3 GB; nothing is padded to the longest song) with per-song offsets,
lengths, labels and names. Training never sees a file: it sees

    sample_batch(seed, step, ...) -> Batch(songs, offsets, gains)     a pure function of (seed, step)
    Dataset.crops(songs, offsets, crop) -> int16 [batch, crop]        host-side slicing (gather_crops)

so a run resumed at step s, or split over several devices or hosts, takes exactly the same examples in
the same order. Splits are always by song: every window of a song lands on the same side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import os
import sys
from typing import NamedTuple

import numpy as np

from crnn_jax import files
from crnn_jax.data import synth
from crnn_jax.errors import DataError  # noqa: F401  (raised here and imported from here by older code)

INT16_SCALE = 32768.0  # int16 sample -> float in [-1, 1)




@dataclasses.dataclass(frozen=True)
class Dataset:
    """Every song end to end in one int16 array: memory follows the audio, whatever the spread of lengths.

    audio: [total_samples] int16, song i is audio[offsets[i] : offsets[i] + lengths[i]] (often a read-only
        memory map of the cache: pages are read when sliced).
    lengths: [n_songs] int64, samples of each song (>= 1).
    labels: [n_songs] int32 in [0, len(class_names)).
    names: song ids (relative paths for files), used by split lists and reports.
    class_names: genre names, index = label.
    sample_rate: Hz.
    offsets: [n_songs] int64, first sample of each song in `audio`; None = songs back to back in order.
    root: the folder the names are relative to (a genre root "<root>/<genre>/..."), "" when the songs are
        not files (the synthetic set, TFDS); grouped splits read each song's tags from there.

    Given 2-D audio [n_songs, samples] (rows zero-padded past each length, the older layout), the rows
    are cut to their lengths and laid end to end. A crop never reads past its song: samples after a
    song's end read as zeros (see crops), so no song is padded, not even to one crop.
    """

    audio: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    class_names: tuple[str, ...]
    sample_rate: int
    offsets: np.ndarray | None = None
    root: str = ""

    def __post_init__(self) -> None:
        n = len(self.names)
        lengths = np.asarray(self.lengths, np.int64)
        if not (lengths.shape == (n,) and np.shape(self.labels) == (n,)):
            raise ValueError(f"Dataset: {n} names but lengths {lengths.shape}, labels {np.shape(self.labels)}")
        audio, offsets = self.audio, self.offsets
        if audio.ndim == 2:  # padded rows -> end to end
            if audio.shape[0] != n or (n and lengths.max() > audio.shape[1]):
                raise ValueError(f"Dataset: rows {audio.shape} do not hold {n} songs of lengths up to "
                                 f"{lengths.max() if n else 0}")
            audio = np.concatenate([audio[i, :lengths[i]] for i in range(n)]) if n else audio[:0, 0]
            offsets = None
        if offsets is None:
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
        offsets = np.asarray(offsets, np.int64)
        if audio.ndim != 1 or offsets.shape != (n,) or (n and (offsets.min() < 0 or lengths.min() < 0
                                                               or (offsets + lengths).max() > audio.shape[0])):
            raise ValueError(f"Dataset: audio {audio.shape} does not hold {n} songs at offsets {offsets[:4]}... "
                             f"of lengths {lengths[:4]}...")
        object.__setattr__(self, "audio", audio)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "offsets", offsets)

    def __len__(self) -> int:
        return len(self.names)

    def song(self, i: int) -> np.ndarray:
        """Song i's samples: int16 [lengths[i]] (a view, no copy)."""
        return self.audio[self.offsets[i]:self.offsets[i] + self.lengths[i]]

    def crops(self, songs: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
        """Crops of `crop` samples starting `offsets` [n] samples into songs `songs` [n] -> int16 [n, crop];
        past a song's end a crop reads zeros (a song shorter than a crop, crop at offset 0)."""
        return gather_crops(self.audio, songs, offsets, crop, starts=self.offsets, lengths=self.lengths)


def cache_dir(cfg_cache_dir: str = "") -> str:
    """Where decoded audio is cached: the config's cache_dir, $CRNN_JAX_CACHE or ~/.cache/crnn_jax."""
    return cfg_cache_dir or os.environ.get("CRNN_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                             "crnn_jax")



def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    """np.savez to `path`, atomically (files.atomic)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with files.atomic(path, "wb") as f:
        np.savez(f, **arrays)


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """np.save to `path`, atomically (files.atomic; np.save to an open file adds no suffix)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with files.atomic(path, "wb") as f:
        np.save(f, array)


class SampleSink:
    """Where decoded songs go, sample by sample: a new .npy file of `total` int16 samples, preallocated and
    written in place with os.pwrite (the pages sit in the page cache, not in the writer's memory), or, with
    path None, an array in memory. Used by loaders to decode a library without holding it twice."""

    def __init__(self, path: str | None, total: int):
        self.path, self.fd = path, None
        if path is None:
            self.array = np.zeros(total, np.int16)  # calloc: pages never written cost nothing
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # Preallocated (sparse: holes until written), header written by numpy; then written in place.
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=(max(total, 1),))
        self.start = header.offset
        del header
        self.fd = os.open(path, os.O_RDWR)

    def write(self, pos: int, x: np.ndarray) -> None:
        """int16 [n] at sample `pos`."""
        if self.fd is None:
            self.array[pos:pos + len(x)] = x
            return
        buf = memoryview(np.ascontiguousarray(x, np.int16)).cast("B")
        done = 0
        while done < len(buf):  # pwrite may write less than asked (signals, some file systems)
            done += os.pwrite(self.fd, buf[done:], self.start + 2 * pos + done)

    def move(self, src: int, dst: int, n: int, chunk: int = 1 << 22) -> None:
        """Samples [src, src + n) to [dst, dst + n), dst < src, in chunks (closes gaps left by skipped files)."""
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            if self.fd is None:
                self.array[dst + i:dst + i + m] = self.array[src + i:src + i + m]
            else:
                self.write(dst + i, np.frombuffer(os.pread(self.fd, 2 * m, self.start + 2 * (src + i)), np.int16))

    def finish(self, total: int) -> np.ndarray:
        """Keep the first `total` samples -> int16 [total] (the file read back memory-mapped, read only)."""
        if self.fd is None:
            return self.array[:total]
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False, "shape": (total,)})
        if len(header.getvalue()) == self.start:  # the header of a shorter shape fits the same bytes: shrink
            os.pwrite(self.fd, header.getvalue(), 0)
            os.ftruncate(self.fd, self.start + 2 * total)
        os.fsync(self.fd)
        self.close()
        return np.load(self.path, mmap_mode="r")[:total]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def synthetic(*, clips_per_class: int, seconds: float, sample_rate: int, seed: int, cache: str = "") -> Dataset:
    """The built-in ten-class synthetic set (see synth.py), cached as .npy files after the first build.

    Clips are a pure function of (seed, label, index), so the cache is only a speed-up: a file that does
    not load or does not match is rebuilt, never trusted. A cached set's audio is memory-mapped (read
    only): a process that streams crops reads only the pages of the songs it slices.
    """
    # Keyed on the generator's own source too: editing synth.py can never serve a stale cache.
    source = hashlib.sha256(inspect.getsource(synth).encode()).hexdigest()
    key = hashlib.sha256(repr((source, clips_per_class, seconds, sample_rate, seed)).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(cache), f"synthetic-{key}")
    n_samples = int(round(seconds * sample_rate))
    n = clips_per_class * len(synth.CLASS_NAMES)
    try:
        labels = np.load(f"{path}.labels.npy")
        audio = np.load(f"{path}.audio.npy", mmap_mode="r")  # [n * n_samples] int16, paged in on use
        if audio.shape != (n * n_samples,) or audio.dtype != np.int16 or labels.shape != (n,):
            raise ValueError("shape mismatch")
    except Exception:  # missing, truncated or stale: rebuild
        x, labels = synth.generate(clips_per_class, seconds=seconds, sample_rate=sample_rate, seed=seed)
        audio = to_int16(x).reshape(-1)  # [n * n_samples]: the songs end to end
        try:  # labels first: the audio file's presence marks a complete pair (each is written atomically)
            save_npy_atomic(f"{path}.labels.npy", labels)
            save_npy_atomic(f"{path}.audio.npy", audio)
        except OSError as e:  # a read-only home is no reason to fail: run uncached
            print(f"data: warning: could not write the cache {path} ({e.strerror or e}); running uncached "
                  f"(set --cache-dir to a folder you can write)", file=sys.stderr)
    names = tuple(f"synthetic/{synth.CLASS_NAMES[l]}/{i:05d}" for i, l in enumerate(labels))
    return Dataset(audio=audio, lengths=np.full(n, n_samples, np.int64), labels=labels.astype(np.int32),
                   names=names, class_names=tuple(synth.CLASS_NAMES), sample_rate=sample_rate)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 (clipped)."""
    return np.clip(np.round(np.asarray(x, np.float32) * INT16_SCALE), -32768, 32767).astype(np.int16)


# --- splits by song ------------------------------------------------------------------------------------
def random_split(labels: np.ndarray, *, test_fraction: float, valid_fraction: float, seed: int
                 ) -> dict[str, np.ndarray]:
    """Stratified random split of song indices: per class, round(share * n) songs to test and valid.

    Every class keeps at least one training song; test_fraction 0 holds out no test song (a model tested on
    other data). -> {"train", "valid", "test"}: sorted int64 index arrays.
    """
    rng = np.random.default_rng([seed, 7])
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx))))) if test_fraction > 0 else 0
        n_valid = min(len(idx) - 1 - n_test, int(round(valid_fraction * len(idx))))
        parts["test"] += idx[:n_test].tolist()
        parts["valid"] += idx[n_test:n_test + n_valid].tolist()
        parts["train"] += idx[n_test + n_valid:].tolist()
    return {k: np.array(sorted(v), np.int64) for k, v in parts.items()}


# --- the sampler ---------------------------------------------------------------------------------------
class Batch(NamedTuple):
    """One global batch as indices: songs [B] (rows of the Dataset), offsets [B] (samples), gains [B]
    (linear factors applied to the crop inside the step)."""

    songs: np.ndarray
    offsets: np.ndarray
    gains: np.ndarray


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps in which every training song is drawn once (the last partial batch wraps around)."""
    return max(1, -(-n_train // batch_size))


def sample_batch(seed: int, step: int, *, train_songs: np.ndarray, lengths: np.ndarray, batch_size: int,
                 crop: int, gain_db: float) -> Batch:
    """The global batch of training step `step`: a pure function of (seed, step).

    Songs: each epoch is a fresh permutation of `train_songs` (seeded by (seed, epoch)), cut into
    consecutive batches; offsets are uniform over each song's valid crop starts; gains uniform in
    +-gain_db dB. crop: samples. -> Batch of [batch_size] arrays.
    """
    n = len(train_songs)
    if n == 0:
        raise DataError("the training split is empty")
    spe = steps_per_epoch(n, batch_size)
    epoch, pos = divmod(step, spe)
    perm = np.random.default_rng([seed, 1, epoch]).permutation(n)
    songs = train_songs[perm[(pos * batch_size + np.arange(batch_size)) % n]]
    rng = np.random.default_rng([seed, 2, step])
    room = np.maximum(lengths[songs] - crop, 0) + 1  # valid start positions per song
    offsets = np.floor(rng.random(batch_size) * room).astype(np.int64)
    gains = (10.0 ** (rng.uniform(-gain_db, gain_db, batch_size) / 20.0)).astype(np.float32)
    return Batch(songs.astype(np.int64), offsets, gains)


def gather_crops(audio: np.ndarray, songs: np.ndarray, offsets: np.ndarray, crop: int, *,
                 starts: np.ndarray | None = None, lengths: np.ndarray | None = None) -> np.ndarray:
    """The one host-side slicer: crops of `crop` samples -> int16 [len(songs), crop].

    audio: [total] int16 with songs at `starts` of `lengths` samples (a Dataset's audio, offsets and lengths),
    or rows [n_songs, samples] (starts and lengths then default to the rows). Crop j is the samples
    offsets[j] .. offsets[j] + crop - 1 of song songs[j]; those past the song's end are zeros.
    """
    if audio.ndim == 2:
        if starts is not None or lengths is not None:
            raise ValueError("gather_crops: starts and lengths go with 1-D audio, not rows")
        starts = np.arange(audio.shape[0], dtype=np.int64) * audio.shape[1]
        lengths = np.full(audio.shape[0], audio.shape[1], np.int64)
        audio = audio.reshape(-1)  # a view of C-contiguous rows
    elif starts is None or lengths is None:
        raise ValueError("gather_crops: 1-D audio needs the songs' starts and lengths")
    out = np.zeros((len(songs), crop), np.int16)  # [n, crop]
    begin = np.asarray(starts)[songs] + np.asarray(offsets)  # [n] first sample of each crop in audio
    take = np.clip(np.asarray(lengths)[songs] - np.asarray(offsets), 0, crop)  # [n] samples inside the song
    for j in range(len(out)):  # contiguous copies: only the pages of a memory map that crops touch are read
        out[j, :take[j]] = audio[begin[j]:begin[j] + take[j]]
    return out


def eval_windows(lengths: np.ndarray, songs: np.ndarray, *, crop: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of every song in `songs`: windows start at 0, hop, 2*hop, ... while they fit, and a
    song shorter than one crop gets one (zero-padded) window; a tail longer than hop/2 gets a final
    window aligned to the song's end, so no audio past the last full hop is ignored.

    -> (window_song [W] int64, window_offset [W] int64), grouped by song in the order given.
    """
    ws, wo = [], []
    for s in songs:
        length = int(lengths[s])
        starts = list(range(0, max(length - crop, 0) + 1, hop))
        if length > crop and length - (starts[-1] + crop) > hop // 2:
            starts.append(length - crop)
        ws += [s] * len(starts)
        wo += starts
    return np.array(ws, np.int64), np.array(wo, np.int64)
