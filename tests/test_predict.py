"""predict.py on conftest's smoke model (trained once per session): agreement with the Evaluator, bounded batches,
the CLI's outputs, and one clear line for every kind of bad workdir or file."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import soundfile as sf

from conftest import edit_json, snapshot
from crnn_jax.data import dataset as data_lib
from crnn_jax.errors import ConfigError
from crnn_jax import model as model_lib
from crnn_jax import predict as predict_lib
from crnn_jax.training import report
from crnn_jax.training import steps as steps_lib
from crnn_jax.data import synth
from crnn_jax.training import evaluator
from crnn_jax.inference import predictor as predictor_lib



@pytest.fixture(scope="module")
def run_dir(smoke_run):
    return smoke_run


@pytest.fixture(scope="module")
def predictor(run_dir):
    return predictor_lib.load_model(run_dir, batch_size=4)


@pytest.fixture(scope="module")
def songs(tmp_path_factory, predictor):
    """16-bit wavs of synthetic music at the model's rate: lengths around the window edge cases."""
    d = tmp_path_factory.mktemp("songs")
    sr, crop = predictor.sample_rate, predictor.cfg.crop_samples
    # 0.6 crop: one padded window; 3.7: three windows and an end-aligned fourth; 7.2: tail too short for one.
    paths = []
    for i, crops in enumerate((0.6, 3.7, 7.2)):
        x = synth.generate_clip(i * 3, seconds=crops * crop / sr, sample_rate=sr, seed=11, index=i)
        paths.append(str(d / f"song{i}.wav"))
        sf.write(paths[-1], x, sr, subtype="PCM_16")
    return paths



def test_prediction_matches_the_evaluator_song_score(predictor, songs, run_dir, monkeypatch):
    before = snapshot(run_dir)
    with open(os.path.join(run_dir, "classes.json")) as f:
        classes = json.load(f)["class_names"]
    cfg = predictor.cfg
    audio = [predictor_lib.read_song(p, cfg.sample_rate) for p in songs]
    results = [predictor.predict(a) for a in audio]
    for res in results:
        probs = [t["probability"] for t in res["top"]]
        assert len(res["top"]) == 3 and {t["genre"] for t in res["top"]} <= set(classes)
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
        assert set(res["probabilities"]) == set(classes)
        assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)  # softmax head
        assert max(res["probabilities"].values()) == probs[0]

    # The same songs as a Dataset through evaluator.Evaluator (pmap, int16 rows, its own batching).
    lengths = np.array([a.size for a in audio])
    rows = np.zeros((len(audio), max(lengths.max(), cfg.crop_samples)), np.int16)
    for i, a in enumerate(audio):
        rows[i, :a.size] = data_lib.to_int16(a)
    ds = data_lib.Dataset(audio=rows, lengths=lengths, labels=np.zeros(len(audio), np.int32),
                          names=tuple(songs), class_names=tuple(classes), sample_rate=cfg.sample_rate)
    seen = {}
    real = report.evaluate_scores

    def capture(window_logp, window_song, song_ids, *a, **k):
        seen.update(logp=window_logp, window_song=window_song, songs=song_ids)
        return real(window_logp, window_song, song_ids, *a, **k)

    monkeypatch.setattr(evaluator.report, "evaluate_scores", capture)
    net = model_lib.build_model(cfg, len(classes), axis_name=steps_lib.AXIS)
    p_eval = steps_lib.parallel(steps_lib.make_eval_step(net, head=cfg.head, gather=True), state_out=False)
    ev = evaluator.Evaluator(cfg, ds, p_eval, jax.local_device_count())(
        steps_lib.place_state(predictor.state), np.arange(len(audio)))
    song_logp = report.song_log_probs(seen["logp"], seen["window_song"], seen["songs"])  # [songs, classes]
    assert [r["windows"] for r in results] == np.bincount(seen["window_song"]).tolist() == [1, 4, 7]
    for i, res in enumerate(results):
        np.testing.assert_allclose(res["log_probs"], song_logp[i], atol=2e-5)
        p = np.exp(song_logp[i] - np.logaddexp.reduce(song_logp[i]))
        np.testing.assert_allclose([res["probabilities"][c] for c in classes], p, atol=2e-5)
        assert classes.index(res["top"][0]["genre"]) == ev["song_predictions"][i]
    assert snapshot(run_dir) == before  # predicting wrote nothing into the workdir


def test_long_song_goes_through_in_bounded_batches(predictor, tmp_path, monkeypatch):
    sr, crop, b = predictor.sample_rate, predictor.cfg.crop_samples, predictor.batch_size
    path = str(tmp_path / "long.wav")
    # 40 windows in 10 calls of 4: long enough that all at once would be ten batches' worth.
    sf.write(path, synth.generate_clip(9, seconds=40.0, sample_rate=sr, seed=3, index=0), sr, subtype="PCM_16")
    calls, gathered = [], []
    real_forward, real_gather = predictor._forward, evaluator.song_crops
    monkeypatch.setattr(predictor, "_forward", lambda crops: calls.append(crops.shape) or real_forward(crops))
    monkeypatch.setattr(evaluator, "song_crops", lambda a, o, c: gathered.append(len(o)) or real_gather(a, o, c))
    res = predictor.predict(predictor_lib.read_song(path, sr))
    n_windows = 40 * sr // crop
    assert res["windows"] == n_windows and res["seconds"] == pytest.approx(40.0)
    assert len(calls) == -(-n_windows // b) and all(shape == (b, crop) for shape in calls)
    assert max(gathered) <= b  # the host never cut more than one batch of windows at a time
    assert np.isfinite(res["log_probs"]).all()
    assert predictor._eval._cache_size() == 1  # songs of every length share one compiled forward

    # Batched = all at once: a shorter song through batches of 3 (the last one padded) and through one call.
    x = synth.generate_clip(2, seconds=8.0 * crop / sr, sample_rate=sr, seed=3, index=1)
    one_go = predictor_lib.Predictor(predictor.cfg, predictor.class_names, predictor.state, batch_size=8)
    in_threes = predictor_lib.Predictor(predictor.cfg, predictor.class_names, predictor.state, batch_size=3)
    a, b3 = one_go.predict(x), in_threes.predict(x)
    assert a["windows"] == b3["windows"] == 8
    np.testing.assert_allclose(b3["window_probs"], a["window_probs"], atol=1e-5)
    np.testing.assert_allclose(b3["log_probs"], a["log_probs"], atol=1e-5)
    assert not np.allclose(a["window_probs"][0], a["window_probs"][-1])  # windows really differ


def test_sigmoid_head_reports_each_genres_geometric_mean(predictor):
    # Untrained weights are enough: the claim is about how window outputs become song probabilities.
    cfg = predictor.cfg.replace(head="sigmoid")
    net = model_lib.build_model(cfg, len(predictor.class_names))
    state = steps_lib.create_state(net, steps_lib.make_optimizer(cfg, 1), cfg.crop_samples, seed=1)
    p = predictor_lib.Predictor(cfg, predictor.class_names, state, batch_size=4)
    x = synth.generate_clip(4, seconds=5.7 * cfg.crop_samples / cfg.sample_rate, sample_rate=cfg.sample_rate,
                            seed=2, index=0)
    res = p.predict(x, top=20)
    w = res["window_probs"]  # [W, C] per-window sigmoid outputs, each in (0, 1), rows not normalised
    assert res["windows"] == 6 and len(res["top"]) == len(predictor.class_names)
    assert not np.allclose(w.sum(1), 1.0)
    np.testing.assert_allclose([res["probabilities"][c] for c in p.class_names], np.exp(np.log(w).mean(0)),
                               rtol=1e-5)


def test_json_and_plot(run_dir, songs, tmp_path, capsys):
    assert predict_lib.main(["--workdir", run_dir, *songs[:2], "--json", "--top", "2"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["file"] for d in docs] == songs[:2]
    for d in docs:
        assert set(d) == {"file", "top", "probabilities", "windows", "seconds"} and len(d["top"]) == 2
        assert d["top"][0]["probability"] == max(d["probabilities"].values())
    assert docs[1]["windows"] == 4 and docs[1]["seconds"] == pytest.approx(3.7, abs=1e-3)

    png = str(tmp_path / "timeline.png")
    assert predict_lib.main(["--workdir", run_dir, songs[2], "--plot", png]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{songs[2]}: ") and len(line.split(", ")) == 3

    assert predict_lib.main(["--workdir", run_dir, *songs[:2], "--plot", str(tmp_path / "two.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--plot draws one song" in err[0] and not os.path.exists(tmp_path / "two.png")


@pytest.mark.parametrize("flag,name,message", [
    ("--plot", "timeline.xyz", "matplotlib cannot write a .xyz file; end the name in .png"),
    ("--plot", "nowhere/t.png", "no such folder"),
    ("--csv", "nowhere/genres.csv", "no such folder"),
])
def test_outputs_that_cannot_be_written_are_one_line_before_any_song(flag, name, message, run_dir, songs, tmp_path,
                                                                      capsys):
    # a bad extension once failed at the first song, reported as that song's failure (exit 1)
    assert predict_lib.main(["--workdir", run_dir, songs[2], flag, str(tmp_path / name)]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"crnn_jax.predict: error: {flag}") and message in err[0], err
    assert cap.out == "" and os.listdir(tmp_path) == []


@pytest.mark.parametrize("case,message", [
    ("missing", "no such directory"),
    ("no_checkpoints_dir", "has no checkpoints/"),
    ("empty_checkpoints", "has no checkpoint in"),
    ("channels", "does not match the model"),
    ("cnn", "does not match the model"),
    ("classes", "does not match the model"),
    ("bad_config", "conv_channels"),
])
def test_bad_workdir_is_one_line_and_left_untouched(case, message, run_dir, songs, tmp_path, capsys):
    wd = str(tmp_path / "wd")
    if case != "missing":
        shutil.copytree(run_dir, wd)
    if case in ("no_checkpoints_dir", "empty_checkpoints"):
        shutil.rmtree(os.path.join(wd, "checkpoints"))
        shutil.rmtree(os.path.join(wd, "best"), ignore_errors=True)  # no checkpoint of either kind
        if case == "empty_checkpoints":
            os.mkdir(os.path.join(wd, "checkpoints"))
    if case == "channels":  # the config of another model family member: every conv kernel has another shape
        edit_json(os.path.join(wd, "config.json"), conv_channels=[4, 8, 8, 8])
    if case == "cnn":  # no GRU parameters: another tree structure altogether
        edit_json(os.path.join(wd, "config.json"), model="cnn")
    if case == "classes":
        edit_json(os.path.join(wd, "classes.json"), class_names=["a", "b", "c"])
    if case == "bad_config":
        edit_json(os.path.join(wd, "config.json"), conv_channels=[4, 8])
    before = snapshot(wd) if os.path.isdir(wd) else None
    assert predict_lib.main(["--workdir", wd, songs[0]]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith("crnn_jax.predict: error: ") and message in lines[0], lines[0]
    assert (snapshot(wd) if os.path.isdir(wd) else None) == before


def _flip_a_byte(step_dir):
    """Same size, one byte of the largest array file changed (orbax alone would restore wrong numbers)."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def test_damaged_newest_checkpoint_falls_back_to_the_older_one_and_moves_nothing(run_dir, songs, tmp_path,
                                                                                 capsys):
    wd = str(tmp_path / "wd")
    shutil.copytree(run_dir, wd)
    shutil.rmtree(os.path.join(wd, "best"))  # the newest of checkpoints/ is what is loaded then
    ck = os.path.join(wd, "checkpoints")
    assert sorted(os.listdir(ck)) == ["4", "6"]
    older = str(tmp_path / "older")  # the oracle: the same workdir with only checkpoint 4
    shutil.copytree(wd, older)
    shutil.rmtree(os.path.join(older, "checkpoints", "6"))
    _flip_a_byte(os.path.join(ck, "6"))
    before = snapshot(wd)
    warnings = []
    got = predictor_lib.load_model(wd, batch_size=4, warn=warnings.append)
    want = predictor_lib.load_model(older, batch_size=4, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint 6 in {ck} is damaged (") \
        and warnings[0].endswith("differs from what was written); using the newest intact one, checkpoint 4")
    a = predictor_lib.read_song(songs[1], got.sample_rate)
    np.testing.assert_array_equal(got.predict(a)["window_probs"], want.predict(a)["window_probs"])
    assert snapshot(wd) == before  # predict writes nothing: the damaged checkpoint stays where it is
    # The CLI says it on stderr, one line, and still predicts.
    assert predict_lib.main(["--workdir", wd, songs[1]]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1
    assert [l for l in captured.err.splitlines() if l.strip()] == warnings


def test_every_checkpoint_damaged_is_one_line_and_nothing_moves(run_dir, songs, tmp_path, capsys):
    wd = str(tmp_path / "wd")
    shutil.copytree(run_dir, wd)
    shutil.rmtree(os.path.join(wd, "best"))
    ck = os.path.join(wd, "checkpoints")
    for step in ("4", "6"):
        _flip_a_byte(os.path.join(ck, step))
    before = snapshot(wd)
    assert predict_lib.main(["--workdir", wd, songs[0]]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith(f"crnn_jax.predict: error: checkpoint 6 in {ck} is unreadable (")
    assert lines[0].endswith("; so are the older 4: train the run again or restore the folder from a copy")
    assert snapshot(wd) == before


def test_cli_reports_bad_files_and_predicts_the_rest(run_dir, songs, predictor, tmp_path, capsys):
    missing, corrupt = str(tmp_path / "missing.wav"), str(tmp_path / "corrupt.wav")
    with open(corrupt, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    assert predict_lib.main(["--workdir", run_dir, songs[0], missing, corrupt, songs[1]]) == 1
    p = capsys.readouterr()
    out = p.out.strip().splitlines()
    assert [line.split(": ")[0] for line in out] == [songs[0], songs[1]]
    err = p.err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in p.err, p.err
    assert missing in err[0] and "no such file" in err[0] and corrupt in err[1]
    assert err[2] == "crnn_jax.predict: 2 of 4 file(s) failed (named above); the rest were predicted"
    assert predict_lib.main(["--workdir", run_dir, missing]) == 1
    p = capsys.readouterr()
    assert p.out == "", p.err
    last = p.err.strip().splitlines()[-1]
    assert last == "crnn_jax.predict: 1 of 1 file(s) failed (named above); nothing was predicted", p.err

    wd = str(tmp_path / "wd")  # a checkpoint of another model: refused before orbax reads an array
    shutil.copytree(run_dir, wd)
    edit_json(os.path.join(wd, "config.json"), gru_units=[8, 4])
    assert predict_lib.main(["--workdir", wd, songs[0]]) == 2
    p = capsys.readouterr()
    assert p.out == ""
    assert p.err.strip().splitlines() == [
        f"crnn_jax.predict: error: checkpoint {predictor.state.step} in {os.path.join(wd, 'best')} does not "
        "match the model that config.json and classes.json describe: params/gru1/cell/hn/bias is (8,) in the "
        "checkpoint, the model needs (4,)"], p.err


# --- a library: folders in, a table out ---------------------------------------------------------------------
def make_library(root, sr):
    """Genre folders of real audio in several formats and rates, beside the junk a music folder holds:
    -> (the audio files predict must score, relative to root; the damaged one)."""
    good = []
    for i, (genre, name, rate, channels, subtype) in enumerate([
            ("rock", "a.wav", sr, 1, "PCM_16"), ("rock", "b.flac", 44100, 2, "PCM_16"),
            ("jazz/live", "c.ogg", 44100, 2, "VORBIS"), ("jazz", "d.WAV", 16000, 1, "PCM_24")]):
        x = synth.generate_clip(i, seconds=2.5, sample_rate=rate, seed=5, index=i)
        os.makedirs(os.path.join(root, genre), exist_ok=True)
        sf.write(os.path.join(root, genre, name), np.stack([x] * channels, 1) if channels > 1 else x, rate,
                 subtype=subtype)
        good.append(os.path.join(genre, name))
    os.makedirs(os.path.join(root, ".hidden"))
    sf.write(os.path.join(root, ".hidden", "e.wav"), synth.generate_clip(1, seconds=1.0, sample_rate=sr, seed=5,
                                                                        index=9), sr)  # audio, but hidden
    for junk, data in ((".DS_Store", b"\0\0\0\1Bud1"), ("README.txt", b"my music"), ("rock/cover.jpg", b"\xff\xd8"),
                       ("rock/._a.wav", b"\0\5\26\7")):
        with open(os.path.join(root, junk), "wb") as f:
            f.write(data)
    with open(os.path.join(root, "jazz", "broken.wav"), "wb") as f:  # a header and nothing playable
        f.write(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage")
    return sorted(good), os.path.join("jazz", "broken.wav")


def test_library_folder_with_relative_paths_to_csv(run_dir, predictor, tmp_path, capsys, monkeypatch):
    # The README's command as a user types it: relative --workdir, a folder, --csv, in their own cwd.
    shutil.copytree(run_dir, tmp_path / "runs" / "mine")
    good, broken = make_library(str(tmp_path / "music"), predictor.sample_rate)
    before = snapshot(str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    code = predict_lib.main(["--workdir", "runs/mine", "music", "--csv", "out.csv"])
    p = capsys.readouterr()
    assert code == 1, p.err  # one file failed, the rest were predicted
    assert "Traceback" not in p.err
    err = p.err.strip().splitlines()
    assert err[0] == "crnn_jax.predict: skipped 2 non-audio file(s) in the folders (1 .jpg, 1 .txt)", err
    assert len(err) == 3 and os.path.join("music", broken) in err[1] and "1 of 5 file(s) failed" in err[2], err
    import csv

    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    assert header == ["path", "genre", "probability", *predictor.class_names]
    assert [r[0] for r in rows] == [os.path.join("music", g) for g in good]  # hidden and junk left out, sorted
    assert [line.split(": ")[0] for line in p.out.strip().splitlines()] == [r[0] for r in rows]
    for r in rows:
        probs = np.array(r[3:], float)
        assert r[1] == predictor.class_names[int(probs.argmax())] and float(r[2]) == probs.max()
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    # The CSV row is the library function's answer for the same file.
    res = predictor.predict(predictor_lib.read_song(str(tmp_path / "music" / good[1]), predictor.sample_rate))
    np.testing.assert_allclose(np.array(rows[1][3:], float), [res["probabilities"][c] for c in predictor.class_names],
                               atol=2e-6)
    assert snapshot(str(tmp_path / "runs")) == before


def test_no_audio_in_folder_is_one_line(run_dir, tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert predict_lib.main(["--workdir", run_dir, str(tmp_path / "empty"), "--csv", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no audio files" in err[0] and not os.path.exists(tmp_path / "o.csv")


def test_memory_follows_one_song_not_the_library(predictor, tmp_path, monkeypatch):
    # Peak Python/numpy memory while predicting a folder of 6 long songs is that of one song, not six:
    # songs are decoded one at a time and nothing of one is kept for the next.
    import tracemalloc

    sr, seconds = predictor.sample_rate, 20.0
    for n, folder in ((1, "one"), (6, "six")):
        (tmp_path / folder).mkdir()
        for i in range(n):
            x = synth.generate_clip(i, seconds=seconds, sample_rate=sr, seed=8, index=i)
            sf.write(str(tmp_path / folder / f"{i}.wav"), x, sr, subtype="PCM_16")
    monkeypatch.setattr(predictor_lib, "load_models", lambda *a, **k: predictor)  # the model is not what is measured
    song_bytes = int(seconds * sr) * 4  # one song as float32
    peaks = {}
    for folder in ("one", "six", "one"):  # "one" twice: the first pass pays one-off allocations
        tracemalloc.start()
        assert predict_lib.main(["--workdir", "unused", str(tmp_path / folder)]) == 0
        peaks[folder] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["one"] > song_bytes  # the measurement sees the song itself
    assert peaks["six"] < peaks["one"] + song_bytes, peaks  # six songs held at once would add five


def test_several_workdirs_are_one_ensemble_of_their_mean_log_probability(run_dir, songs, tmp_path, capsys):
    other = str(tmp_path / "other")  # another model: the same run's newest checkpoint instead of its best
    shutil.copytree(run_dir, other)
    shutil.rmtree(os.path.join(other, "best"))
    a, b = predictor_lib.load_model(run_dir), predictor_lib.load_model(other)
    audio = predictor_lib.read_song(songs[1], a.sample_rate)
    ra, rb = a.predict(audio), b.predict(audio)
    assert not np.allclose(ra["log_probs"], rb["log_probs"])  # two different models
    ens = predictor_lib.load_models([run_dir, other])
    re = ens.predict(audio, top=3)
    np.testing.assert_allclose(re["log_probs"], (ra["log_probs"] + rb["log_probs"]) / 2, rtol=1e-6, atol=1e-6)
    want = np.exp(re["log_probs"] - np.logaddexp.reduce(re["log_probs"]))
    np.testing.assert_allclose([re["probabilities"][c] for c in ens.class_names], want, rtol=1e-6)
    assert re["windows"] == ra["windows"]
    # The CLI: --workdir twice, the same numbers as the library call.
    assert predict_lib.main(["--workdir", run_dir, "--workdir", other, "--json", songs[1]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["probabilities"] == pytest.approx(re["probabilities"], rel=1e-6)
    # Members that cannot be averaged: one line.
    edit_json(os.path.join(other, "config.json"), eval_hop_seconds=0.25)
    assert predict_lib.main(["--workdir", run_dir, "--workdir", other, songs[1]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must agree in their evaluation hop" in err[0]


def test_an_ensemble_of_a_crnn_and_a_cnn_averages_each_ones_own_forward(predictor):
    # Members may differ in architecture (each scores windows with its own network); they must cut the same
    # windows. Untrained weights suffice: the claim is how members' window outputs combine.
    cfg = predictor.cfg
    cnn_cfg = cfg.replace(model="cnn")
    net = model_lib.build_model(cnn_cfg, len(predictor.class_names))
    cnn = predictor_lib.Predictor(cnn_cfg, predictor.class_names,
                                  steps_lib.create_state(net, steps_lib.make_optimizer(cnn_cfg, 1),
                                                         cnn_cfg.crop_samples, seed=1), batch_size=4)
    x = synth.generate_clip(3, seconds=4.5 * cfg.crop_samples / cfg.sample_rate, sample_rate=cfg.sample_rate,
                            seed=4, index=0)
    (a, starts), (b, _) = predictor.window_log_probs(x), cnn.window_log_probs(x)
    assert cfg.model == "crnn" and a.shape == b.shape and not np.allclose(a, b)
    ens = predictor_lib.Ensemble([predictor, cnn])
    got, got_starts = ens.window_log_probs(x)
    np.testing.assert_allclose(got, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-6)
    assert (got_starts == starts).all()
    # A member cutting other windows (another crop) cannot be averaged window by window: one line.
    longer = cnn_cfg.replace(crop_seconds=cnn_cfg.crop_seconds * 2)
    other = predictor_lib.Predictor(longer, predictor.class_names, cnn.state, batch_size=4)
    with pytest.raises(ConfigError, match="must agree in their crop"):
        predictor_lib.Ensemble([predictor, other])
