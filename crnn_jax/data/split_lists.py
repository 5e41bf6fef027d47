"""Split lists: the song names of a split-list file matched to a collection's songs, the user's list folder
(`--split /a/folder`: train.txt, test.txt [, valid.txt]) and the fault-filtered GTZAN lists shipped in
crnn_jax/data/lists (Kereliuk, Sturm & Larsen's artist-filtered split, 443/197/290 songs).

A list line matches a song by genre and file stem: the extension (.au/.wav/...) and any leading layout folders
("genres/", "Data/genres_original/") are ignored, and so is case. data.splits chooses among the split forms.
"""

from __future__ import annotations

import importlib.resources
import os
import re

import numpy as np

from crnn_jax.data import dataset as data
from crnn_jax.data.dataset import DataError
from crnn_jax.data.decode import AUDIO_EXTS  # the extensions crnn_jax reads
from crnn_jax.data.log import say

PARTS = ("train", "valid", "test")
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
# GTZAN's own file names: <genre>/<genre>.000NN (100 per genre).
GTZAN_NAME = re.compile(rf"^({'|'.join(GTZAN_GENRES)})/\1\.000\d\d$")
# Listed songs that may be absent (e.g. a few bad files skipped by the loader) before the data is
# judged "not GTZAN"; a data folder holding only GTZAN names may be any subset (see fault_filtered).
FEW_MISSING = 10


# --- song names ------------------------------------------------------------------------------------------
def song_key(path: str) -> tuple[str, ...]:
    """A song path -> its matching key: lower-case path components, audio extension dropped from the last.

    "genres/Blues/blues.00012.au" -> ("genres", "blues", "blues.00012"); a list line matches a song when the
    song's key is a suffix of the line's key (so layout prefixes do not matter).
    """
    parts = [p for p in path.strip().replace("\\", "/").lower().split("/") if p not in ("", ".")]
    if parts:
        stem, ext = os.path.splitext(parts[-1])
        if ext in AUDIO_EXTS:  # only audio extensions: "blues.00012" must keep its ".00012"
            parts[-1] = stem
    return tuple(parts)


def _index(ds: data.Dataset) -> dict[tuple[str, ...], int]:
    index: dict[tuple[str, ...], int] = {}
    for i, name in enumerate(ds.names):
        key = song_key(name)
        if key in index:
            raise DataError(f"{ds.names[index[key]]} and {name} are one song for a split list (same name, "
                            f"different extension); keep one of them")
        index[key] = i
    return index


def _lookup(index: dict[tuple[str, ...], int], line: str) -> int | None:
    key = song_key(line)
    for start in range(len(key)):  # longest suffix first: "genres/blues/x" tries itself, then "blues/x", ...
        i = index.get(key[start:])
        if i is not None:
            return i
    return None


# --- list files ------------------------------------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    """A split list's text -> its song paths (blank lines and lines starting with '#' skipped)."""
    return [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def filtered_lists() -> dict[str, list[str]]:
    """The fault-filtered GTZAN split shipped with the package -> {"train", "valid", "test"}: song paths."""
    root = importlib.resources.files("crnn_jax.data").joinpath("lists")
    return {k: parse_list(root.joinpath(f"{k}_filtered.txt").read_text()) for k in PARTS}


def read_list_folder(folder: str) -> dict[str, tuple[str, list[str]]]:
    """A split-list folder -> {part: (list file path, song paths)}; train and test are required.

    Each part is read from `<part>.txt`, or `<part>_filtered.txt` (the shipped lists' names).
    """
    out = {}
    for k in PARTS:
        for name in (f"{k}.txt", f"{k}_filtered.txt"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8") as f:
                        out[k] = (path, parse_list(f.read()))
                except (OSError, UnicodeDecodeError) as e:
                    raise DataError(f"--split {folder}: cannot read {name} ({e})") from None
                break
    missing = [f"{k}.txt" for k in ("train", "test") if k not in out]
    if missing:
        raise DataError(f"--split {folder}: no {' or '.join(missing)} in it (a split-list folder holds "
                        f"train.txt, test.txt [, valid.txt], one song path per line)")
    return out


def from_lists(ds: data.Dataset, lists: dict[str, tuple[str, list[str]]]) -> dict[str, np.ndarray]:
    """Split by user lists {part: (list file, song paths)}: every listed song must be in the data."""
    index, where = _index(ds), {}
    parts: dict[str, list[int]] = {k: [] for k in PARTS}
    for k, (path, lines) in lists.items():
        for line in lines:
            i = _lookup(index, line)
            if i is None:
                raise DataError(f"{path} names {line}, which is not in the data ({len(ds)} songs, e.g. "
                                f"{ds.names[0]})")
            if i in where and where[i][0] != k:
                raise DataError(f"{line} is listed in both {where[i][1]} and {path}")
            where[i] = (k, path)
            parts[k].append(i)
    left_out = len(ds) - len(where)
    if left_out:
        say(f"split lists: {left_out} of {len(ds)} songs are in no list and are left out")
    return {k: np.array(v, np.int64) for k, v in parts.items()}


def fault_filtered(ds: data.Dataset, lists: dict[str, list[str]], *, where: str) -> dict[str, np.ndarray]:
    """The artist-filtered split on GTZAN or on a part of it.

    Rule: songs the lists do not name (the 70 faulty clips, or anything else) are left out. Listed songs
    missing from the data are fine when they are few (<= FEW_MISSING, e.g. files the loader skipped) or
    when every song of the data carries a GTZAN file name (<genre>/<genre>.000NN): then the data is a
    subset of GTZAN and the lists' parts, restricted to it, are still artist-filtered. Otherwise the
    data is some other collection and the split is refused.
    """
    index = _index(ds)
    parts: dict[str, list[int]] = {k: [] for k in PARTS}
    missing = []
    for k in PARTS:
        for line in lists[k]:
            i = _lookup(index, line)
            if i is None:
                missing.append(line)
            else:
                parts[k].append(i)
    n_listed = sum(len(v) for v in lists.values())
    gtzan_only = all(GTZAN_NAME.match("/".join(song_key(n)[-2:])) for n in ds.names)
    if len(missing) == n_listed:
        raise DataError(f"fault-filtered split: none of the {len(ds)} songs in {where} is named like a GTZAN "
                        f"file in the lists (e.g. {lists['test'][0]}); this split needs GTZAN")
    if len(missing) > FEW_MISSING and not gtzan_only:
        raise DataError(f"fault-filtered split: {len(missing)} of {n_listed} listed songs are not in {where} "
                        f"(first: {missing[0]}); this split needs the full GTZAN")
    if missing:
        say(f"fault-filtered split: {len(missing)} of {n_listed} listed songs are not in the data (first: "
             f"{missing[0]}); using the {n_listed - len(missing)} that are")
    left_out = len(ds) - sum(len(v) for v in parts.values())
    if left_out:
        say(f"fault-filtered split: {left_out} of {len(ds)} songs are in no list (faulty or not GTZAN) "
             f"and are left out")
    return {k: np.array(v, np.int64) for k, v in parts.items()}
