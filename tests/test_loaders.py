"""Real-audio loading: formats, channels and rates against analytic tones, folder layouts, the real GTZAN
sample, the decoded-audio cache, every kind of bad input, TFDS (mocked) and training end to end."""

import dataclasses
import hashlib
import json
import os
import re
import tarfile
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, SHARED, run_module
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import folders
from crnn_jax.data import loaders
from crnn_jax.data import tfds as tfds_loader
from crnn_jax.data import splits
from crnn_jax.config import Config
from crnn_jax.data.dataset import DataError

SMOKE = os.path.join(ROOT, "experiments", "smoke.py")
SAMPLE = os.path.join(SHARED, "gtzan-sample")
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="../shared/data not present (a user's clone)")
SR = 22050


def tone(freq, rate, seconds=1.5, amp=0.3):
    """Analytic sine: float64 [round(seconds * rate)]."""
    return amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)


def write(path, x, rate, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(str(path), x, rate, **kw)
    return str(path)


def open_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def peak_hz(x, rate):
    return np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x)


def make_folder(root, genres=GENRES[:3], per_genre=2, exts=(".wav", ".au", ".flac"), seconds=1.0, rate=8000):
    """<root>/<genre>/<genre>.000NN<ext>: genre g, song j is a (220 + 110 g + 20 j) Hz tone."""
    for g, genre in enumerate(genres):
        for j in range(per_genre):
            ext = exts[(g + j) % len(exts)]
            write(os.path.join(root, genre, f"{genre}.{j:05d}{ext}"), tone(220 + 110 * g + 20 * j, rate, seconds),
                  rate, subtype="PCM_16")
    return str(root)


def cfg_for(path, **kw):
    return Config(data=str(path), **{"sample_rate": SR, **kw})


# --- decoding ----------------------------------------------------------------------------------------------
def test_formats_channels_and_rates_match_analytic_tones(tmp_path, capsys):
    lossless = {  # name -> (rate, channels amplitudes, soundfile kwargs)
        "a/one.au": (8000, (0.3,), dict(subtype="PCM_16")),
        "a/two.WAV": (16000, (0.4, 0.2), dict(subtype="PCM_16")),  # stereo, upper-case extension
        "b/three.flac": (44100, (0.3,), {}),
        "b/four.wav": (48000, (0.1, 0.5), dict(subtype="FLOAT")),
    }
    lossy = {"b/five.ogg": 44100, "a/six.mp3": 11025}
    freqs = {}
    for i, (name, (rate, amps, kw)) in enumerate(lossless.items()):
        freqs[name] = 300.0 + 150 * i
        x = np.stack([tone(freqs[name], rate, amp=a) for a in amps], axis=1)  # [frames, channels]
        write(tmp_path / name, x, rate, **kw)
    for i, (name, rate) in enumerate(lossy.items()):
        freqs[name] = 500.0 + 200 * i
        write(tmp_path / name, tone(freqs[name], rate), rate)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "b" / "._three.flac").write_bytes(b"\0\1")  # macOS resource fork: audio extension, not audio

    ds = folders.load_folder(str(tmp_path), sample_rate=SR, cache=str(tmp_path / "cache"))
    err = capsys.readouterr().err
    assert "ignored 3 other file(s) (.DS_Store, ._* (macOS metadata), .txt)" in err
    assert ds.class_names == ("a", "b") and ds.sample_rate == SR
    assert sorted(ds.names) == list(ds.names) and set(ds.names) == set(freqs)
    for i, name in enumerate(ds.names):
        assert ds.labels[i] == ds.class_names.index(name.split("/")[0])
        y = ds.song(i).astype(np.float32) / 32768  # [samples] at SR
        assert abs(len(y) / SR - 1.5) < 0.06, name  # lossy codecs may pad a little
        assert abs(peak_hz(y, SR) - freqs[name]) < 1.0, name
        if name in lossless:  # the resampled tone is the analytic tone at SR; stereo is the channel mean
            amp = np.mean(lossless[name][1])
            ref = tone(freqs[name], SR, amp=amp)[:len(y)]
            np.testing.assert_allclose(y[300:-300], ref[300:-300], atol=2e-3, err_msg=name)


def test_resampling_filters_what_the_new_rate_cannot_hold(tmp_path):
    # A 15 kHz tone at 48 kHz is above 22050 Hz's Nyquist (11025 Hz): an anti-aliased resampler removes it;
    # naive decimation would fold it to 7050 Hz at full amplitude.
    p = write(tmp_path / "hi.wav", tone(15000, 48000) + tone(1000, 48000, amp=0.1), 48000, subtype="PCM_16")
    y = loaders.read_audio(p, SR)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == round(1.5 * SR)
    assert abs(peak_hz(y, SR) - 1000) < 1.0
    np.testing.assert_allclose(np.sqrt(np.mean(y[500:-500] ** 2)), 0.1 / np.sqrt(2), rtol=0.01)


@pytest.mark.parametrize("layout", ["", "genres", os.path.join("Data", "genres_original")])
def test_gtzan_layouts_are_detected(tmp_path, layout, capsys):
    data = tmp_path / "gtzan"
    make_folder(data / layout, per_genre=1, exts=(".au",))
    if layout.startswith("Data"):  # the Kaggle copy: spectrogram images and feature tables beside the audio
        (data / "Data" / "images_original" / "blues").mkdir(parents=True)
        (data / "Data" / "images_original" / "blues" / "blues00000.png").write_bytes(b"png")
        (data / "Data" / "features_30_sec.csv").write_text("x")
    ds = folders.load_folder(str(data), sample_rate=SR, cache=str(tmp_path / "cache"))
    assert ds.names == ("blues/blues.00000.au", "classical/classical.00000.au", "country/country.00000.au")
    assert ds.class_names == GENRES[:3] and list(ds.labels) == [0, 1, 2]
    err = capsys.readouterr().err
    assert os.path.join(str(data), layout).rstrip(os.sep) in err
    assert "ignored" not in err  # the images and csv are outside the genre root, not the data's business


@needs_sample
def test_real_gtzan_sample_loads_bit_exact(tmp_path):
    ds, split = loaders.load(cfg_for(SAMPLE, split="fault-filtered", cache_dir=str(tmp_path)))
    assert len(ds) == 10 and ds.class_names == GENRES and ds.sample_rate == 22050
    assert ds.names == tuple(f"{g}/{g}.00000.wav" for g in GENRES) and list(ds.labels) == list(range(10))
    assert np.all(np.abs(ds.lengths / 22050 - 30) < 0.7)
    for i, name in enumerate(ds.names):  # 22050 Hz mono 16-bit in, so no resampling: rows equal the files
        pcm, rate = sf.read(os.path.join(SAMPLE, name), dtype="int16")
        assert rate == 22050 and np.array_equal(ds.song(i), pcm)
    # Songs end to end, nothing padded: the audio is exactly the files' samples.
    assert ds.audio.shape == (ds.lengths.sum(),) and list(ds.offsets) == [0, *np.cumsum(ds.lengths)[:-1]]
    # The fault-filtered lists put these ten clips in train/valid/test as shipped.
    assert [ds.names[i] for i in split["test"]] == ["hiphop/hiphop.00000.wav", "pop/pop.00000.wav"]
    assert [ds.names[i].split("/")[0] for i in split["train"]] == ["jazz", "reggae", "rock"]


# --- the cache ---------------------------------------------------------------------------------------------
def test_cache_is_reused_rebuilt_on_change_and_never_trusted_when_corrupt(tmp_path, capsys):
    data, cache = make_folder(tmp_path / "data", per_genre=3, seconds=2.0), str(tmp_path / "cache")
    before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(data) for f in fs}
    first = folders.load_folder(data, sample_rate=SR, cache=cache)
    assert "decoding 9 files" in capsys.readouterr().err
    assert isinstance(first.audio, np.memmap)  # decoded straight into the cache file, then mapped
    first = dataclasses.replace(first, audio=np.array(first.audio))  # a copy: the test damages the file
    (npy,) = [os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".audio.npy")]
    meta = npy.replace(".audio.npy", ".meta.npz")

    t0 = time.time()
    again = folders.load_folder(data, sample_rate=SR, cache=cache)
    assert time.time() - t0 < 2.0 and "(cached" in capsys.readouterr().err
    assert isinstance(again.audio, np.memmap)  # read back lazily: only sliced pages are read
    for f in ("audio", "lengths", "labels", "names", "class_names"):
        assert np.array_equal(getattr(again, f), getattr(first, f)), f
    del again

    for path in (npy, meta):  # a half-written or damaged cache file, audio or metadata
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        rebuilt = folders.load_folder(data, sample_rate=SR, cache=cache)
        err = capsys.readouterr().err
        assert "is unusable" in err and "rebuilding" in err and "decoding 9 files" in err, path
        assert np.array_equal(rebuilt.audio, first.audio)

    # A cache that loads but does not match the folder (here: names from elsewhere) is not trusted either.
    with np.load(meta) as z:
        z = dict(z)
    z["names"] = np.array([n.replace("blues", "bluez") for n in z["names"]])
    np.savez(meta, **z)
    assert np.array_equal(folders.load_folder(data, sample_rate=SR, cache=cache).names, first.names)
    assert "do not match" in capsys.readouterr().err

    # Touching a file (same content, new mtime) rebuilds the folder's entry in place; another sample rate
    # is another entry.
    st = os.stat(os.path.join(data, "blues", "blues.00000.wav"))
    os.utime(os.path.join(data, "blues", "blues.00000.wav"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    folders.load_folder(data, sample_rate=SR, cache=cache)
    folders.load_folder(data, sample_rate=16000, cache=cache)
    assert capsys.readouterr().err.count("decoding 9 files") == 2
    assert len([f for f in os.listdir(cache) if f.endswith(".audio.npy")]) == 2
    assert len(os.listdir(cache)) == 4  # .audio.npy and .meta.npz of each: no temporaries left
    # The data folder itself was never written to (only the touched file's mtime moved).
    after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(data) for f in fs}
    assert set(after) == set(before) and sum(after[k] != before[k] for k in after) == 1


def test_a_changed_folder_replaces_its_cache_entry(tmp_path, capsys):
    # The cache never grows with the states of a folder: one entry per folder and sample rate.
    data, cache = make_folder(tmp_path / "data", per_genre=2), str(tmp_path / "cache")
    folders.load_folder(data, sample_rate=SR, cache=cache)
    entries = sorted(os.listdir(cache))
    write(os.path.join(data, "blues", "blues.00000.wav"), tone(999, 8000, 3.0), 8000, subtype="PCM_16")
    changed = folders.load_folder(data, sample_rate=SR, cache=cache)
    assert "the folder changed since it was cached" in capsys.readouterr().err
    assert sorted(os.listdir(cache)) == entries and len(entries) == 2  # the same .audio.npy and .meta.npz
    i = changed.names.index("blues/blues.00000.wav")
    assert changed.lengths[i] == 3 * SR and abs(peak_hz(changed.song(i) / 32768, SR) - 999) < 1
    again = folders.load_folder(data, sample_rate=SR, cache=cache)
    assert "(cached" in capsys.readouterr().err and np.array_equal(again.audio, changed.audio)


# --- bad files -----------------------------------------------------------------------------------------------
def bad_files(folder):
    """name -> expected reason, written into <folder>/bad/ (plus fine files in <folder>/good and /bad)."""
    wav = write(folder / "tmp" / "ok.wav", tone(440, 8000, 2.0), 8000, subtype="PCM_16")
    whole = open_bytes(wav)
    bad = folder / "bad"
    bad.mkdir(parents=True)
    (bad / "garbage.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    (bad / "cut.wav").write_bytes(whole[:len(whole) // 2])
    (bad / "cut_header.wav").write_bytes(whole[:30])
    (bad / "empty.wav").write_bytes(b"")
    sf.write(str(bad / "no_samples.wav"), np.zeros(0, np.float32), 8000)
    sf.write(str(bad / "silent.flac"), np.zeros(8000, np.float32), 8000)
    x = tone(440, 8000).astype(np.float32)
    x[100] = np.nan
    sf.write(str(bad / "nan.wav"), x, 8000, subtype="FLOAT")
    x[100] = np.inf
    sf.write(str(bad / "inf.wav"), x, 8000, subtype="FLOAT")
    os.remove(wav)
    os.rmdir(folder / "tmp")
    write(bad / "fine.wav", tone(300, 8000), 8000, subtype="PCM_16")
    write(folder / "good" / "fine.au", tone(500, 8000), 8000, subtype="PCM_16")
    return {"garbage.wav": "unreadable audio", "cut.wav": "truncated", "cut_header.wav": "unreadable audio",
            "empty.wav": "unreadable audio", "no_samples.wav": "no audio (0 samples)",
            "silent.flac": "silent", "nan.wav": "NaN or infinite", "inf.wav": "NaN or infinite"}


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, capsys):
    expected = bad_files(tmp_path / "data")
    ds = folders.load_folder(str(tmp_path / "data"), sample_rate=SR, cache=str(tmp_path / "cache"))
    assert ds.names == ("bad/fine.wav", "good/fine.au")
    # The room reserved for the bad files is given back: the good songs lie back to back, intact.
    assert ds.audio.shape == (ds.lengths.sum(),) and list(ds.offsets) == [0, ds.lengths[0]]
    for i, name in enumerate(ds.names):
        assert np.array_equal(ds.song(i), data_lib.to_int16(loaders.read_audio(str(tmp_path / "data" / name), SR)))
    err = capsys.readouterr().err
    for name, why in expected.items():
        (line,) = [l for l in err.splitlines() if l.startswith(f"data: warning: skipping bad/{name}: ")]
        assert why in line, line
    assert f"skipped {len(expected)} of {len(expected) + 2} files" in err
    # From the cache, the skipped files are still reported (not silently forgotten).
    folders.load_folder(str(tmp_path / "data"), sample_rate=SR, cache=str(tmp_path / "cache"))
    assert f"{len(expected)} bad file(s) were skipped" in capsys.readouterr().err

    for name, why in expected.items():  # read_audio itself: one DataError naming the file
        with pytest.raises(DataError, match=re.escape(why)) as e:
            loaders.read_audio(str(tmp_path / "data" / "bad" / name), SR)
        assert name in str(e.value) and "\n" not in str(e.value)


@needs_sample
def test_a_truncated_real_clip_is_refused(tmp_path):
    whole = open_bytes(os.path.join(SAMPLE, "jazz", "jazz.00000.wav"))
    (tmp_path / "jazz.00000.wav").write_bytes(whole[:len(whole) * 2 // 3])
    with pytest.raises(DataError, match=r"jazz\.00000\.wav: truncated \(the header declares"):
        loaders.read_audio(str(tmp_path / "jazz.00000.wav"), SR)


def test_read_audio_arguments(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        loaders.read_audio(str(tmp_path / "nope.wav"), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        loaders.read_audio(str(tmp_path / "nope.wav"), 0)


# --- bad folders ---------------------------------------------------------------------------------------------
def bad_folder(tmp_path, kind):
    """A folder of the given kind -> (path, expected message)."""
    d = tmp_path / kind
    if kind == "missing":
        return str(d), "no such folder"
    if kind == "a file":
        return write(d / "song.wav", tone(440, 8000), 8000), "is a file"
    if kind == "empty":
        (d / "blues").mkdir(parents=True)
        (d / "blues" / "readme.txt").write_text("x")
        return str(d), (f"no audio files ({', '.join(folders.AUDIO_EXTS)}) in it or its sub-folders; found only 1 "
                        f"other file(s) (.txt)")
    if kind == "one genre":
        make_folder(d / "genres", genres=("blues",))
        return str(d), "holds audio of only one genre (blues); it needs at least 2 genres"
    if kind == "no genre folders":
        write(d / "a.wav", tone(440, 8000), 8000)
        write(d / "b.wav", tone(440, 8000), 8000)
        return str(d), "audio files but no genre sub-folders"
    if kind == "all bad":
        (d / "a").mkdir(parents=True)
        (d / "b").mkdir()
        (d / "a" / "x.wav").write_bytes(b"junk")
        (d / "b" / "y.wav").write_bytes(b"junk")
        return str(d), "none of its 2 audio files could be used"
    if kind == "one good genre":
        make_folder(d, genres=("a",))
        (d / "b").mkdir()
        (d / "b" / "y.wav").write_bytes(b"junk")
        return str(d), "only one genre (a) has usable songs"
    if kind == "two formats":
        make_folder(d, exts=(".wav",))
        write(d / "blues" / "blues.00001.au", tone(440, 8000), 8000)
        return str(d), "blues/blues.00001.au and blues/blues.00001.wav look like one song in two formats"
    raise AssertionError(kind)


BAD_FOLDERS = ["missing", "a file", "empty", "one genre", "no genre folders", "all bad", "one good genre",
               "two formats"]


@pytest.mark.parametrize("kind", BAD_FOLDERS)
def test_bad_folders_are_one_line_errors(tmp_path, kind):
    path, msg = bad_folder(tmp_path, kind)
    with pytest.raises(DataError) as e:
        loaders.load(cfg_for(path, cache_dir=str(tmp_path / "cache")))
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "one genre"])
def test_train_cli_reports_bad_data_in_one_line(tmp_path, kind):
    path, msg = bad_folder(tmp_path, kind)
    p = run_module("crnn_jax.train", "--config", SMOKE, "--data", path, "--workdir", str(tmp_path / "wd"),
                   check=False)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    (line,) = [l for l in p.stderr.splitlines() if l.startswith("crnn_jax.train: error:")]
    assert path in line and msg.split(";")[0] in line


# --- TensorFlow Datasets ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tfds_gtzan_under_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra is not installed")
    pytest.importorskip("tensorflow", reason="the [tfds] extra is not installed")
    with tfds.testing.mock_data(num_examples=20):
        ds, split = loaders.load(cfg_for("tfds:gtzan", sample_rate=22050))
        half = tfds_loader.load_tfds("tfds:gtzan", sample_rate=11025)
        examples = tfds.as_numpy(tfds.load("gtzan", split="train"))
        oracle = [(int(ex["label"]), np.asarray(ex["audio"])) for ex in examples]
    assert ds.class_names == GENRES and len(ds) == 20 and ds.sample_rate == 22050
    # Mock file names are random strings, so songs are numbered per genre, in names no GTZAN list can match.
    assert len(set(ds.names)) == 20 and all(re.fullmatch(r"[a-z]+/example\.\d{5}", n) for n in ds.names)
    with pytest.raises(DataError, match="none of the 20 songs"):
        splits.make_split(cfg_for("tfds:gtzan", split="fault-filtered"), ds)
    assert all(GENRES[l] == n.split("/")[0] for l, n in zip(ds.labels, ds.names))
    # Same examples, same audio (as int16), whatever TFDS's order.
    got = sorted((int(l), ds.song(i).tobytes()) for i, l in enumerate(ds.labels))
    want = sorted((l, np.clip(a, -32768, 32767).astype(np.int16).tobytes()) for l, a in oracle)
    assert got == want
    assert np.all(np.abs(half.lengths - np.ceil(ds.lengths / 2)) <= 1)  # resampled to 11025 Hz
    assert sum(len(v) for v in split.values()) == 20


def test_tfds_gtzan_from_a_manual_archive(tmp_path, monkeypatch):
    """The documented route for the dead download link: genres.tar.gz in <data_dir>/downloads/manual/."""
    for module in ("tensorflow_datasets", "tensorflow", "pydub", "importlib_resources"):
        pytest.importorskip(module, reason="the [tfds] extra is not installed")
    with pytest.raises(DataError, match="its download link is dead"):  # fast: no archive, no download attempt
        tfds_loader.load_tfds(f"tfds:gtzan@{tmp_path / 'none'}", sample_rate=SR)
    songs = {"blues/blues.00000.wav": 300.0, "rock/rock.00003.wav": 600.0}
    for name, f in songs.items():
        write(tmp_path / "src" / "genres" / name, tone(f, 22050, 0.5), 22050, subtype="PCM_16")
    archive = tmp_path / "tfds" / "downloads" / "manual" / "genres.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "genres", arcname="genres")
    spec, cache = f"tfds:gtzan@{tmp_path / 'tfds'}", str(tmp_path / "cache")
    with pytest.raises(DataError, match="must be GTZAN's original archive"):  # TFDS checks it is the original
        tfds_loader.load_tfds(spec, sample_rate=SR, cache=cache)
    blob = archive.read_bytes()
    monkeypatch.setattr(tfds_loader, "GTZAN_ARCHIVE", (tfds_loader.GTZAN_ARCHIVE[0], str(len(blob)),
                                                   hashlib.sha256(blob).hexdigest(), "genres.tar.gz"))
    ds = tfds_loader.load_tfds(spec, sample_rate=SR, cache=cache)
    assert ds.names == tuple(songs) and ds.class_names == GENRES and list(ds.labels) == [0, 9]
    for i, name in enumerate(ds.names):
        pcm, _ = sf.read(tmp_path / "src" / "genres" / name, dtype="int16")
        assert np.array_equal(ds.song(i), pcm)


def test_tfds_without_the_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n.startswith("tensorflow") else real(n, *a))
    with pytest.raises(DataError, match=re.escape("needs tensorflow-datasets and tensorflow: pip install -e")):
        loaders.load(cfg_for("tfds:gtzan"))


def test_tfds_other_names_are_refused():
    with pytest.raises(DataError, match="only tfds:gtzan"):
        tfds_loader.load_tfds("tfds:mnist", sample_rate=SR)


# --- training end to end ----------------------------------------------------------------------------------
def check_run(workdir, n_test, names=None):
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(workdir, "split.json")) as f:
        split = json.load(f)
    assert results["n_test"] == n_test == len(results["test_songs"]) == len(split["test"])
    parts = [set(split[k]) for k in ("train", "valid", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    if names is not None:
        assert set().union(*parts) <= set(names)
    return results


@pytest.mark.slow
def test_train_end_to_end_from_generated_au_wav_flac_folder(tmp_path):
    data = make_folder(tmp_path / "genres", genres=GENRES, per_genre=5, seconds=1.5)
    wd = str(tmp_path / "wd")
    run_module("crnn_jax.train", "--config", SMOKE, "--data", data, "--workdir", wd, "--max-steps", "4",
               "--cache-dir", str(tmp_path / "cache"))
    # Random split, 5 songs per genre: round(0.2 * 5) = 1 test song per genre.
    results = check_run(wd, 10)
    assert sorted(s.split("/")[0] for s in results["test_songs"]) == list(GENRES)


@pytest.mark.slow
@needs_sample
def test_train_end_to_end_from_the_real_sample(tmp_path):
    """Plumbing on real audio, not a measurement: the ten sample clips split by the fault-filtered lists
    (3 train, 5 valid, 2 test; no song on two sides), a few smoke steps, a report."""
    wd = str(tmp_path / "wd")
    p = run_module("crnn_jax.train", "--config", SMOKE, "--data", SAMPLE, "--split", "fault-filtered",
                   "--workdir", wd, "--max-steps", "4")
    assert "split fault-filtered: train 3, valid 5, test 2" in p.stdout + p.stderr
    check_run(wd, 2, [f"{g}/{g}.00000.wav" for g in GENRES])


@pytest.mark.parametrize("save", ["npy", "npz"])
def test_a_failed_cache_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, save):
    from crnn_jax.data import dataset as data_lib

    path = str(tmp_path / f"cache.{save}")
    write = (lambda a: data_lib.save_npy_atomic(path, a)) if save == "npy" else \
        (lambda a: data_lib.save_npz_atomic(path, audio=a))
    write(np.arange(4))
    with open(path, "rb") as f:
        old = f.read()

    def full_disk(file, *a, **k):  # writes a little, then fails as a full disk would
        if isinstance(file, str):
            with open(file, "wb") as f:
                f.write(b"partial")
        else:
            file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save" if save == "npy" else "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write(np.arange(8))
    with open(path, "rb") as f:
        assert f.read() == old
    assert os.listdir(tmp_path) == [f"cache.{save}"]


# --- the one folder walk ---------------------------------------------------------------------------------
def test_predict_and_the_loader_walk_folders_alike(tmp_path, capsys):
    lib = tmp_path / "music"
    deep = os.path.join(*[f"d{i}" for i in range(1, 9)])  # 8 levels down: the last level walked
    songs = ["x.wav", os.path.join("jazz", "live", "c.au"), os.path.join("rock", "B.FLAC"),
             os.path.join("rock", "a.wav"), os.path.join(deep, "deep.wav")]
    for s in songs + [os.path.join(".hidden", "e.wav"), os.path.join("__MACOSX", "rock", "a.wav"),
                      os.path.join(deep, "d9", "deeper.wav")]:
        write(lib / s, tone(440, 8000, 0.5), 8000, subtype="PCM_16")
    for junk in ("README.txt", "LICENSE", ".DS_Store", os.path.join("rock", "cover.jpg"),
                 os.path.join("rock", "._a.wav")):
        (lib / junk).write_bytes(b"junk")
    (tmp_path / "named.xyz").write_bytes(b"junk")
    files, skipped = folders.audio_files([str(lib), str(tmp_path / "named.xyz")])
    # Walk order: a folder's files (sorted) before its sub-folders (sorted); a named file kept as named.
    assert files == [str(lib / s) for s in (songs[0], songs[4], songs[1], songs[2], songs[3])] + [
        str(tmp_path / "named.xyz")]
    assert skipped == {".txt": 1, "(no extension)": 1, ".jpg": 1}  # hidden files are not counted
    # The loader's songs are the same walk's audio files (the one at the top is outside any genre).
    groot, found = folders.find_songs(str(lib))
    assert groot == str(lib) and {os.path.join(groot, s) for s in found} == set(files[1:-1])
    err = capsys.readouterr().err
    assert "ignored 5 other file(s) ((no extension), .DS_Store, ._* (macOS metadata), .jpg, .txt)" in err
    assert "ignored 1 audio file(s) directly in" in err
