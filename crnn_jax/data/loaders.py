"""Real audio in: --data (a folder of genre sub-folders, or TensorFlow Datasets' GTZAN) -> Dataset + split.

    python -m crnn_jax.train --data /path/to/genres                  # <genres>/<genre>/*.wav|flac|mp3|m4a|...
    python -m crnn_jax.train --data /path/to/Data --split fault-filtered
    python -m crnn_jax.train --data tfds:gtzan[@/path/to/tfds_data_dir]

The entry points; the work is done by

    folders.py   the one folder walk (also predict's), the genre root of a library, load_folder
    cache.py     the decoded-audio cache entry of a folder: fingerprint, read, atomic write
    ingest.py    decoding a list of files into one int16 array on every core (Config.workers)
    log.py       their messages on stderr ("data: ...", above a progress bar)
    decode.py    one file, block by block: mono, resampled, validated
    tfds.py      TensorFlow Datasets' GTZAN
    splits.py    the split by song (--split)

Every file is averaged to mono and resampled to cfg.sample_rate. A file that does not decode, is
truncated, empty, silent or holds NaN/inf (GTZAN's jazz.00054 is one) is skipped with a warning; bad
folders are one-line DataErrors. The data folder is never written.
"""

from __future__ import annotations

import numpy as np

from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data import folders
from crnn_jax.data import splits
from crnn_jax.data import tfds


def load(cfg) -> tuple[data.Dataset, dict[str, np.ndarray]]:
    """cfg.data (a folder or "tfds:gtzan[@data_dir]") -> (Dataset at cfg.sample_rate, split by cfg.split).

    The split is {"train", "valid", "test"}: sorted int64 song indices (see splits.make_split).
    """
    ds = load_dataset(cfg)
    return ds, splits.make_split(cfg, ds)


def load_dataset(cfg) -> data.Dataset:
    """cfg.data (a folder or "tfds:gtzan[@data_dir]") -> every usable song of it, at cfg.sample_rate Hz.

    A folder is read from the cache under cfg.cache_dir or decoded into it by cfg.workers processes."""
    if cfg.data.startswith("tfds:"):
        return tfds.load_tfds(cfg.data, sample_rate=cfg.sample_rate, cache=cfg.cache_dir)
    return folders.load_folder(cfg.data, sample_rate=cfg.sample_rate, cache=cfg.cache_dir, workers=cfg.workers)


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """Decode an audio file -> float32 [samples] mono at `sample_rate` Hz, in [-1, 1] for PCM files.

    Channels are averaged; the file's rate is converted with a polyphase filter (up/down from the gcd),
    block by block (decode.blocks: the same samples as one resample_poly call on the whole file).
    Raises DataError naming the file when it does not decode, is truncated, has no samples, holds NaN or
    infinite samples, or is silent (every sample 0).
    """
    return np.concatenate(list(decode.blocks(path, sample_rate)))
