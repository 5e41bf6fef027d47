"""Song groups (artist, album, folder) and splits that keep each group whole on one side (--group-by).

    song_group(path, by, name) -> str | None     one song: from its tags, else its folder, else None
    groups_of(ds, by) -> tuple[str, ...]          every song of a Dataset, or one DataError line
    grouped_random_split / grouped_kfold_split    {"train", "valid", "test"} song indices, whole groups

Tags are read with mutagen: ID3 (MP3, AIFF, WAV), Vorbis comments (FLAC, Ogg Vorbis/Opus), MP4 atoms
(M4A), through mutagen's "easy" key names, and ID3 frames directly where mutagen has no easy view (WAV,
AIFF). A song without the tag falls back to its folder when it sits in a sub-folder of its genre folder
("<genre>/<Artist>/song.mp3", "<genre>/<Artist>/<Album>/song.mp3"). Keys are normalised (Unicode NFKC,
runs of white space to one space, case-folded) so "The Beatles" and "the  beatles " are one artist.

The assignment of groups to parts is a greedy after scikit-learn's StratifiedGroupKFold (assign_groups),
written in numpy: scikit-learn stays a test-only dependency (it is the reference in tests/test_groups.py)
and the split is a function of --seed alone, not of a library version's use of its RNG.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence

import mutagen
import numpy as np
from mutagen.id3 import ID3

from crnn_jax import config_checks
from crnn_jax.config import ConfigError
from crnn_jax.data.dataset import DataError

GROUPINGS = tuple(g for g in config_checks.GROUPINGS if g)  # "" (no grouping) is not a grouping
# mutagen's easy names -> ID3 frames, for files whose ID3 tag has no easy view (WAV, AIFF).
ID3_FRAMES = {"albumartist": "TPE2", "artist": "TPE1", "album": "TALB"}
# What a song needs to have a group, for the one-line refusal.
NEEDS = {"artist": "no albumartist/artist tag", "album": "no artist and album tags",
         "folder": "no folder"}


def normalise(text: str) -> str:
    """A tag value or folder name -> its group key: NFKC (macOS file names are decomposed, tags usually
    are not), white space collapsed, case-folded. "" when nothing is left."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def read_tag(found, key: str) -> str:
    """The first non-blank value of easy key `key` ("albumartist", "artist", "album") in a mutagen tag
    object (EasyID3, VComment, EasyMP4Tags, or a raw ID3), normalised; "" when absent."""
    if found is None:
        return ""
    if isinstance(found, ID3):
        frame = found.get(ID3_FRAMES[key])
        values = list(frame.text) if frame is not None else []
    else:
        try:
            values = found.get(key) or []
        except (KeyError, ValueError, TypeError):  # a tag type that does not know the key (e.g. ASF)
            values = []
        if isinstance(values, str):
            values = [values]
    for v in values:  # several values (ID3v2.4 "A\0B", repeated Vorbis fields): the first is the primary one
        v = normalise(str(v))
        if v:
            return v
    return ""


def file_tags(path: str):
    """mutagen's easy tag object of the file at `path`, or None when it has none or mutagen does not know
    the format. Raises DataError (one line) when the file is gone."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (the data folder changed since it was loaded?); "
                        f"grouping reads each song's tags")
    try:
        f = mutagen.File(path, easy=True)
    except mutagen.MutagenError:  # a header mutagen cannot parse: the song still decodes, so it just has no tags
        return None
    return None if f is None else f.tags


def folder_group(name: str, by: str) -> str | None:
    """The group of song `name` ("<genre>/<sub/folders>/<file>") from its folders below the genre folder,
    or None when the file sits directly in its genre folder.

    artist: the first folder below the genre ("<genre>/<Artist>/..."): in "<genre>/<Artist>/<Album>/x"
        the parent is the album, and an artist's albums must stay together.
    album, folder: every folder below the genre ("artist/album"), i.e. the folder the file sits in.
    """
    dirs = [p for p in name.replace("\\", "/").split("/")[1:-1] if p not in ("", ".")]
    if not dirs:
        return None
    key = normalise(dirs[0]) if by == "artist" else "/".join(normalise(d) for d in dirs)
    return key or None


def song_group(path: str, by: str, name: str) -> str | None:
    """The normalised group of one song: its file `path`, `by` in GROUPINGS, `name` its path below the
    genre root ("<genre>/..."). None when neither its tags nor its folders give one.

    artist: the albumartist tag, else artist. albumartist wins because it is the one name per album:
        "A feat. B" tracks carry artist "A feat. B" but albumartist "A", and must group with A's other
        songs. A compilation's "Various Artists" makes one coarse group: coarser never leaks an artist.
    album: "<artist>/<album>" from the tags (laid out like the folder key "<Artist>/<Album>", so tagged
        and untagged songs of one album agree); both tags are needed.
    folder: the folder path below the genre folder; tags are not read.
    """
    if by not in GROUPINGS:
        raise ValueError(f"by={by!r} is not one of {GROUPINGS}")
    if by != "folder":
        found = file_tags(path)
        artist = read_tag(found, "albumartist") or read_tag(found, "artist")
        if by == "artist" and artist:
            return artist
        album = read_tag(found, "album") if by == "album" else ""
        if artist and album:
            return f"{artist}/{album}"
    return folder_group(name, by)


def groups_of(ds, by: str) -> tuple[str, ...]:
    """The group of every song of `ds` (a Dataset with `root` and `names`) -> [n_songs] group keys.

    Raises ConfigError for an unknown `by`; DataError (one line) when the songs are not files (ds.root ==
    "": the synthetic set, TFDS) or when some songs have no group, naming how many, the first, what to do.
    """
    if by not in GROUPINGS:
        raise ConfigError(f"--group-by {by!r} is not one of: {', '.join(GROUPINGS)}")
    if not ds.root:
        raise DataError(f"--group-by {by}: these songs are not files in a folder (synthetic or TFDS data), so "
                        f"they have no {by}s; pass --data FOLDER, or leave --group-by out")
    groups = [song_group(os.path.join(ds.root, n), by, n) for n in ds.names]
    missing = [n for n, g in zip(ds.names, groups) if g is None]
    if missing:
        fix = ("lay them out as <genre>/<folder>/<song>" if by == "folder" else
               f"tag them ({'albumartist or artist' if by == 'artist' else 'artist and album'}), or lay them "
               f"out as <genre>/<{'artist' if by == 'artist' else 'artist>/<album'}>/<song>")
        raise DataError(f"--group-by {by}: {len(missing)} of {len(groups)} songs have {NEEDS[by]} and sit "
                        f"directly in their genre folder (first: {os.path.join(ds.root, missing[0])}); {fix}")
    return tuple(groups)


# --- splits by whole groups -----------------------------------------------------------------------------
def assign_groups(counts: np.ndarray, shares, order: np.ndarray) -> np.ndarray:
    """Greedy stratified assignment of whole groups to bins: scikit-learn's StratifiedGroupKFold, with
    bins of unequal shares allowed.

    counts: [n_groups, n_genres] songs of each genre in each group; shares: [n_bins] the share of every
    genre's songs each bin should get; order: [n_groups] a permutation, the (seeded, random) order groups
    are taken in before a stable sort by the std of their genre counts (large one-genre groups first:
    they are the hardest to place). Each group goes to the bin that keeps the fill ratios most even:
    the mean over genres of the std over bins of count[b, c] / (total[c] * w[b]), w = shares / max(shares);
    a bin scoring np.isclose to the best so far wins when it holds fewer songs for its share. With equal
    shares this is StratifiedGroupKFold's scan, float for float (tests/test_groups.py checks it).
    -> [n_groups] bin index of each group.
    """
    counts = counts[:, counts.sum(0) > 0]  # a genre none of these groups holds has no ratio to balance
    w = np.asarray(shares, np.float64) / np.max(shares)
    denom = counts.sum(0)[None, :] * w[:, None]  # [bins, genres]; w = 1 exactly for equal shares
    fill = np.zeros(denom.shape)
    bins = np.zeros(len(counts), np.int64)
    eye = np.eye(len(w))[:, :, None]  # [candidate, bins, 1]
    order = np.asarray(order)
    for g in order[np.argsort(-counts[order].std(axis=1), kind="stable")]:
        trial = (fill[None] + eye * counts[g][None, None, :]) / denom[None]  # [candidate, bins, genres]
        score = np.std(trial, axis=1).mean(axis=1)
        best, best_score, best_fill = 0, np.inf, np.inf
        for b in range(len(w)):  # a sequential scan, as the reference's: ties are judged against the best so far
            b_fill = fill[b].sum() / w[b]
            if score[b] < best_score or (np.isclose(score[b], best_score) and b_fill < best_fill):
                best, best_score, best_fill = b, score[b], b_fill
        fill[best] += counts[g]
        bins[g] = best
    return bins


def _group_table(labels: np.ndarray, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (group index of each song [n_songs], songs per genre per group [n_groups, n_genres]); groups
    indexed in sorted key order, so the table does not depend on the order of the songs."""
    _, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    _, genre = np.unique(labels, return_inverse=True)
    counts = np.zeros((inv.max() + 1 if len(inv) else 0, genre.max() + 1 if len(genre) else 0))
    np.add.at(counts, (inv, genre), 1)
    return inv, counts


def _valid_from(rest: np.ndarray, counts: np.ndarray, valid_share: float, rng) -> np.ndarray:
    """Which of the groups `rest` (indices into counts) go to valid: valid_share of each genre's songs
    of the rest, by whole groups; none when there are fewer than 2 groups or valid_share is 0."""
    if valid_share <= 0 or len(rest) < 2:
        return np.zeros(0, np.int64)
    valid_share = min(valid_share, 1 - 1 / len(rest))  # kfold:2 with valid_fraction 0.5 would ask for all
    bins = assign_groups(counts[rest], [valid_share, 1 - valid_share], rng.permutation(len(rest)))
    if not bins.any():  # everything to valid leaves nothing to train on: give it all to train
        return np.zeros(0, np.int64)
    return rest[bins == 0]


def _parts_of(inv: np.ndarray, test: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    part = np.zeros(inv.max() + 1, np.int64)  # 0 train, 1 valid, 2 test (by group)
    part[valid], part[test] = 1, 2
    return {k: np.flatnonzero(part[inv] == j).astype(np.int64) for j, k in enumerate(("train", "valid", "test"))}


def grouped_random_split(labels: np.ndarray, groups: Sequence[str], *, test_fraction: float,
                         valid_fraction: float, seed: int, by: str = "group") -> dict[str, np.ndarray]:
    """A random split by whole groups: about test_fraction of each genre's songs to test, then
    valid_fraction (of the whole) to valid from the rest, stratified as far as the groups allow.

    labels: [n_songs]; groups: [n_songs] group keys. At least one group is tested. Deterministic in seed.
    """
    inv, counts = _group_table(labels, groups)
    if len(counts) < 2:
        raise DataError(f"--split random --group-by {by}: every song has the same {by} ({groups[0]!r}), so "
                        f"none is left to test on; add songs of other {by}s, or leave --group-by out")
    rng = np.random.default_rng([seed, 13])
    to_test = assign_groups(counts, [test_fraction, 1 - test_fraction], rng.permutation(len(counts))) == 0
    if not to_test.any():  # groups too big for the test share: still test on the smallest one
        to_test[np.argmin(counts.sum(1))] = True
    rest = np.flatnonzero(~to_test)
    valid = _valid_from(rest, counts, valid_fraction / max(1e-9, 1 - test_fraction), rng)
    return _parts_of(inv, np.flatnonzero(to_test), valid)


def group_folds(labels: np.ndarray, groups: Sequence[str], k: int, *, seed: int,
                by: str = "group") -> np.ndarray:
    """The fold (0..k-1) of every song when whole groups are dealt to k folds, stratified by genre as far as
    the groups allow; a function of the seed and the (genre, group) of each song, not of their order.

    labels, groups: [n_songs] -> [n_songs] int64. ConfigError unless 2 <= k <= the number of groups.
    """
    inv, counts = _group_table(labels, groups)
    if not 2 <= k <= len(counts):
        raise ConfigError(f"--split kfold:{k} --group-by {by}: K must be <= {len(counts)}, the number of "
                          f"{by}s, so that every fold tests at least one")
    order = np.random.default_rng([seed, 11]).permutation(len(counts))
    return assign_groups(counts, np.full(k, 1 / k), order)[inv]


def grouped_kfold_split(labels: np.ndarray, groups: Sequence[str], k: int, *, fold: int, valid_fraction: float,
                        seed: int, by: str = "group") -> dict[str, np.ndarray]:
    """K folds of whole groups (group_folds); fold `fold` is test, and valid takes valid_fraction (of the
    whole) from the other folds' groups, stratified likewise.

    labels, groups: [n_songs]. The folds depend on the seed only (not on `fold`), so folds 0..K-1 of one
    seed test every song exactly once. K: checked by the caller (>= 2, 0 <= fold < K) and by group_folds.
    """
    inv, counts = _group_table(labels, groups)
    song_fold = group_folds(labels, groups, k, seed=seed, by=by)
    group_fold = np.zeros(len(counts), np.int64)
    group_fold[inv] = song_fold
    rest = np.flatnonzero(group_fold != fold)
    valid = _valid_from(rest, counts, valid_fraction * k / (k - 1), np.random.default_rng([seed, 17, fold]))
    return _parts_of(inv, np.flatnonzero(group_fold == fold), valid)
