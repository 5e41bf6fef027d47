"""Splits by song: random (stratified), the shipped fault-filtered GTZAN lists, stratified k-fold, user lists;
every split disjoint, every bad form a one-line error; with --group-by, whole groups on one side."""

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED
from crnn_jax.data import loaders
from crnn_jax.data import split_lists, splits
from crnn_jax.config import Config, ConfigError
from crnn_jax.data.dataset import DataError, Dataset

GENRES = split_lists.GTZAN_GENRES
LISTS = split_lists.filtered_lists()


def dataset(names):
    """A Dataset of one-sample songs with these names; labels from the genre folder (sorted)."""
    classes = tuple(sorted({n.split("/")[0] for n in names}))
    n = len(names)
    return Dataset(audio=np.ones((n, 1), np.int16), lengths=np.ones(n, np.int64),
                   labels=np.array([classes.index(x.split("/")[0]) for x in names], np.int32), names=tuple(names),
                   class_names=classes, sample_rate=22050)


def split_of(ds, split, **kw):
    return splits.make_split(Config(data="/data/here", split=split, **kw), ds)


def names_of(ds, idx):
    return {ds.names[i] for i in idx}


def assert_disjoint(parts, n):
    seen = np.concatenate([parts[k] for k in splits.PARTS])
    assert len(seen) == len(set(seen.tolist())) and (seen >= 0).all() and (seen < n).all()
    for k in splits.PARTS:
        assert parts[k].dtype == np.int64 and np.all(np.diff(parts[k]) > 0)


# --- the shipped lists ---------------------------------------------------------------------------------------
def test_shipped_fault_filtered_lists():
    assert [len(LISTS[k]) for k in ("train", "valid", "test")] == [443, 197, 290]
    everything = sum(LISTS.values(), [])
    assert len(set(everything)) == 930  # no song on two sides
    assert all(split_lists.GTZAN_NAME.match("/".join(split_lists.song_key(x)[-2:])) for x in everything)
    # Every genre is in every part (the split is stratified enough to test on).
    for k in splits.PARTS:
        assert {x.split("/")[0] for x in LISTS[k]} == set(GENRES)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "gtzan-splits")),
                    reason="../shared/data not present (a user's clone)")
def test_shipped_lists_match_the_shared_copies():
    for k in splits.PARTS:
        with open(os.path.join(SHARED, "gtzan-splits", f"{k}_filtered.txt")) as f:
            assert split_lists.parse_list(f.read()) == LISTS[k]


# --- fault-filtered ----------------------------------------------------------------------------------------
def all_gtzan(ext=".au"):
    return [f"{g}/{g}.{i:05d}{ext}" for g in GENRES for i in range(100)]


def test_fault_filtered_on_full_gtzan_drops_the_70_faulty_clips(capsys):
    ds = dataset(all_gtzan())
    parts = split_of(ds, "fault-filtered")
    assert_disjoint(parts, len(ds))
    for k in splits.PARTS:  # .au in the data, .wav in the lists: matched by genre and stem
        assert names_of(ds, parts[k]) == {x.replace(".wav", ".au") for x in LISTS[k]}
    assert "70 of 1000 songs are in no list" in capsys.readouterr().err
    # The Kaggle copy's jazz.00054 does not decode, so the loader skips it; the lists name it: a warning.
    ds = dataset([n for n in all_gtzan(".wav") if n != "jazz/jazz.00054.wav"])
    assert sum(len(v) for v in split_of(ds, "fault-filtered").values()) == 929
    assert "1 of 930 listed songs are not in the data (first: jazz/jazz.00054.wav)" in capsys.readouterr().err


def test_fault_filtered_on_a_gtzan_subset_maps_each_song_to_its_part():
    picked = {k: LISTS[k][::37] for k in splits.PARTS}  # a few songs of each part, spread over genres
    extra = sorted(set(all_gtzan(".wav")) - set(sum(LISTS.values(), [])))[0]  # a GTZAN clip the lists drop
    ds = dataset(sorted(sum(picked.values(), [extra])))
    parts = split_of(ds, "fault-filtered")
    for k in splits.PARTS:
        assert names_of(ds, parts[k]) == set(picked[k])
    assert ds.names.index(extra) not in np.concatenate(list(parts.values()))


def test_fault_filtered_through_a_generated_gtzan_folder(tmp_path):
    picked = {"train": LISTS["train"][:2] + LISTS["train"][-1:], "valid": LISTS["valid"][:2],
              "test": LISTS["test"][:1] + LISTS["test"][-1:]}
    for k, names in picked.items():
        for j, name in enumerate(names):
            path = tmp_path / "genres" / name.replace(".wav", ".au")
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), 0.1 * np.sin(np.arange(1600) * (0.05 + 0.01 * j)), 8000, subtype="PCM_16")
    ds, parts = loaders.load(Config(data=str(tmp_path), split="fault-filtered", cache_dir=str(tmp_path / "c")))
    for k in splits.PARTS:
        assert names_of(ds, parts[k]) == {x.replace(".wav", ".au") for x in picked[k]}


def test_fault_filtered_refuses_other_collections():
    # Some GTZAN names among others: many listed songs missing and foreign songs present -> not GTZAN.
    ds = dataset(LISTS["train"][:5] + LISTS["test"][:5] + [f"blues/mine{i}.wav" for i in range(5)])
    with pytest.raises(DataError) as e:
        split_of(ds, "fault-filtered")
    assert str(e.value) == (f"fault-filtered split: 920 of 930 listed songs are not in /data/here (first: "
                            f"{LISTS['train'][5]}); this split needs the full GTZAN")
    with pytest.raises(DataError, match="none of the 4 songs in /data/here is named like a GTZAN file"):
        split_of(dataset(["a/x.wav", "a/y.wav", "b/x.wav", "b/y.wav"]), "fault-filtered")
    # A few missing (e.g. files the loader skipped) is fine, even with foreign songs beside.
    names = sum(LISTS.values(), [])[3:] + ["blues/mine.wav"]
    parts = split_of(dataset(names), "fault-filtered")
    assert sum(len(v) for v in parts.values()) == 927


# --- random ------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(2, 12), min_size=2, max_size=6), st.integers(0, 2**16))
def test_random_split_is_disjoint_complete_and_stratified(counts, seed):
    ds = dataset([f"g{c}/s{i}.wav" for c, n in enumerate(counts) for i in range(n)])
    parts = split_of(ds, "random", seed=seed, test_fraction=0.2, valid_fraction=0.1)
    assert_disjoint(parts, len(ds))
    assert sum(len(v) for v in parts.values()) == len(ds)
    for c, n in enumerate(counts):  # per genre: round(0.2 n) test songs (>= 1), at least one training song
        n_test = min(n - 1, max(1, round(0.2 * n)))
        assert np.sum(ds.labels[parts["test"]] == c) == n_test
        assert np.sum(ds.labels[parts["train"]] == c) >= 1


def test_random_split_with_one_song_per_genre_is_an_error():
    with pytest.raises(DataError, match="--split random: no genre has 2 or more songs"):
        split_of(dataset([f"{g}/{g}.00000.wav" for g in GENRES]), "random")


# --- k folds -------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(5, 14), min_size=2, max_size=5), st.integers(2, 5), st.integers(0, 1000))
def test_kfold_folds_partition_the_songs_stratified(counts, k, seed):
    ds = dataset([f"g{c}/s{i}.wav" for c, n in enumerate(counts) for i in range(n)])
    folds = [split_of(ds, f"kfold:{k}", fold=f, seed=seed, valid_fraction=0.1) for f in range(k)]
    tests = np.concatenate([p["test"] for p in folds])
    assert sorted(tests.tolist()) == list(range(len(ds)))  # every song is tested exactly once
    sizes = [len(p["test"]) for p in folds]
    assert max(sizes) - min(sizes) <= 1
    for p in folds:
        assert_disjoint(p, len(ds))
        assert sum(len(v) for v in p.values()) == len(ds)
        for c, n in enumerate(counts):  # each fold holds floor or ceil of n/k songs of every genre
            assert n // k <= np.sum(ds.labels[p["test"]] == c) <= -(-n // k)
            n_test = np.sum(ds.labels[p["test"]] == c)
            assert np.sum(ds.labels[p["valid"]] == c) == min(round(0.1 * n), n - 1 - n_test)
    again = split_of(ds, f"kfold:{k}", fold=0, seed=seed, valid_fraction=0.1)
    assert all(np.array_equal(again[x], folds[0][x]) for x in splits.PARTS)


@pytest.mark.parametrize("split, fold, msg", [
    ("kfold:1", 0, "--split kfold:1: K must be >= 2"),
    ("kfold:x", 0, "--split kfold:x: K must be an integer >= 2"),
    ("kfold:6", 0, "--split kfold:6: K must be <= 5, the number of songs of the smallest genre (b)"),
    ("kfold:3", 3, "--fold 3 is out of range for --split kfold:3 (0..2)"),
    ("kfold:3", -1, "--fold -1 is out of range"),
    ("random", 2, "--fold 2 only applies to --split kfold:K"),
    ("bogus", 0, "--split 'bogus' is not one of: random, fault-filtered, kfold:K"),
])
def test_bad_split_flags_are_config_errors(split, fold, msg):
    ds = dataset([f"a/{i}.wav" for i in range(8)] + [f"b/{i}.wav" for i in range(5)])
    with pytest.raises(ConfigError) as e:
        split_of(ds, split, fold=fold)
    assert msg in str(e.value) and "\n" not in str(e.value)


# --- split-list folders ------------------------------------------------------------------------------------
def write_lists(folder, **parts):
    folder.mkdir(parents=True, exist_ok=True)
    for k, lines in parts.items():
        (folder / f"{k}.txt").write_text("# my split\n" + "\n".join(lines) + "\n\n")
    return str(folder)


def test_split_list_folder_matches_names_and_leaves_unlisted_songs_out(tmp_path, capsys):
    ds = dataset([f"{g}/{g}.{i:05d}.wav" for g in ("blues", "rock") for i in range(4)])
    folder = write_lists(tmp_path / "lists", train=["genres/blues/blues.00000.au", "rock/rock.00000.wav",
                                                    "Data/genres_original/Rock/rock.00001.flac"],
                         valid=["blues/blues.00001.wav"], test=["blues/blues.00002.wav", "rock/rock.00002.wav"])
    parts = split_of(ds, folder)
    assert names_of(ds, parts["train"]) == {"blues/blues.00000.wav", "rock/rock.00000.wav", "rock/rock.00001.wav"}
    assert names_of(ds, parts["valid"]) == {"blues/blues.00001.wav"}
    assert names_of(ds, parts["test"]) == {"blues/blues.00002.wav", "rock/rock.00002.wav"}
    assert "2 of 8 songs are in no list and are left out" in capsys.readouterr().err
    os.remove(os.path.join(folder, "valid.txt"))  # valid.txt is optional
    assert len(split_of(ds, folder)["valid"]) == 0


def test_bad_split_lists_are_one_line_errors(tmp_path):
    ds = dataset([f"{g}/{i}.wav" for g in ("a", "b") for i in range(3)])
    cases = {
        "missing song": (dict(train=["a/0.wav", "b/7.wav"], test=["a/1.wav"]),
                         "train.txt names b/7.wav, which is not in the data"),
        "two lists": (dict(train=["a/0.wav"], test=["a/0.wav"]), "a/0.wav is listed in both"),
        "no test": (dict(train=["a/0.wav"]), "no test.txt in it"),
        "empty test": (dict(train=["a/0.wav"], test=[]), "the test part is empty"),
    }
    for i, (parts, msg) in enumerate(cases.values()):
        with pytest.raises(DataError) as e:
            split_of(ds, write_lists(tmp_path / str(i), **parts))
        assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        split_of(ds, str(tmp_path / "nope"))
    with pytest.raises(DataError, match="look like one song|same name, different extension"):
        split_of(dataset(["a/0.wav", "a/0.au", "b/1.wav"]), write_lists(tmp_path / "x", train=["a/0"], test=["b/1"]))


def test_check_split_refuses_overlap():
    with pytest.raises(DataError, match="song 2 is in both train and test"):
        splits.check_split({"train": np.array([1, 2]), "test": np.array([2, 3])}, 5)


# --- whole groups (--group-by; tags and stratification in test_groups.py) --------------------------------
def assert_whole_groups(parts, keys):
    side = {}
    for k in splits.PARTS:
        for i in parts[k]:
            assert side.setdefault(keys[i], k) == k, f"group {keys[i]} in {side[keys[i]]} and {k}"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6), st.booleans()), min_size=4, max_size=25),
       st.integers(2, 4), st.integers(0, 1000), st.sampled_from([0.0, 0.1, 0.3]))
def test_grouped_folds_partition_whole_groups(groups, k, seed, valid_fraction):
    """Groups of 1-6 songs of one genre (or two: the flag), K folds: every part of every fold holds whole
    groups, every song is tested once, valid comes from the other folds."""
    names = [f"g{(c + j * two) % 4}/artist{a}/{j}.wav" for a, (c, n, two) in enumerate(groups) for j in range(n)]
    ds = dataclasses.replace(dataset(sorted(names)), root="/nowhere")  # folder grouping reads no file
    key = [n.split("/")[1] for n in ds.names]
    k = min(k, len(groups))
    folds = [split_of(ds, f"kfold:{k}", group_by="folder", fold=f, seed=seed, valid_fraction=valid_fraction)
             for f in range(k)]
    assert sorted(np.concatenate([p["test"] for p in folds]).tolist()) == list(range(len(ds)))
    for p in folds:
        assert_whole_groups(p, key)
        assert sum(len(v) for v in p.values()) == len(ds)
        assert valid_fraction or not len(p["valid"])
    parts = split_of(ds, "random", group_by="folder", seed=seed, valid_fraction=valid_fraction)
    assert_whole_groups(parts, key)
    assert len(parts["test"])


def test_check_split_refuses_a_group_on_two_sides():
    parts = {"train": np.array([0, 1]), "valid": np.array([2]), "test": np.array([3])}
    assert splits.check_split(parts, 4, groups=["a", "a", "b", "c"])["valid"].tolist() == [2]
    with pytest.raises(DataError, match="x: group 'b' has songs in both valid and test"):
        splits.check_split(parts, 4, what="x", groups=["a", "a", "b", "b"])


def test_describe_names_the_grouping():
    assert splits.describe(Config()) == splits.describe(Config(split="kfold:5", fold=2)) == "songs"
    assert splits.describe(Config(split="fault-filtered")) == "artist (fault-filtered lists)"
    assert [splits.describe(Config(group_by=b)) for b in ("artist", "album", "folder")] == ["artist", "album", "folder"]
