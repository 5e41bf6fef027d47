"""Grouped splits (--group-by artist|album|folder): tags read from ID3, Vorbis comments and MP4 atoms, the
fallback to folders, one-line refusals, no group on two sides in any part of any fold, stratification
against scikit-learn's StratifiedGroupKFold (the reference), determinism in the seed."""

import os
import warnings

import av
import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.easyid3 import EasyID3
from mutagen.easymp4 import EasyMP4Tags
from mutagen.flac import VCFLACDict
from mutagen.id3 import ID3, TALB, TPE1, TPE2
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpusVComment
from mutagen.oggvorbis import OggVCommentDict

from crnn_jax.config import Config, ConfigError
from crnn_jax.data import loaders, splits, tags
from crnn_jax.data.dataset import DataError, Dataset

# ext -> (soundfile format, subtype, sample rate); .m4a is written with PyAV (AAC), below.
FORMATS = {".wav": ("WAV", "PCM_16", 8000), ".aiff": ("AIFF", "PCM_16", 8000), ".flac": ("FLAC", "PCM_16", 8000),
           ".ogg": ("OGG", "VORBIS", 8000), ".opus": ("OGG", "OPUS", 48000), ".mp3": ("MP3", "MPEG_LAYER_III", 8000)}
# The tag system each format carries, as mutagen reads it (easy=True).
TAG_TYPE = {".wav": ID3, ".aiff": ID3, ".mp3": EasyID3, ".flac": VCFLACDict, ".ogg": OggVCommentDict,
            ".opus": OggOpusVComment, ".m4a": EasyMP4Tags}


def write_song(path, artist=None, album=None, albumartist=None, seconds=0.2):
    """A short sine at `path` (any ext of FORMATS or .m4a), tagged with the given values (None: no tag)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1]
    rate = FORMATS.get(ext, (0, 0, 8000))[2]
    x = (0.2 * np.sin(np.arange(int(seconds * rate)) * 0.07)).astype(np.float32)
    if ext == ".m4a":  # soundfile cannot write MP4: AAC in an iPod (M4A) container through PyAV
        with av.open(path, "w", format="ipod") as out:
            stream = out.add_stream("aac", rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(x[None], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in list(stream.encode(frame)) + list(stream.encode(None)):
                out.mux(packet)
    else:
        fmt, subtype, _ = FORMATS[ext]
        sf.write(path, x, rate, format=fmt, subtype=subtype)
    values = {"artist": artist, "album": album, "albumartist": albumartist}
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return path
    if ext in (".wav", ".aiff"):  # ID3 chunk, raw frames: mutagen has no easy view of these
        f = mutagen.File(path)
        if f.tags is None:
            f.add_tags()
        frames = {"artist": TPE1, "album": TALB, "albumartist": TPE2}
        for k, v in values.items():
            f.tags.add(frames[k](encoding=3, text=[v]))
    elif ext == ".m4a":  # MP4 atoms by their own names
        f = MP4(path)
        if f.tags is None:
            f.add_tags()
        atoms = {"artist": "\xa9ART", "album": "\xa9alb", "albumartist": "aART"}
        for k, v in values.items():
            f.tags[atoms[k]] = [v]
    else:  # ID3 through EasyID3 (.mp3), Vorbis comments (.flac, .ogg, .opus)
        f = mutagen.File(path, easy=True)
        if f.tags is None:
            f.add_tags()
        for k, v in values.items():
            f[k] = v
    f.save()
    return path


def library(root, songs):
    """A Dataset of `songs` ("<genre>/.../<file>" under root) without decoding: one-sample stand-ins."""
    classes = tuple(sorted({n.split("/")[0] for n in songs}))
    n = len(songs)
    return Dataset(audio=np.ones(n, np.int16), lengths=np.ones(n, np.int64),
                   labels=np.array([classes.index(s.split("/")[0]) for s in songs], np.int32), names=tuple(songs),
                   class_names=classes, sample_rate=8000, root=str(root))


def split_of(ds, split="random", by="artist", **kw):
    return splits.make_split(Config(data=ds.root or "synthetic", split=split, group_by=by, **kw), ds)


def sides(parts, keys):
    """key -> the set of parts holding its songs; keys: [n_songs], the test's own ground truth."""
    out = {}
    for k in splits.PARTS:
        for i in parts[k]:
            out.setdefault(keys[i], set()).add(k)
    return out


# --- tags --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", sorted(TAG_TYPE))
def test_tags_are_read_from_id3_vorbis_comments_and_mp4_atoms(tmp_path, ext):
    name = f"rock/song{ext}"  # directly in the genre folder: no folder to fall back to, the tag must be read
    path = write_song(str(tmp_path / name), artist="Band X feat. Y", albumartist="  Band   X ", album="First")
    assert isinstance(mutagen.File(path, easy=True).tags, TAG_TYPE[ext])
    # albumartist wins over artist ("feat." credits stay with the band); keys normalised
    assert tags.song_group(path, "artist", name) == "band x"
    assert tags.song_group(path, "album", name) == "band x/first"
    only_artist = write_song(str(tmp_path / f"pop/solo{ext}"), artist="The Beatles ")
    assert tags.song_group(only_artist, "artist", f"pop/solo{ext}") == "the beatles"
    assert tags.song_group(only_artist, "album", f"pop/solo{ext}") is None  # no album tag, no folder


def test_a_missing_tag_falls_back_to_the_folders_below_the_genre(tmp_path):
    def group(name, by, **tagged):
        return tags.song_group(write_song(str(tmp_path / name), **tagged), by, name)

    assert group("rock/The Band/a.wav", "artist") == "the band"  # <genre>/<Artist>/song
    assert group("rock/The Band/Live 1/b.flac", "artist") == "the band"  # the artist, not the album folder
    assert group("rock/The Band/Live 1/c.mp3", "album") == "the band/live 1"
    assert group("rock/The Band/Live 1/d.ogg", "folder", artist="X") == "the band/live 1"  # folder: no tags
    # A tagged song and an untagged one of the same album agree
    assert group("rock/e.m4a", "album", artist="The Band", album="Live 1") == "the band/live 1"
    assert group("rock/Other/f.mp3", "artist", artist="Someone") == "someone"  # the tag wins over the folder
    assert group("rock/g.wav", "artist") is None  # no tag, no folder
    (tmp_path / "rock" / "Junk Band").mkdir()
    (tmp_path / "rock" / "Junk Band" / "h.mp3").write_bytes(b"not an mp3 at all" * 10)
    assert tags.song_group(str(tmp_path / "rock/Junk Band/h.mp3"), "artist", "rock/Junk Band/h.mp3") == "junk band"
    # macOS stores file names decomposed (NFD), tags are usually composed (NFC): one artist
    assert tags.normalise("Beyonce\u0301") == tags.normalise("Beyonc\u00e9 ") == "beyonc\u00e9"


def test_songs_without_a_group_are_refused_with_one_line(tmp_path):
    songs = ["rock/A/1.wav", "rock/2.wav", "pop/3.flac", "pop/B/4.flac", "pop/5.mp3"]
    for s in songs:
        write_song(str(tmp_path / s), artist="Tagged" if s == "pop/5.mp3" else None)
    ds = library(tmp_path, songs)
    with pytest.raises(DataError) as e:
        tags.groups_of(ds, "artist")
    msg = str(e.value)
    assert "\n" not in msg and "2 of 5 songs have no albumartist/artist tag" in msg
    assert f"(first: {tmp_path / 'rock/2.wav'})" in msg and "lay them out as <genre>/<artist>/<song>" in msg
    with pytest.raises(DataError, match=r"3 of 5 songs have no folder .*<genre>/<folder>/<song>"):
        tags.groups_of(ds, "folder")
    with pytest.raises(DataError, match="not files in a folder .synthetic or TFDS data.*leave --group-by out"):
        tags.groups_of(library("", songs), "artist")
    os.remove(tmp_path / "rock/A/1.wav")
    with pytest.raises(DataError, match="1.wav: no such file"):
        tags.groups_of(ds, "artist")


@pytest.mark.parametrize("split, by, msg", [
    ("fault-filtered", "artist", "--group-by artist applies to --split random or kfold:K"),
    ("LISTS", "album", "defines its own parts (leave --group-by out)"),
    ("random", "genre", "artist, album, folder"),  # Config's own check
    ("kfold:5", "folder", "--split kfold:5 --group-by folder: K must be <= 4, the number of folders"),
    ("kfold:x", "folder", "K must be an integer"),
])
def test_grouping_refusals_are_one_line(tmp_path, split, by, msg):
    ds = library(tmp_path, [f"{g}/{a}/{i}.wav" for g, a in [("a", "x"), ("a", "y"), ("b", "z"), ("b", "w")]
                            for i in range(3)])
    if split == "LISTS":
        split = str(tmp_path / "lists")
        os.makedirs(split)
        for k in ("train", "test"):
            (tmp_path / "lists" / f"{k}.txt").write_text("a/x/0.wav\n")
    with pytest.raises(ConfigError) as e:
        split_of(ds, split, by)
    assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--group-by 'genre' is not one of: artist, album, folder"):
        tags.groups_of(ds, "genre")  # the library's check, for callers that bypass Config


def test_one_group_cannot_be_split_at_random(tmp_path):
    with pytest.raises(DataError, match="every song has the same folder .'x'., so none is left to test on"):
        split_of(library(tmp_path, ["a/x/1.wav", "b/x/2.wav", "a/x/3.wav"]), "random", "folder")


# --- no group on two sides -------------------------------------------------------------------------------
def tagged_library(root):
    """A small user library: 3 genres, 9 artists of 2-4 songs in every tag format, some tagged only, some
    laid out <genre>/<Artist>/ without tags, one artist in two genres, names cased and spaced differently.
    -> (Dataset, the true artist of each song)."""
    exts = sorted(TAG_TYPE)
    songs, truth = [], []
    for a in range(9):
        genres = ["jazz", "rock"] if a == 4 else [("jazz", "pop", "rock")[a % 3]]
        for i in range(2 + a % 3):
            genre, ext = genres[i % len(genres)], exts[(a + i) % len(exts)]
            if (a + i) % 2:  # tagged, directly in the genre folder ("Artist 3" / " artist  3 " alike)
                name = f"{genre}/a{a}s{i}{ext}"
                write_song(str(root / name), artist=f"Artist {a}" if i % 3 else f" artist  {a} ")
            else:  # untagged, in the artist's folder
                name = f"{genre}/Artist {a}/s{i}{ext}"
                write_song(str(root / name))
            songs.append(name)
            truth.append(a)
    order = np.argsort(songs)
    return library(root, [songs[i] for i in order]), [truth[i] for i in order]


def test_no_artist_is_in_two_parts_in_any_fold_or_random_split(tmp_path):
    ds, artist = tagged_library(tmp_path)
    assert len(set(tags.groups_of(ds, "artist"))) == 9  # tags, fallback and normalisation agree
    for seed in range(3):
        tested = []
        for fold in range(3):
            parts = split_of(ds, "kfold:3", fold=fold, seed=seed)
            assert all(len(s) == 1 for s in sides(parts, artist).values())
            assert sum(len(v) for v in parts.values()) == len(ds)
            tested += parts["test"].tolist()
        assert sorted(tested) == list(range(len(ds)))  # the K folds test every song once
        parts = split_of(ds, "random", seed=seed)
        assert all(len(s) == 1 for s in sides(parts, artist).values())
        assert sum(len(v) for v in parts.values()) == len(ds)


def test_grouped_split_through_the_loader_on_a_generated_folder(tmp_path):
    songs = [f"{g}/{a}/{i}{ext}" for g, a, ext in [("blues", "Ann", ".wav"), ("blues", "Bob", ".flac"),
                                                    ("metal", "Cyd", ".mp3"), ("metal", "Dee", ".ogg")]
             for i in range(2)]
    for s in songs:
        write_song(str(tmp_path / "music" / s), artist=None if s.startswith("blues/Ann") else s.split("/")[1])
    ds, parts = loaders.load(Config(data=str(tmp_path / "music"), split="kfold:2", fold=1, group_by="artist",
                                    cache_dir=str(tmp_path / "cache"), valid_fraction=0.0))
    assert ds.root == str(tmp_path / "music") and len(ds) == 8
    assert all(len(s) == 1 for s in sides(parts, [n.split("/")[1] for n in ds.names]).values())


# --- stratification, against the reference -----------------------------------------------------------------
def random_library(rng, n_genres=4, n_artists=30, spread=0.15):
    """Artists of 1-15 songs, most of one genre; a few songs (spread) of another. -> (labels, groups)."""
    labels, groups = [], []
    for a in range(n_artists):
        home = rng.integers(n_genres)
        for _ in range(rng.integers(1, 16)):
            labels.append(home if rng.random() > spread else rng.integers(n_genres))
            groups.append(f"artist {a:03d}")
    return np.array(labels), np.array(groups)


def reference_folds(labels, groups, k, random_state=None):
    """scikit-learn's StratifiedGroupKFold -> the fold of each song [n_songs]."""
    model_selection = pytest.importorskip("sklearn.model_selection")
    fold = np.full(len(labels), -1)
    with warnings.catch_warnings():  # "The least populated class has only N members": expected here
        warnings.simplefilter("ignore", UserWarning)
        sgkf = model_selection.StratifiedGroupKFold(k, shuffle=random_state is not None, random_state=random_state)
        for f, (_, test) in enumerate(sgkf.split(np.zeros(len(labels)), labels, groups)):
            fold[test] = f
    return fold


def our_folds(labels, groups, k, seed):
    fold = tags.group_folds(labels, groups, k, seed=seed)
    test = tags.grouped_kfold_split(labels, groups, k, fold=1, valid_fraction=0.1, seed=seed)["test"]
    assert np.array_equal(test, np.flatnonzero(fold == 1))  # the split's test part is that fold
    return fold


def imbalance(labels, fold, k):
    """The largest spread, over genres, of a genre's songs per fold (max - min over folds)."""
    per_fold = np.zeros((k, labels.max() + 1))
    np.add.at(per_fold, (fold, labels), 1)
    return int((per_fold.max(0) - per_fold.min(0)).max())


def test_the_assignment_is_stratified_group_kfolds_given_its_order():
    rng = np.random.default_rng(5)
    for trial in range(12):
        labels, groups = random_library(rng, n_genres=2 + trial % 4, n_artists=12 + 3 * trial)
        k = 2 + trial % 5
        inv, counts = tags._group_table(labels, groups)
        # the reference without shuffle takes groups in sorted order: ours with the identity order
        ours = tags.assign_groups(counts, np.full(k, 1 / k), np.arange(len(counts)))[inv]
        assert np.array_equal(ours, reference_folds(labels, groups, k))


def test_stratification_is_as_good_as_the_references():
    rng = np.random.default_rng(0)
    ours_all, ref_all = [], []
    for trial in range(20):
        labels, groups = random_library(rng, n_genres=3 + trial % 3, n_artists=25 + trial)
        k = 3 + trial % 3
        ours = [imbalance(labels, our_folds(labels, groups, k, seed), k) for seed in range(3)]
        ref = [imbalance(labels, reference_folds(labels, groups, k, rs), k) for rs in range(3)]
        assert max(ours) <= max(ref) + 1, (trial, ours, ref)  # within the reference's own spread
        ours_all += ours
        ref_all += ref
    assert np.mean(ours_all) <= np.mean(ref_all) + 0.25, (np.mean(ours_all), np.mean(ref_all))
    # and far better than ignoring the genres: one-genre artists dealt to folds in turn
    labels, groups = random_library(np.random.default_rng(1), spread=0.0)
    naive = np.unique(groups, return_inverse=True)[1] % 4
    assert imbalance(labels, our_folds(labels, groups, 4, 0), 4) < imbalance(labels, naive, 4)


def test_grouped_random_split_shares_and_seeds(tmp_path):
    labels, groups = random_library(np.random.default_rng(3), n_artists=60)
    names = sorted(f"g{c}/{a}/{i}.wav" for i, (c, a) in enumerate(zip(labels, groups)))
    ds = library(tmp_path, names)
    parts = split_of(ds, "random", "folder", seed=1, test_fraction=0.2, valid_fraction=0.1)
    for c in range(4):  # per genre, about the asked share (whole artists of up to 15 songs)
        n = np.sum(ds.labels == c)
        assert abs(np.sum(ds.labels[parts["test"]] == c) - 0.2 * n) <= 8
        assert abs(np.sum(ds.labels[parts["valid"]] == c) - 0.1 * n) <= 8
    again = split_of(ds, "random", "folder", seed=1, test_fraction=0.2, valid_fraction=0.1)
    assert all(np.array_equal(parts[k], again[k]) for k in splits.PARTS)
    other = split_of(ds, "random", "folder", seed=2, test_fraction=0.2, valid_fraction=0.1)
    assert not np.array_equal(parts["test"], other["test"])
    for seed in (1, 2):  # kfold too: the seed picks the partition, and only the seed
        a = split_of(ds, "kfold:4", "folder", seed=seed)
        assert all(np.array_equal(a[k], split_of(ds, "kfold:4", "folder", seed=seed)[k]) for k in splits.PARTS)
    assert not np.array_equal(split_of(ds, "kfold:4", "folder", seed=1)["test"],
                              split_of(ds, "kfold:4", "folder", seed=2)["test"])
    # the order the songs come in does not matter: the same songs land in the same parts
    shuffled = library(tmp_path, list(np.random.default_rng(0).permutation(names)))
    moved = split_of(shuffled, "random", "folder", seed=1, test_fraction=0.2, valid_fraction=0.1)
    assert {shuffled.names[i] for i in moved["test"]} == {ds.names[i] for i in parts["test"]}


def test_a_genre_with_too_few_artists_is_reported(tmp_path, capsys):
    ds = library(tmp_path, [f"{g}/{a}/{i}.wav" for g, a in [("a", "x"), ("a", "y"), ("a", "z"), ("b", "w")]
                            for i in range(3)])
    parts = split_of(ds, "kfold:3", "folder", fold=0, seed=0)
    missing = "test" if not np.any(ds.labels[parts["test"]] == 1) else "train"
    err = capsys.readouterr().err
    assert f"--split kfold:3 --group-by folder fold 0: no {missing} songs of genre(s) b" in err
