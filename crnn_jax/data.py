"""Audio in memory, splits by song, and the pure batch sampler.

A `Dataset` is every song of a collection as int16 rows (16-bit, like the files; half the memory of
float32, so GTZAN is ~1.3 GB) with lengths, labels and names. Training never sees a file: it sees

    sample_batch(seed, step, ...) -> Batch(songs, offsets, gains)     a pure function of (seed, step)
    gather_crops(audio, batch, crop) -> int16 [batch, crop]            host-side slicing

so a run resumed at step s, or split over several devices or hosts, takes exactly the same examples in
the same order. Splits are always by song: every window of a song lands on the same side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import sys
from typing import NamedTuple

import numpy as np

from crnn_jax import synth

INT16_SCALE = 32768.0  # int16 sample -> float in [-1, 1)


class DataError(ValueError):
    """Input data that cannot be used (missing folder, unreadable file, bad split list, ...)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Songs as padded int16 rows.

    audio: [n_songs, max_samples] int16, zero-padded past each song's length.
    lengths: [n_songs] int64, samples of real audio per song (>= 1).
    labels: [n_songs] int32 in [0, len(class_names)).
    names: song ids (relative paths for files), used by split lists and reports.
    class_names: genre names, index = label.
    sample_rate: Hz.
    """

    audio: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    class_names: tuple[str, ...]
    sample_rate: int

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (self.audio.shape[0] == self.lengths.shape[0] == self.labels.shape[0] == n):
            raise ValueError(f"Dataset: {n} names but audio {self.audio.shape}, lengths {self.lengths.shape}, "
                             f"labels {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.names)

    def min_length(self, samples: int) -> "Dataset":
        """Zero-pad every row to at least `samples` so any crop of that size fits (lengths unchanged)."""
        if self.audio.shape[1] >= samples:
            return self
        audio = np.pad(self.audio, ((0, 0), (0, samples - self.audio.shape[1])))  # [n_songs, samples]
        return dataclasses.replace(self, audio=audio)


def cache_dir(cfg_cache_dir: str = "") -> str:
    """Where decoded audio is cached: the config's cache_dir, $CRNN_JAX_CACHE or ~/.cache/crnn_jax."""
    return cfg_cache_dir or os.environ.get("CRNN_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                             "crnn_jax")


def _write_atomic(path: str, tmp: str, write) -> None:
    """write(tmp), then rename it to path: a reader sees the old file or the complete new one, never a
    partial one, and a failed write (disk full, interrupted) leaves neither a partial file nor the temporary."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
    """np.savez to `path`, atomically (see _write_atomic)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _write_atomic(path, f"{path}.tmp{os.getpid()}", write)


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """np.save to `path`, atomically (see _write_atomic)."""
    # The temporary ends in .npy, so np.save keeps its name.
    _write_atomic(path, f"{path}.tmp{os.getpid()}.npy", lambda tmp: np.save(tmp, array))


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
        audio = np.load(f"{path}.audio.npy", mmap_mode="r")  # [n, n_samples] int16, paged in on use
        if audio.shape != (n, n_samples) or audio.dtype != np.int16 or labels.shape != (n,):
            raise ValueError("shape mismatch")
    except Exception:  # missing, truncated or stale: rebuild
        x, labels = synth.generate(clips_per_class, seconds=seconds, sample_rate=sample_rate, seed=seed)
        audio = to_int16(x)
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

    Every class keeps at least one training song. -> {"train", "valid", "test"}: sorted int64 index arrays.
    """
    rng = np.random.default_rng([seed, 7])
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx)))))
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


def gather_crops(audio: np.ndarray, songs: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
    """Slice crops: audio [n_songs, samples] int16 -> [len(songs), crop] int16 (rows padded beforehand)."""
    cols = offsets[:, None] + np.arange(crop)[None, :]  # [batch, crop] sample indices
    return audio[songs[:, None], cols]


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
