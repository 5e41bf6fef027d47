"""Train/valid/test splits of a loaded collection, always by song, chosen by `--split`:

    random               stratified per genre: test_fraction and valid_fraction of each genre's songs
    fault-filtered       Kereliuk, Sturm & Larsen's artist-filtered GTZAN split (443/197/290 songs, shipped
                         in crnn_jax/data/lists/*_filtered.txt): no artist on two sides, 70 faulty clips dropped
    kfold:K              stratified K folds of songs; --fold i (0 <= i < K) is the test fold
    all                  every song trains (but valid_fraction's share); --test-data FOLDER is the test
    /a/folder            train.txt, test.txt and optionally valid.txt in it, one song path per line

List lines are matched to the data's song names ("<genre>/<path in the genre folder>") by genre and
file stem: the extension (.au/.wav/...) and any leading layout folders ("genres/", "Data/genres_original/")
are ignored, and so is case. Songs of the data that no list names are left out of every part.

With --group-by artist|album|folder (random and kfold:K only), whole groups of songs are assigned instead
(crnn_jax/data/tags.py finds each song's group and assigns them): no artist (album, folder) is on two
sides, and genres are stratified as far as the groups allow (after scikit-learn's StratifiedGroupKFold).

Whatever the form, the result is {"train", "valid", "test"} -> sorted int64 song indices, pairwise
disjoint, and with grouping no group on two sides (checked), with train and test non-empty (test empty
for all: its test songs are another folder's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from crnn_jax.config import ConfigError
from crnn_jax.data import dataset as data
from crnn_jax.data import tags
from crnn_jax.data.dataset import DataError
from crnn_jax.data.log import say
from crnn_jax.data.split_lists import PARTS, fault_filtered, filtered_lists, from_lists, read_list_folder
FORMS = ("random, fault-filtered, kfold:K (with --fold 0..K-1), all (with --test-data), or a folder holding "
         "train.txt, test.txt [, valid.txt]")


def make_split(cfg, ds: data.Dataset) -> dict[str, np.ndarray]:
    """The split `cfg.split` names, of `ds`'s songs -> {"train", "valid", "test"}: sorted int64 indices;
    with `cfg.group_by` set, whole groups of songs (see describe).

    Raises ConfigError for a malformed --split/--fold/--group-by and DataError when the data cannot be split so.
    """
    split, by = cfg.split.strip(), getattr(cfg, "group_by", "")
    kfold = re.fullmatch(r"kfold:(.*)", split)
    what = f"--split {split}" + (f" --group-by {by}" if by else "")
    if cfg.fold != 0 and not kfold:
        raise ConfigError(f"--fold {cfg.fold} only applies to --split kfold:K (got --split {split!r})")
    if by and by not in tags.GROUPINGS:
        raise ConfigError(f"--group-by {by!r} is not one of: {', '.join(tags.GROUPINGS)} (or leave it out)")
    if by and not (split == "random" or kfold):
        raise ConfigError(f"--group-by {by} applies to --split random or kfold:K; --split {split} defines its "
                          f"own parts (leave --group-by out)")
    k = _parse_k(kfold.group(1), cfg.fold) if kfold else 0  # flag errors before any tag is read
    groups = tags.groups_of(ds, by) if by else None
    if split == "random" and groups:
        parts = tags.grouped_random_split(ds.labels, groups, test_fraction=cfg.test_fraction,
                                          valid_fraction=cfg.valid_fraction, seed=cfg.seed, by=by)
    elif split == "random":
        parts = data.random_split(ds.labels, test_fraction=cfg.test_fraction, valid_fraction=cfg.valid_fraction,
                                  seed=cfg.seed)
        if not len(parts["test"]):
            raise DataError("--split random: no genre has 2 or more songs, so nothing is left to test on; "
                            "use more songs, or --split FOLDER with train.txt and test.txt in it")
    elif split == "all":  # every song trains (but the validation share): the test songs are --test-data's
        if not getattr(cfg, "test_data", ""):
            raise ConfigError("--split all trains on every song of --data; give --test-data FOLDER to test on")
        parts = data.random_split(ds.labels, test_fraction=0.0, valid_fraction=cfg.valid_fraction, seed=cfg.seed)
    elif split == "fault-filtered":
        parts = fault_filtered(ds, filtered_lists(), where=cfg.data)
    elif kfold and groups:
        parts = tags.grouped_kfold_split(ds.labels, groups, k, fold=cfg.fold, valid_fraction=cfg.valid_fraction,
                                         seed=cfg.seed, by=by)
    elif kfold:
        parts = kfold_split(ds.labels, k, fold=cfg.fold, valid_fraction=cfg.valid_fraction,
                            seed=cfg.seed, class_names=ds.class_names)
    elif os.path.isdir(split):
        parts = from_lists(ds, read_list_folder(split))
    elif os.sep in split or "/" in split:
        raise DataError(f"--split {split}: no such folder (a split-list folder holds train.txt, test.txt "
                        f"[, valid.txt])")
    else:
        raise ConfigError(f"--split {split!r} is not one of: {FORMS}")
    parts = check_split(parts, len(ds), what=what, groups=groups, need_test=split != "all")
    if groups:
        _say_missing_genres(parts, ds, what + (f" fold {cfg.fold}" if kfold else ""), by)
    return parts


def describe(cfg) -> str:
    """What a split of `cfg` keeps together, for results.json and the cv summary: the --group-by grouping
    ("artist", "album", "folder"), "artist (fault-filtered lists)" (those lists keep artists apart), or
    "songs" (every split is by song at least; a user's list folder may group more, unknown to us)."""
    if getattr(cfg, "group_by", ""):
        return cfg.group_by
    return "artist (fault-filtered lists)" if cfg.split.strip() == "fault-filtered" else "songs"


def check_split(parts: dict[str, np.ndarray], n_songs: int, *, what: str = "split",
                groups: Sequence[str] | None = None, need_test: bool = True) -> dict[str, np.ndarray]:
    """Sorted unique int64 indices per part; raise DataError unless the parts are disjoint, within
    [0, n_songs), train and test are non-empty, and, given `groups` ([n_songs] group keys), no group has
    songs on two sides."""
    out = {k: np.unique(np.asarray(parts.get(k, []), np.int64)) for k in PARTS}
    for i, a in enumerate(PARTS):
        for b in PARTS[i + 1:]:
            both = np.intersect1d(out[a], out[b])
            if both.size:  # the guarantee every split makes: no song on two sides
                raise DataError(f"{what}: song {int(both[0])} is in both {a} and {b}")
        if out[a].size and (out[a][0] < 0 or out[a][-1] >= n_songs):
            raise DataError(f"{what}: {a} holds song indices outside [0, {n_songs})")
    for k in ("train", "test") if need_test else ("train",):
        if not out[k].size:
            raise DataError(f"{what}: the {k} part is empty")
    if groups is not None:  # the guarantee a grouped split makes: no artist (album, folder) on two sides
        side: dict[str, str] = {}
        for k in PARTS:
            for i in out[k].tolist():
                if side.setdefault(groups[i], k) != k:
                    raise DataError(f"{what}: group {groups[i]!r} has songs in both {side[groups[i]]} and {k}")
    return out


# --- k folds -------------------------------------------------------------------------------------------
def kfold_split(labels: np.ndarray, k, *, fold: int, valid_fraction: float, seed: int,
                class_names: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Stratified K folds of songs: fold `fold` is test; valid takes round(valid_fraction * n_c) of each
    class's n_c songs from the rest (at least one training song stays per class).

    Each class's songs are shuffled (seeded by seed) and dealt round-robin to the folds, starting where
    the previous class stopped, so fold sizes differ by at most one song overall. labels: [n_songs].
    """
    k = _parse_k(k, fold)
    counts = {int(c): int(np.sum(labels == c)) for c in np.unique(labels)}
    smallest = min(counts, key=counts.get)
    if k > counts[smallest]:
        name = class_names[smallest] if smallest < len(class_names) else str(smallest)
        raise ConfigError(f"--split kfold:{k}: K must be <= {counts[smallest]}, the number of songs of the "
                          f"smallest genre ({name}), so that every fold holds every genre")
    rng = np.random.default_rng([seed, 11])
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    start = 0
    for c in sorted(counts):
        idx = rng.permutation(np.flatnonzero(labels == c))
        in_test = (start + np.arange(len(idx))) % k == fold
        start += len(idx)
        rest = idx[~in_test]
        n_valid = min(len(rest) - 1, int(round(valid_fraction * len(idx))))
        parts["test"] += idx[in_test].tolist()
        parts["valid"] += rest[:n_valid].tolist()
        parts["train"] += rest[n_valid:].tolist()
    return {p: np.array(sorted(v), np.int64) for p, v in parts.items()}


def _parse_k(k, fold: int) -> int:
    """K of --split kfold:K, checked with --fold: ConfigError unless K >= 2 and 0 <= fold < K."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise ConfigError(f"--split kfold:{k}: K must be an integer >= 2, e.g. kfold:10") from None
    if k < 2:
        raise ConfigError(f"--split kfold:{k}: K must be >= 2")
    if not 0 <= fold < k:
        raise ConfigError(f"--fold {fold} is out of range for --split kfold:{k} (0..{k - 1})")
    return k


# --- whole groups (--group-by) ----------------------------------------------------------------------------
def _say_missing_genres(parts: dict[str, np.ndarray], ds: data.Dataset, what: str, by: str) -> None:
    """One line when grouping leaves a genre without training or test songs (too few groups of it)."""
    for k in ("train", "test"):
        gone = sorted(set(np.unique(ds.labels).tolist()) - set(np.unique(ds.labels[parts[k]]).tolist()))
        if gone:
            names = ", ".join(ds.class_names[c] if c < len(ds.class_names) else str(c) for c in gone)
            say(f"{what}: no {k} songs of genre(s) {names} (too few {by}s of them to spread over every part)")

