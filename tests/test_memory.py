"""Memory follows the audio: a library of very uneven songs (1 s .. 10 min, wav/flac/ogg/mp3, 44.1 kHz
stereo, junk and hidden folders beside them) trains and predicts, and the training process's peak resident
memory stays within 4 x its int16 audio plus the framework's own footprint (the same command on 9 songs of 2 s).

The long song is the shortest that still tells the two layouts apart: beside bench memory's 21 songs of
1 s .. 1 min, a padded layout (every song a row as long as the longest) of a 10-minute song holds more than
3 x the bound's 4 x the audio (it takes 584 s); its 20-minute mix only doubled that margin. Measured: the
end-to-end layout peaks ~45-70 MiB above the footprint (bound: 183 MiB), a padded copy kept beside ~700 MiB."""

import json
import math
import os

import jax
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from conftest import ROOT
from crnn_jax import predict as predict_lib
from crnn_jax.benchmarks import memory as bench_memory
from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data import folders
from crnn_jax.training import feed
from crnn_jax.data import loaders
from crnn_jax.training import steps


def _env():
    e = dict(os.environ)
    e["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    e["PYTHONWARNINGS"] = "error::DeprecationWarning,error::FutureWarning"
    return e


LONG = ("jazz", 10 * 60, ".wav")  # bench memory's library with a 10-minute mix instead of its 20-minute one


@pytest.mark.slow
def test_peak_memory_follows_the_audio_not_the_longest_song(tmp_path, capsys):
    lib, tiny = str(tmp_path / "lib"), str(tmp_path / "tiny")
    names = bench_memory.make_library(lib, long=LONG)
    bench_memory.make_library(tiny, songs=((2, ".wav"), (2, ".flac"), (2, ".ogg")), long=None)  # 9 x 2 s: the footprint
    audio = bench_memory.audio_bytes(lib, names)
    longest = max(decode.frames_out(os.path.join(lib, n), 22050) for n in names)
    # The bound must be one the padded layout (every song a row as long as the longest) clearly breaks.
    assert 2 * longest * len(names) > 3 * (4 * audio)

    runs = {}
    for name, folder in (("tiny", tiny), ("lib", lib)):
        wd = str(tmp_path / f"wd-{name}")
        rc, peak, out = bench_memory.peak_rss(bench_memory.train_command(folder, wd, str(tmp_path / "cache")),
                                              cwd=ROOT, env=_env(), timeout=600)
        assert rc == 0, out[-3000:]
        runs[name] = (peak, out, wd)
    peak, out, wd = runs["lib"]
    footprint = runs["tiny"][0]
    assert peak <= 4 * audio + footprint, (f"peak {peak / 2**20:.0f} MiB > 4 x {audio / 2**20:.0f} MiB of audio "
                                           f"+ {footprint / 2**20:.0f} MiB footprint")
    # Placement is decided on the real bytes: the songs end to end, no padding.
    assert abs(bench_memory.placement_gib(out) - audio / 2**30) <= 0.006, out
    # Every song and nothing else: not the junk, not the audio in hidden folders.
    with open(os.path.join(wd, "split.json")) as f:
        split = json.load(f)
    assert sorted(sum(split.values(), [])) == names
    assert "ignored 5 other file(s) (.DS_Store, .txt)" in out

    # The cached library is one array of exactly the songs, each the file's decoded samples.
    ds = folders.load_folder(lib, sample_rate=22050, cache=str(tmp_path / "cache"))
    assert isinstance(ds.audio, np.memmap) and ds.audio.nbytes == audio
    for name in ("blues/blues-00.wav", "jazz/jazz-03.mp3"):
        np.testing.assert_array_equal(ds.song(ds.names.index(name)),
                                      data.to_int16(loaders.read_audio(os.path.join(lib, name), 22050)))

    # predict with the workdir's absolute path, on one of the songs (in this process: memory is not measured).
    song = os.path.join(lib, "rock", "rock-02.ogg")
    capsys.readouterr()
    assert predict_lib.main(["--workdir", os.path.abspath(wd), song]) == 0
    pout = capsys.readouterr().out
    assert "rock-02.ogg" in pout and any(g in pout for g in bench_memory.GENRES), pout[-2000:]


def test_the_bench_library_holds_what_it_names(tmp_path):
    """benchmarks/memory.py's library (what the test above and `python -m crnn_jax.benchmarks.memory` measure),
    small: every named song in its format at 44.1 kHz stereo, junk and hidden folders beside them that the
    loader leaves out, and the int16 byte count the bound is made of."""
    lib = str(tmp_path / "lib")
    names = bench_memory.make_library(lib, songs=((1, ".wav"), (2, ".mp3")), long=("jazz", 3, ".flac"))
    assert names == sorted(names) and len(names) == 2 * len(bench_memory.GENRES) + 1
    for name in names:
        info = sf.info(os.path.join(lib, name))
        assert (info.samplerate, info.channels) == (bench_memory.RATE, 2), name
    assert sf.info(os.path.join(lib, "jazz", "jazz-mix.flac")).frames == 3 * bench_memory.RATE
    hidden = [os.path.join(lib, ".Trash", "deleted", "old.wav"), os.path.join(lib, "blues", ".previews", "preview.wav")]
    assert all(os.path.exists(p) for p in hidden) and os.path.exists(os.path.join(lib, "README.txt"))
    audio = bench_memory.audio_bytes(lib, names)
    assert audio == 2 * sum(decode.frames_out(os.path.join(lib, n), 22050) for n in names)
    ds = folders.load_folder(lib, sample_rate=22050, cache=str(tmp_path / "cache"))
    assert sorted(ds.names) == names and ds.audio.nbytes == audio  # the songs, end to end, nothing else
    line = "data placement: on every device (0.04 GiB of int16 audio; budget 2.0 GiB per device)"
    assert bench_memory.placement_gib(line) == 0.04 and bench_memory.placement_gib("no such line") is None
    cmd = bench_memory.train_command(lib, "WD", "CACHE")
    assert cmd[1:3] == ["-m", "crnn_jax.train"] and cmd[cmd.index("--data") + 1] == lib
    assert cmd[cmd.index("--max-steps") + 1] == "2" and cmd[cmd.index("--workdir") + 1] == "WD"


# --- the layout: songs end to end, crops as the padded rows gave them ------------------------------------------
def _uneven(crop):
    """Songs longer and shorter than a crop, the last one short (so a crop runs off the end of the array)."""
    rng = np.random.default_rng(0)
    lengths = np.array([3 * crop + 7, crop // 3, crop, 2 * crop - 1, 1, crop // 2])
    rows = np.zeros((len(lengths), 4 * crop), np.int16)  # the padded layout, zeros past each song
    for i, n in enumerate(lengths):
        rows[i, :n] = rng.integers(-30000, 30000, n)
    ds = data.Dataset(audio=rows, lengths=lengths, labels=np.zeros(len(lengths), np.int32),
                      names=tuple("abcdef"), class_names=("x", "y"), sample_rate=1000)
    songs = np.repeat(np.arange(len(lengths)), 5)
    offsets = np.concatenate([np.linspace(0, max(n - crop, 0), 5).astype(np.int64) for n in lengths])
    return ds, rows, songs, offsets


def test_crops_read_what_padded_rows_gave_and_zeros_past_a_song():
    crop = 50
    ds, rows, songs, offsets = _uneven(crop)
    assert ds.audio.shape == (ds.lengths.sum(),) and ds.audio.nbytes == 2 * ds.lengths.sum()  # nothing padded
    oracle = np.stack([rows[s, o:o + crop] for s, o in zip(songs, offsets)])
    np.testing.assert_array_equal(ds.crops(songs, offsets, crop), oracle)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.song(i), rows[i, :ds.lengths[i]])
    # Offsets past where sampling puts them still never read the next song.
    np.testing.assert_array_equal(ds.crops(np.array([1, 4]), np.array([10, 0]), crop),
                                  np.stack([rows[1, 10:10 + crop], rows[4, :crop]]))


@pytest.mark.parametrize("crop", [50, 400])  # 400: longer than the whole set of songs but one
def test_device_crops_equal_host_crops_even_off_the_end_of_the_array(crop):
    ds, rows, songs, offsets = _uneven(50)
    if crop == 400:
        ds = data.Dataset(audio=rows[1:3], lengths=ds.lengths[1:3], labels=ds.labels[:2], names=("b", "c"),
                          class_names=("x", "y"), sample_rate=1000)
        songs, offsets = np.array([0, 1, 1]), np.array([0, 0, 0])
    on_device = jax.device_put(feed.device_audio(ds, crop))
    got = jax.jit(steps.gather_on_device, static_argnums=3)(on_device, songs.astype(np.int32),
                                                             offsets.astype(np.int32), crop)
    np.testing.assert_array_equal(np.asarray(got), ds.crops(songs, offsets, crop))


@pytest.mark.parametrize("rates", [(44100, 22050), (48000, 22050), (8000, 22050), (44100, 16000)])
def test_block_wise_resampling_equals_one_call_on_the_whole_signal(rates):
    rate, sr = rates
    x = np.random.default_rng(1).standard_normal(20011).astype(np.float32)
    up, down = sr // math.gcd(rate, sr), rate // math.gcd(rate, sr)
    whole = resample_poly(x, up, down)
    for block in (1000, 4096, 20011):
        rs = decode.Resampler(up, down)
        parts = [rs.push(x[i:i + block], i + block >= len(x)) for i in range(0, len(x), block)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_files_decode_block_by_block_to_what_the_whole_file_gives(tmp_path):
    # Stereo, a rate to convert, blocks much shorter than the file: the channel mean resampled in one call.
    path = str(tmp_path / "x.flac")
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (30011, 2))
    sf.write(path, x, 48000)
    pcm, _ = sf.read(path, dtype="float32", always_2d=True)
    whole = resample_poly(pcm.mean(axis=1, dtype=np.float32), 147, 320)
    got = np.concatenate(list(decode.blocks(path, 22050, block_frames=1024)))
    np.testing.assert_array_equal(got, whole)
    assert len(got) == decode.frames_out(path, 22050)  # known from the header before decoding
