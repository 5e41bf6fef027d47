"""The decoded-audio cache of a folder: one entry per (folder, sample rate), replaced when the folder changes.

An entry is two files under data.cache_dir():

    folder-<key>.audio.npy   int16 [total samples], every usable song end to end (memory-mapped when read)
    folder-<key>.meta.npz    version, fingerprint, root, audio_file, offsets, lengths, labels, names,
                             class_names, sample_rate, skipped_names, skipped_why

The key is the folder's real path and the sample rate, so a folder that changed replaces its entry (never
one entry per state of it); the meta file holds a fingerprint of CACHE_VERSION, the rate and every song's
(relative path, size, mtime): adding, removing or touching a file rebuilds the entry. Files are replaced
by atomic renames, the audio first, then the meta file naming the audio file (inode, size, mtime) it
belongs to, so a reader sees a matching pair or rebuilds. An entry that does not load or does not match
is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import numpy as np

from crnn_jax.data import dataset as data
from crnn_jax.errors import one_line
from crnn_jax.data.log import say

CACHE_VERSION = 2  # bump when decoding or the layout changes, so old caches are not reused (2: songs end to end)


class Entry(NamedTuple):
    """Where a folder's entry lives and which state of the folder it must hold."""

    path: str  # <cache_dir>/folder-<key>: the entry's files are path + ".audio.npy" / ".meta.npz"
    fingerprint: str  # hex sha256 of (CACHE_VERSION, rate, [(song, size, mtime_ns)])
    root: str  # the genre root the song names are relative to
    n_bytes: int  # the songs' file sizes added up (for messages)


def entry(groot: str, songs: list[str], sample_rate: int, cache: str = "") -> Entry:
    """The cache entry of songs "<genre>/<path>" below `groot` decoded at `sample_rate` Hz (stats each file)."""
    stats = [os.stat(os.path.join(groot, s)) for s in songs]
    fingerprint = hashlib.sha256(repr((CACHE_VERSION, int(sample_rate), [(s, st.st_size, st.st_mtime_ns)
                                                                         for s, st in zip(songs, stats)])).encode())
    # The name says which folder at which rate; the folder's state is the fingerprint stored inside.
    key = hashlib.sha256(repr((os.path.realpath(groot), int(sample_rate))).encode()).hexdigest()[:20]
    return Entry(os.path.join(data.cache_dir(cache), f"folder-{key}"), fingerprint.hexdigest(), groot,
                 sum(st.st_size for st in stats))


def audio_tmp(e: Entry) -> str:
    """The temporary .npy a rebuild decodes into (this process's own: two builds never share one)."""
    return f"{e.path}.audio.npy.tmp{os.getpid()}"


def commit(e: Entry, tmp: str, ds: data.Dataset, skipped: list[tuple[str, str]]) -> None:
    """Make the decoded audio `tmp` (ds's audio) and ds's metadata the entry `e`: the audio renamed first,
    then the meta file naming it. A failure is a warning: ds is already open (memory-mapped) either way."""
    try:
        os.replace(tmp, f"{e.path}.audio.npy")
        st = os.stat(f"{e.path}.audio.npy")
        data.save_npz_atomic(
            f"{e.path}.meta.npz", version=np.array(CACHE_VERSION), fingerprint=np.array(e.fingerprint),
            root=np.array(e.root), audio_file=np.array([st.st_ino, st.st_size, st.st_mtime_ns], np.int64),
            offsets=ds.offsets, lengths=ds.lengths, labels=ds.labels, names=np.array(ds.names),
            class_names=np.array(ds.class_names), sample_rate=np.array(ds.sample_rate),
            skipped_names=np.array([n for n, _ in skipped], str), skipped_why=np.array([w for _, w in skipped], str))
    except OSError as err:
        say(f"warning: could not write the cache {e.path} ({one_line(err)})")


def read(e: Entry, songs: list[str], sample_rate: int) -> tuple[data.Dataset, list[tuple[str, str]]] | None:
    """The cached Dataset and skipped-file notes [(song, why)] if entry `e` loads, is of the folder's
    current state and matches `songs`; else None (the caller rebuilds it in place). The audio is
    memory-mapped read only: pages are read when sliced."""
    path = e.path
    if not os.path.exists(f"{path}.meta.npz"):
        return None
    try:
        # Our own file handle: np.load leaks the one it opens when the zip is damaged.
        with open(f"{path}.meta.npz", "rb") as f, np.load(f, allow_pickle=False) as z:
            if "version" not in z or int(z["version"]) != CACHE_VERSION or str(z["fingerprint"]) != e.fingerprint:
                say(f"the folder changed since it was cached; rebuilding {path}")
                return None
            lengths, offsets, labels = z["lengths"], z["offsets"], z["labels"]
            names, classes = tuple(z["names"].tolist()), tuple(z["class_names"].tolist())
            rate, audio_file = int(z["sample_rate"]), z["audio_file"].tolist()
            skipped = list(zip(z["skipped_names"].tolist(), z["skipped_why"].tolist()))
        st = os.stat(f"{path}.audio.npy")
        if audio_file != [st.st_ino, st.st_size, st.st_mtime_ns]:  # another write's audio, or a hand edit
            raise ValueError("its audio file is not the one its metadata was written for")
        audio = np.load(f"{path}.audio.npy", mmap_mode="r")  # [total] int16; a short file raises
        n = len(names)
        skipped_names = {s for s, _ in skipped}
        ok = (audio.dtype == np.int16 and audio.ndim == 1 and n == len(lengths) == len(labels) == len(offsets)
              and rate == sample_rate and list(names) == sorted(names) and n + len(skipped) == len(songs)
              and set(names) | skipped_names == set(songs) and lengths.min() >= 1 and offsets.min() >= 0
              and (offsets + lengths).max() <= audio.shape[0]
              and classes == tuple(sorted({s.split("/", 1)[0] for s in names}))
              and np.array_equal(labels, [classes.index(s.split("/", 1)[0]) for s in names]))
        if not ok:  # a file from another version, a hand edit...
            raise ValueError("its contents do not match the folder")
    except Exception as err:  # truncated, corrupt, stale: rebuild
        say(f"warning: cache {path} is unusable ({one_line(err)}); rebuilding it")
        return None
    ds = data.Dataset(audio=audio, lengths=lengths.astype(np.int64), labels=labels.astype(np.int32), names=names,
                      class_names=classes, sample_rate=sample_rate, offsets=offsets.astype(np.int64))
    return ds, skipped
