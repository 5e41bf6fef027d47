"""Folders of audio files: the one folder walk, the genre root of a library, and a library -> Dataset.

    walk(root)              -> every file below root (hidden and __MACOSX folders skipped, MAX_DEPTH levels)
    audio_files(paths)      -> files and folders a user named -> (audio files, {kind: n} of other files)
    find_songs(path)        -> (genre root, songs "<genre>/<path>") of a library, or one-line DataErrors
    load_folder(path, ...)  -> Dataset of a library, from the cache or decoded into it (ingest.py)

A file is audio by its extension (AUDIO_EXTS, any case), unless its name starts with "." ("._x.wav" is
macOS metadata, not audio). The genre root is found by walking down from --data while it holds a single
sub-folder with audio, so `genres/<genre>/...` (the GTZAN archive) and `Data/genres_original/<genre>/...`
(the Kaggle copy) work from their parent folders too; a genre is a sub-folder of the root, its songs the
audio files under it. Nothing here writes to the folders it reads.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

from crnn_jax.data import cache as cache_lib
from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data import ingest
from crnn_jax.data import split_lists
from crnn_jax.errors import one_line
from crnn_jax.data.log import say
from crnn_jax.errors import DataError

AUDIO_EXTS = decode.AUDIO_EXTS  # the extensions decode.py reads: every folder walk takes them from here
SKIP_DIRS = ("__MACOSX",)
MAX_DEPTH = 8  # folder levels walked below a folder (bounds symlink loops)
MACOS_METADATA = "._* (macOS metadata)"


def walk(root: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every file below the folder `root` -> (folder as components below root, file name), top-down,
    each folder's files in sorted order before its sub-folders (sorted). Hidden folders (".git",
    ".Trash"), __MACOSX and folders MAX_DEPTH levels down are not entered; symlinked folders are."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel = tuple(p for p in os.path.relpath(dirpath, root).split(os.sep) if p != ".")
        keep = len(rel) < MAX_DEPTH
        dirnames[:] = sorted(d for d in dirnames if keep and not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            yield rel, name


def kind(name: str) -> str | None:
    """None for an audio file name; else what to call it when counting the others: its extension
    (lower case), "(no extension)", a hidden file's name when it has no extension (".DS_Store") or
    MACOS_METADATA ("._x.wav")."""
    ext = os.path.splitext(name)[1].lower()  # "" for ".DS_Store": a leading dot is no extension
    if name.startswith("._"):
        return MACOS_METADATA
    if name.startswith("."):
        return ext or name
    return None if ext in AUDIO_EXTS else ext or "(no extension)"


def audio_files(paths: list[str]) -> tuple[list[str], dict[str, int]]:
    """Files and folders a user named -> (audio file paths in order, {kind: n} of the other files in the
    folders, hidden files not counted: every music folder has some).

    A file argument is kept whatever its name (the user named it); a folder gives its audio files in
    walk order (paths joined onto the folder as given)."""
    files, skipped = [], {}
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        for rel, name in walk(path):
            k = kind(name)
            if k is None:
                files.append(os.path.join(path, *rel, name))
            elif not name.startswith("."):
                skipped[k] = skipped.get(k, 0) + 1
    return files, skipped


def load_folder(path: str, *, sample_rate: int, cache: str = "", workers: int = 0) -> data.Dataset:
    """A folder of genre sub-folders -> Dataset: int16 songs end to end at `sample_rate` Hz, names
    "<genre>/<path below the genre folder>", class_names the sorted genres with usable songs.

    Read from the cache under data.cache_dir(cache) when it holds this folder's current state, else
    decoded into it by `workers` processes (0: automatic, one per CPU core for a folder big enough; see
    ingest.n_workers). Bad files are skipped with a warning each; bad folders raise one-line DataErrors."""
    groot, songs = find_songs(path)
    entry = cache_lib.entry(groot, songs, sample_rate, cache)
    t0 = time.time()
    got = cache_lib.read(entry, songs, sample_rate)
    if got is not None:
        ds, skipped = dataclasses.replace(got[0], root=groot), got[1]
        say(f"{len(ds)} songs, {len(ds.class_names)} genres from {groot} (cached, {time.time() - t0:.1f} s)"
            + (f"; {len(skipped)} bad file(s) were skipped (first: {skipped[0][1]})" if skipped else ""))
        return ds
    tmp = cache_lib.audio_tmp(entry)
    try:
        try:
            ds, skipped = ingest.decode_files(groot, songs, sample_rate, tmp, workers=workers,
                                              n_bytes=entry.n_bytes)
        except OSError as e:  # a read-only or full cache dir is no reason to fail: run uncached
            say(f"warning: could not write the cache {entry.path} ({one_line(e)}); decoding into "
                f"memory (set --cache-dir to a folder you can write)")
            return ingest.decode_files(groot, songs, sample_rate, None, workers=workers, n_bytes=entry.n_bytes)[0]
        cache_lib.commit(entry, tmp, ds, skipped)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ds


def find_songs(path: str) -> tuple[str, list[str]]:
    """--data `path` -> (its genre root, the sorted songs "<genre>/<path>" below it). Other files and
    audio outside any genre folder are reported (not errors); DataError for a missing folder, a file, no
    audio, fewer than 2 genres or one song in two formats."""
    if os.path.isfile(path):
        raise DataError(f"--data {path} is a file; pass the folder that holds one sub-folder per genre")
    if not os.path.isdir(path):
        raise DataError(f"--data {path}: no such folder")
    root = os.path.abspath(path)
    files, ignored = [], {}  # audio as component tuples; {(folder components, kind): n} of the rest
    for rel, name in walk(root):
        k = kind(name)
        if k is None:
            files.append(rel + (name,))
        else:
            ignored[(rel, k)] = ignored.get((rel, k), 0) + 1
    if not files:
        raise DataError(f"--data {path}: no audio files ({', '.join(AUDIO_EXTS)}) in it or its sub-folders"
                        + (f"; found only {_describe(ignored)}" if ignored else ""))
    prefix = _genre_root(files, root)
    groot = os.path.join(root, *prefix)
    below = [f[len(prefix):] for f in files if f[:len(prefix)] == prefix]  # components below the genre root
    songs, stray = sorted("/".join(f) for f in below if len(f) > 1), [f[0] for f in below if len(f) == 1]
    if _describe(ignored, prefix):
        say(f"ignored {_describe(ignored, prefix)} in {groot}")
    if stray:
        say(f"warning: ignored {len(stray)} audio file(s) directly in {groot}, outside any genre folder "
            f"(first: {stray[0]})")
    _check_unique(songs)
    return groot, songs


def _check_unique(songs: list[str]) -> None:
    """One song in two formats (x.au and x.wav) would be two songs that a split can put on both sides."""
    seen: dict[tuple[str, ...], str] = {}
    for s in songs:
        k = split_lists.song_key(s)
        if k in seen:
            raise DataError(f"{seen[k]} and {s} look like one song in two formats (same name, different "
                            f"extension); keep one of them")
        seen[k] = s


def _describe(counts: dict, prefix: tuple[str, ...] = ()) -> str:
    """{(folder, kind): n} below `prefix` -> "3 other file(s) (.DS_Store, .txt)" ('' if none)."""
    by_kind: dict[str, int] = {}
    for (rel, k), n in counts.items():
        if rel[:len(prefix)] == prefix:
            by_kind[k] = by_kind.get(k, 0) + n
    return f"{sum(by_kind.values())} other file(s) ({', '.join(sorted(by_kind))})" if by_kind else ""


def _genre_root(files: list[tuple[str, ...]], root: str) -> tuple[str, ...]:
    """The folder (as components below root) whose sub-folders are the genres: walk down while there
    is exactly one sub-folder holding audio and no audio beside it."""
    prefix: tuple[str, ...] = ()
    while True:
        under = [f[len(prefix):] for f in files if f[:len(prefix)] == prefix]
        subs = sorted({f[0] for f in under if len(f) >= 2})
        if len(subs) >= 2:
            return prefix
        if len(subs) == 1 and all(len(f) >= 2 for f in under):
            prefix += (subs[0],)
            continue
        if subs or prefix:  # one sub-folder with audio beside it, or we walked down into the only genre
            genre = subs[0] if subs else prefix[-1]
            what = f"audio of only one genre ({genre})"
        else:
            what = "audio files but no genre sub-folders"
        raise DataError(f"--data {root} holds {what}; it needs at least 2 genres, one sub-folder each "
                        f"(<data>/<genre>/<song>.wav)")
