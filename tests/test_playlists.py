"""Genre playlists (crnn_jax.inference.playlists): every song in exactly one playlist, every entry resolves
from the playlist's folder (spaces and non-ASCII names included, also after the library and the playlists
move together), unsure songs apart, foreign folders refused untouched, reruns replace only our files."""

import os
import random
import shutil

import pytest
from conftest import snapshot

from crnn_jax.config import ConfigError
from crnn_jax.inference.playlists import (
    OWNER_LINE,
    PlaylistError,
    Song,
    check_playlist_dir,
    playlist_names,
    write_playlists,
)

GENRES = ("rock", "jazz", "blues")
# name -> (top genre probabilities, seconds)
LIBRARY = {
    "Björk/Homogenic/Björk – Jóga.flac": ((0.1, 0.8, 0.1), 305.4),
    "Rock Band/01 My Song.wav": ((0.9, 0.05, 0.05), 212.6),
    "Rock Band/#2 hash, comma.mp3": ((0.7, 0.2, 0.1), None),
    "ñandú y más/canción.ogg": ((0.2, 0.3, 0.5), 61.0),
    "top level.wav": ((0.6, 0.3, 0.1), 10.0),
}


def make_library(root) -> list[str]:
    """Fake song files under root -> their absolute paths (contents are never read by playlists)."""
    paths = []
    for rel in LIBRARY:
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"not really audio")
        paths.append(path)
    return paths


def songs_of(paths, library=LIBRARY):
    return [Song(p, probs, sec) for p, (probs, sec) in zip(paths, library.values())]


def read_playlists(folder) -> dict[str, list[tuple[str, str]]]:
    """Parse every .m3u8 in folder -> {file name: [(#EXTINF line, entry)]}, asserting the format."""
    out = {}
    for name in sorted(os.listdir(folder)):
        assert name.endswith(".m3u8"), name
        with open(os.path.join(folder, name), "rb") as f:
            lines = f.read().decode("utf-8").split("\n")  # strict: raises on anything but UTF-8
        assert lines[0] == "#EXTM3U" and lines[1] == OWNER_LINE and lines[-1] == ""
        body = lines[2:-1]
        assert len(body) % 2 == 0, body
        pairs = list(zip(body[0::2], body[1::2]))
        for inf, entry in pairs:
            assert inf.startswith("#EXTINF:") and entry and not entry.startswith("#"), (inf, entry)
        out[name] = pairs
    return out


def resolved(folder) -> dict[str, str]:
    """{real path each entry resolves to from folder: playlist name}; a song in two playlists fails."""
    out = {}
    for name, pairs in read_playlists(folder).items():
        for _, entry in pairs:
            path = os.path.join(folder, entry)
            assert os.path.isfile(path), (name, entry)
            real = os.path.realpath(path)
            assert real not in out, f"{entry} is in {out.get(real)} and {name}"
            out[real] = name
    return out


@pytest.mark.parametrize("where", ["beside", "inside"])
def test_every_song_once_and_every_path_resolves_also_after_a_move(tmp_path, where):
    paths = make_library(tmp_path / "lib")
    out = tmp_path / "lists" if where == "beside" else tmp_path / "lib" / "playlists"
    counts = write_playlists(str(out), songs_of(paths), GENRES)
    assert counts == {"rock.m3u8": 3, "jazz.m3u8": 1, "blues.m3u8": 1}
    found = resolved(str(out))
    assert found == {os.path.realpath(p): f"{GENRES[max(range(3), key=probs.__getitem__)]}.m3u8"
                     for p, (probs, _) in zip(paths, LIBRARY.values())}
    # Move the library and the playlist folder together: the entries are relative, so they follow.
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "lib", moved / "lib")
    if where == "beside":
        shutil.copytree(out, moved / "lists")
    shutil.rmtree(tmp_path / "lib")
    new_out = moved / out.relative_to(tmp_path)
    found_moved = resolved(str(new_out))
    assert len(found_moved) == len(LIBRARY)
    assert all(p.startswith(os.path.realpath(moved)) for p in found_moved)


def test_extinf_has_whole_seconds_and_the_file_stem(tmp_path):
    paths = make_library(tmp_path / "lib")
    write_playlists(str(tmp_path / "out"), songs_of(paths), GENRES)
    pls = read_playlists(str(tmp_path / "out"))
    infs = {entry.rsplit(os.sep, 1)[-1]: inf for pairs in pls.values() for inf, entry in pairs}
    assert infs["01 My Song.wav"] == "#EXTINF:213,01 My Song"
    assert infs["Björk – Jóga.flac"] == "#EXTINF:305,Björk – Jóga"
    assert infs["#2 hash, comma.mp3"] == "#EXTINF:-1,#2 hash, comma"  # unknown length: M3U's -1
    rock = [entry for _, entry in pls["rock.m3u8"]]
    assert rock == sorted(rock)
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(tmp_path / "out" / "rock.m3u8").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_relative_input_paths_and_a_duplicate(tmp_path, monkeypatch):
    make_library(tmp_path / "lib")
    monkeypatch.chdir(tmp_path)
    rels = [os.path.join("lib", *r.split("/")) for r in LIBRARY]
    songs = songs_of(rels) + [Song(os.path.join(".", rels[0]), (1.0, 0.0, 0.0), 1.0)]  # same file again
    counts = write_playlists("pl", songs, GENRES)
    assert sum(counts.values()) == len(LIBRARY)
    assert len(resolved(str(tmp_path / "pl"))) == len(LIBRARY)


def test_output_does_not_depend_on_song_order(tmp_path):
    paths = make_library(tmp_path / "lib")
    songs = songs_of(paths)
    write_playlists(str(tmp_path / "a"), songs, GENRES)
    random.Random(0).shuffle(songs)
    write_playlists(str(tmp_path / "b"), songs, GENRES)
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_min_probability_routes_unsure_songs_and_empty_genres_get_no_file(tmp_path):
    paths = make_library(tmp_path / "lib")
    counts = write_playlists(str(tmp_path / "out"), songs_of(paths), GENRES, min_probability=0.7)
    # 0.8 and 0.9 are sure, 0.7 is not below 0.7; 0.5 and 0.6 are unsure; blues is left with no song
    assert counts == {"rock.m3u8": 2, "jazz.m3u8": 1, "unsure.m3u8": 2}
    assert sorted(os.listdir(tmp_path / "out")) == ["jazz.m3u8", "rock.m3u8", "unsure.m3u8"]
    found = resolved(str(tmp_path / "out"))
    unsure = {os.path.basename(p) for p, name in found.items() if name == "unsure.m3u8"}
    assert unsure == {"canción.ogg", "top level.wav"}


def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path):
    paths = make_library(tmp_path / "lib")
    foreign = ({"notes.txt": b"mine"}, {"mine.m3u8": b"#EXTM3U\nmy own list\n"}, {"sub/x.m3u8": b""})
    for i, content in enumerate(foreign):
        out = tmp_path / f"out{i}"
        for rel, data in content.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        before = snapshot(out)
        with pytest.raises(PlaylistError, match="did not write") as e:
            write_playlists(str(out), songs_of(paths), GENRES)
        assert "\n" not in str(e.value) and isinstance(e.value, ConfigError)
        assert snapshot(out) == before


def test_the_folder_of_a_song_and_a_file_are_refused(tmp_path):
    paths = make_library(tmp_path / "lib")
    before = snapshot(tmp_path)
    with pytest.raises(PlaylistError, match="beside your audio"):
        write_playlists(str(tmp_path / "lib" / "Rock Band"), songs_of(paths), GENRES)
    with pytest.raises(PlaylistError, match="beside your audio"):  # refused before anything is predicted
        check_playlist_dir(str(tmp_path / "lib"), [paths[-1]])
    with pytest.raises(PlaylistError, match="not a folder"):
        write_playlists(paths[0], songs_of(paths), GENRES)
    assert snapshot(tmp_path) == before


def test_a_rerun_replaces_our_playlists_only(tmp_path):
    paths = make_library(tmp_path / "lib")
    out = tmp_path / "out"
    write_playlists(str(out), songs_of(paths), GENRES)
    assert "jazz.m3u8" in os.listdir(out)
    (out / ".crnn_jax_playlist-abc.tmp").write_text("left by an interrupted run")
    everything_rock = [Song(p, (1.0, 0.0, 0.0), 1.0) for p in paths]
    assert check_playlist_dir(str(out)) == [".crnn_jax_playlist-abc.tmp", "blues.m3u8", "jazz.m3u8", "rock.m3u8"]
    assert write_playlists(str(out), everything_rock, GENRES) == {"rock.m3u8": len(paths)}
    assert os.listdir(out) == ["rock.m3u8"]  # stale genres and the temp file are gone
    assert set(resolved(str(out)).values()) == {"rock.m3u8"}
    lib_before = snapshot(tmp_path / "lib")
    write_playlists(str(out), everything_rock, GENRES)
    assert snapshot(tmp_path / "lib") == lib_before  # the audio is never written


def test_genre_names_stay_inside_the_folder_and_never_collide(tmp_path):
    genres = ("rock/metal", "unsure", "..", "Rock", "rock", "a\\b:c", "")
    names = playlist_names(genres)
    assert len({n.casefold() for n in names} | {"unsure.m3u8"}) == len(genres) + 1
    assert all(os.sep not in n and "/" not in n and not n.startswith(".") for n in names)
    lib = tmp_path / "lib"
    lib.mkdir()
    songs = []
    for i in range(len(genres)):
        (lib / f"s{i}.wav").write_bytes(b"x")
        songs.append(Song(str(lib / f"s{i}.wav"), [1.0 if j == i else 0.0 for j in range(len(genres))], 1.0))
    songs.append(Song(str(lib / "s0.wav"), [0.0] * len(genres), 1.0))  # a duplicate: stays in one list
    (lib / "unsure one.wav").write_bytes(b"x")
    songs.append(Song(str(lib / "unsure one.wav"), [0.1] * len(genres), 1.0))
    out = tmp_path / "out"
    counts = write_playlists(str(out), songs, genres, min_probability=0.5)
    assert sorted(os.listdir(out)) == sorted(counts) == sorted(names + ["unsure.m3u8"])
    assert sorted(os.listdir(tmp_path)) == ["lib", "out"]  # nothing escaped the folder
    found = resolved(str(out))
    assert found[os.path.realpath(lib / "unsure one.wav")] == "unsure.m3u8"
    assert found[os.path.realpath(lib / "s1.wav")] == names[1] != "unsure.m3u8"


@pytest.mark.parametrize("song, min_probability, match", [
    (Song("a.wav", (1.0, 0.0, 0.0), 1.0), 1.5, "min-probability"),
    (Song("a.wav", (0.5, 0.5), 1.0), None, "2 probabilities for 3 genres"),
    (Song("a\nb.wav", (1.0, 0.0, 0.0), 1.0), None, "line break"),
    (Song("a.wav", (float("nan"), 0.0, 0.0), 1.0), None, "not finite"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, song, min_probability, match):
    song = song._replace(path=str(tmp_path / song.path))
    with pytest.raises(PlaylistError, match=match) as e:
        write_playlists(str(tmp_path / "out"), [song], GENRES, min_probability=min_probability)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_writes_one_playlist_entry_per_predicted_song(smoke_run, tmp_path, capsys):
    """`crnn-jax predict --playlists DIR`: every predicted file (names with spaces and non-ASCII letters, in
    nested folders, one undecodable) is in exactly one playlist, each path resolves from DIR, nothing is
    written beside the audio, and --min-probability without --playlists is one line."""
    import soundfile as sf

    from crnn_jax import predict
    from crnn_jax.data import synth

    lib = tmp_path / "Música"
    names = ["Björk – Jóga.wav", "a b/c d.wav", "x/y/z.flac"]
    for i, n in enumerate(names):
        (lib / n).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(lib / n), synth.generate_clip(i, seconds=2.0, sample_rate=22050, seed=0, index=i), 22050)
    (lib / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    before = sorted(p.name for p in lib.rglob("*"))
    out = tmp_path / "playlists"
    code = predict.main(["--workdir", smoke_run, str(lib), "--playlists", str(out)])
    assert code == 1  # the broken file failed, the rest were predicted
    entries = []
    for m3u in out.glob("*.m3u8"):
        lines = m3u.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#EXTM3U"
        entries += [(out / line).resolve() for line in lines if line and not line.startswith("#")]
    assert sorted(entries) == sorted((lib / n).resolve() for n in names)  # each song once, every path resolves
    assert sorted(p.name for p in lib.rglob("*")) == before  # nothing beside the audio
    capsys.readouterr()
    assert predict.main(["--workdir", smoke_run, str(lib), "--min-probability", "0.5"]) == 2
    assert "give --playlists DIR too" in capsys.readouterr().err
