"""Decoding a folder into the cache on every core (crnn_jax.data.ingest): a parallel ingest writes the cache a
serial one writes, byte for byte; a bad file costs that file only; a dead worker is one line; the worker
count; the progress report; the in-memory fallback; and the ingest benchmark's numbers agree with each other."""

import io
import json
import os

import numpy as np
import pytest

from crnn_jax import bench
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import decode
from crnn_jax.data import folders
from crnn_jax.data import ingest
from crnn_jax.errors import ConfigError, DataError
from test_loaders import SR, bad_files, make_folder, open_bytes, tone, write


def library(root):
    """Good songs in 4 genres and 5 formats (8 kHz mono PCM, 44.1 kHz stereo ogg/mp3) beside bad ones
    (test_loaders.bad_files: bad/, good/) -> the number of bad files."""
    make_folder(root, per_genre=3)
    for j, ext in enumerate((".ogg", ".mp3")):
        x = np.stack([tone(330 + 50 * j, 44100, 2.0), tone(440, 44100, 2.0, amp=0.1)], axis=1)  # [frames, 2]
        write(root / "jazz" / f"jazz.{j:05d}{ext}", x, 44100)
    return len(bad_files(root))


def entry_files(cache):
    (npy,) = [os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".audio.npy")]
    return npy, npy.replace(".audio.npy", ".meta.npz")


@pytest.mark.slow
def test_a_parallel_ingest_writes_the_same_cache_as_a_serial_one(tmp_path, capsys):
    n_bad = library(tmp_path / "data")
    caches = {w: str(tmp_path / f"cache{w}") for w in (1, 2)}
    loaded, errs = {}, {}
    for w, cache in caches.items():
        loaded[w] = folders.load_folder(str(tmp_path / "data"), sample_rate=SR, cache=cache, workers=w)
        errs[w] = capsys.readouterr().err
    assert "in this process" in errs[1] and "with 2 processes" in errs[2]
    (npy1, meta1), (npy2, meta2) = entry_files(caches[1]), entry_files(caches[2])
    assert len(os.listdir(caches[2])) == 2  # the entry's two files: no temporary left behind
    assert open_bytes(npy1) == open_bytes(npy2)
    with np.load(meta1) as a, np.load(meta2) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            if k != "audio_file":  # the (inode, size, mtime) of each entry's own audio file
                assert np.array_equal(a[k], b[k]), k
        assert len(a["skipped_names"]) == n_bad and len(a["names"]) == 3 * 3 + 2 + 2  # make_folder, jazz, bad_files
    # The bad files were skipped in the workers, each with its one warning, in song order either way.
    skips = {w: [line for line in err.splitlines() if "warning: skipping" in line] for w, err in errs.items()}
    assert len(skips[2]) == n_bad and skips[1] == skips[2]
    assert loaded[1].names == loaded[2].names and np.array_equal(loaded[1].audio, loaded[2].audio)
    # The parallel entry is a cache entry like any other: read back, not decoded again.
    again = folders.load_folder(str(tmp_path / "data"), sample_rate=SR, cache=caches[2], workers=2)
    assert "(cached" in capsys.readouterr().err and np.array_equal(again.audio, loaded[1].audio)


@pytest.mark.slow
def test_a_worker_that_dies_is_one_line():
    names = [f"song{i}.wav" for i in range(6)]
    with ingest.Pool(2) as p:
        assert sorted(p.each(pow, [(2, i) for i in range(6)], names)) == [(i, 2 ** i) for i in range(6)]
        with pytest.raises(DataError) as e:
            list(p.each(os._exit, [(1,)] * 6, names))  # every worker dies on its first call
    msg = str(e.value)
    # 2 workers, 1 call queued: the culprit is among the first 3 not done, and they are named.
    assert msg.startswith("a decoding process died") and "one of: song0.wav, song1.wav, song2.wav;" in msg
    assert "\n" not in msg and "song3" not in msg


def test_decode_song_returns_a_bad_file_and_raises_a_failed_write(tmp_path, monkeypatch):
    path = write(tmp_path / "a.wav", tone(440, 8000, 1.0), 8000, subtype="PCM_16")
    want = data_lib.to_int16(np.concatenate(list(decode.blocks(path, SR))))
    sink = data_lib.SampleSink(None, 2 * SR)
    assert ingest.decode_song(sink, path, SR, 7, 2 * SR - 7) == (len(want), "")
    assert np.array_equal(sink.array[7:7 + len(want)], want) and not sink.array[:7].any()
    # Never past its room: a file that decodes longer than its header said fills its room and stops.
    short = data_lib.SampleSink(None, 200)
    assert ingest.decode_song(short, path, SR, 0, 100) == (100, "") and np.array_equal(short.array[:100], want[:100])
    assert not short.array[100:].any()
    # A header that does not read, and a decoder failing in a way decode.py does not translate: that
    # file's one line, returned (never raised across a pool).
    (tmp_path / "junk.wav").write_bytes(b"RIFF junk")
    n, why = ingest.header(str(tmp_path / "junk.wav"), SR)
    assert n == 0 and why.startswith(f"{tmp_path / 'junk.wav'}: unreadable audio")

    def exploding(*_):
        yield np.zeros(10, np.float32)
        raise RuntimeError("codec exploded\non two lines")

    monkeypatch.setattr(decode, "blocks", exploding)
    why = f"{path}: cannot be decoded (RuntimeError: codec exploded on two lines)"
    assert ingest.decode_song(sink, path, SR, 0, 100) == (0, why)
    monkeypatch.undo()

    class FullDisk(data_lib.SampleSink):
        def write(self, pos, x):
            raise OSError(28, "No space left on device")

    # A write that fails is no fault of the file: it fails the cache (load_folder then decodes into memory).
    with pytest.raises(OSError, match="No space left"):
        ingest.decode_song(FullDisk(None, 2 * SR), path, SR, 0, 2 * SR)


def test_the_worker_count(monkeypatch):
    monkeypatch.setattr(ingest, "cores", lambda: 4)
    auto = ingest.AUTO_BYTES
    assert ingest.n_workers(0, 100, auto - 1) == 1  # a small folder is not worth starting processes for
    assert ingest.n_workers(0, 100, 2 * auto) == 2 and ingest.n_workers(0, 100, 100 * auto) == 4
    assert ingest.n_workers(0, 3, 100 * auto) == 3  # never more than one per file
    assert ingest.n_workers(3, 100, 1) == 3 and ingest.n_workers(8, 2, 1) == 2  # as asked, up to the files
    assert ingest.n_workers(1, 100, 100 * auto) == 1
    with ingest.Pool(1) as p:  # one worker: calls run here, no pool
        assert p.ex is None and list(p.each(pow, [(2, 3)], ["x"])) == [(0, 8)]
    with pytest.raises(ConfigError, match="--workers must be >= 0"):
        ingest.n_workers(-1, 5, 1)
    assert ingest.cores() >= 1


def test_in_memory_fallback_uses_threads_and_gives_the_same_songs(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_genre=3)
    serial = folders.load_folder(data, sample_rate=SR, cache=str(tmp_path / "cache"), workers=1)
    (tmp_path / "a_file").write_text("not a folder")  # a cache dir that cannot be made
    capsys.readouterr()
    mem = folders.load_folder(data, sample_rate=SR, cache=str(tmp_path / "a_file"), workers=2)
    err = capsys.readouterr().err
    assert "decoding into memory" in err and err.count("decoding 9 files") == 1 and "with 2 threads" in err
    assert "cached after this run" not in err
    assert not isinstance(mem.audio, np.memmap) and mem.names == serial.names
    assert np.array_equal(mem.audio, serial.audio)


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(tmp_path, monkeypatch, terminal):
    data = make_folder(tmp_path / "data", per_genre=2)
    err = io.StringIO()
    err.isatty = lambda: terminal
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(ingest, "LOG_EVERY", -1.0)  # a log line after every file
    folders.load_folder(data, sample_rate=SR, cache=str(tmp_path / "cache"), workers=1)
    text = err.getvalue()
    assert ("\rdata: decoding:   0%|" in text and "/6 [" in text) == terminal  # tqdm's bar, drawn in place
    assert ("data: decoded 1/6 files" in text) == (not terminal)
    assert "data: 6 songs, 3 genres" in text


@pytest.mark.slow
def test_ingest_bench_reports_numbers_that_agree(tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "ingest.json"
    assert bench.main(["ingest", str(lib), "--make", "8", "--seconds", "2", "--workers", "1,2",
                       "--json", str(out)]) == 0
    songs = [os.path.join(g, f) for g in sorted(os.listdir(lib)) if not g.startswith(".")
             for f in os.listdir(lib / g)]
    assert len(songs) == 8 and {os.path.splitext(s)[1] for s in songs} >= {".wav", ".flac", ".ogg", ".mp3"}
    assert all(os.stat(lib / s).st_nlink == 2 for s in songs)  # hard links to the sources, not copies
    r = json.loads(out.read_text())
    one, two = r["runs"]
    assert r["files"] == 8 and (one["workers"], two["workers"]) == (1, 2) and one["songs"] == two["songs"] == 8
    assert one["audio_h"] == two["audio_h"] == pytest.approx(8 * 2 / 3600, rel=0.05)
    for run in (one, two):
        assert run["hours_per_min"] == pytest.approx(run["audio_h"] / run["wall_s"] * 60)
        assert run["hours_per_cpu_min"] == pytest.approx(run["audio_h"] / run["cpu_s"] * 60)
        assert 0 < run["parent_before_mib"] <= run["parent_peak_mib"] and run["total_peak_mib"] > 0
    assert one["ratio"] == 1 and two["ratio"] == pytest.approx(two["hours_per_min"] / one["hours_per_min"])
    assert one["worker_peak_mib"] == 0 < two["worker_peak_mib"] < two["total_peak_mib"]  # one worker: no pool
    assert "| 2 |" in capsys.readouterr().out
    # --make never writes into a folder that holds files (a user's library).
    assert bench.main(["ingest", str(lib), "--make", "8"]) == 2
    assert capsys.readouterr().err.strip() == f"crnn_jax.bench: error: --make: {lib} is not empty; name a new " \
                                              f"folder (a user's files are never touched)"
