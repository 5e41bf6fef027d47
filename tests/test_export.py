"""export.py: one portable model file (config, genres, parameters, BatchNorm averages; no optimiser state),
written atomically, read back to the same probabilities, and one clear line for every unusable file."""

import json
import os
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

from crnn_jax import export as export_lib
from crnn_jax import predict as predict_lib
from crnn_jax.data import synth
from crnn_jax.inference import modelfile
from crnn_jax.inference import predictor as predictor_lib


@pytest.fixture(scope="module")
def run_dir(smoke_run):
    return smoke_run


@pytest.fixture(scope="module")
def model_file(smoke_model):
    """conftest's smoke run exported once (`crnn-jax export --workdir RUN --out genres.crnn`); read only."""
    return smoke_model


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("song") / "song.wav")
    sf.write(path, synth.generate_clip(3, seconds=3.4, sample_rate=22050, seed=4, index=0), 22050, subtype="PCM_16")
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tree_bytes(tree):
    import jax

    return sum(np.asarray(a).nbytes for a in jax.tree.leaves(tree))


def test_round_trip_gives_the_workdirs_probabilities(run_dir, model_file, song):
    from_dir = predictor_lib.load_model(run_dir, batch_size=4)
    from_file = predictor_lib.Predictor.from_file(model_file, batch_size=4)
    assert from_file.cfg == from_dir.cfg and from_file.class_names == from_dir.class_names
    with open(os.path.join(run_dir, "results.json")) as f:
        tested = json.load(f)["tested_step"]  # the workdir gives the checkpoint its test pass used (best/)
    assert int(from_file.state.step) == int(from_dir.state.step) == tested and from_file.state.opt_state == ()
    x = predictor_lib.read_song(song, from_dir.sample_rate)
    a, b = from_dir.predict(x), from_file.predict(x)
    assert a["windows"] == b["windows"] == 3
    np.testing.assert_array_equal(b["window_probs"], a["window_probs"])  # the same float32 parameters, bit for bit
    assert b["probabilities"] == a["probabilities"]
    # Parameters only: the file is the parameters and averages plus a small header, far below a state
    # with Algorithm 8.6's r and v (each as large as the parameters).
    size, arrays = os.path.getsize(model_file), tree_bytes(from_dir.state.params) + tree_bytes(from_dir.state.batch_stats)
    assert arrays < size < arrays + 20_000 and size < 2 * tree_bytes(from_dir.state.params)
    with open(model_file, "rb") as f:
        magic, version, length, _ = struct.unpack("<8sIQ32s", f.read(52))
    assert magic == modelfile.MAGIC and version == modelfile.FORMAT_VERSION and length == size - 52


def test_predict_model_flag_matches_workdir(run_dir, model_file, song, capsys):
    assert predict_lib.main(["--workdir", run_dir, song, "--json"]) == 0
    by_dir = json.loads(capsys.readouterr().out)
    assert predict_lib.main(["--model", model_file, song, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_dir
    assert predict_lib.main(["--model", model_file, "--workdir", run_dir, song]) == 2  # one source, not two
    assert "not allowed with" in capsys.readouterr().err


def damage(src, dst, case):
    with open(src, "rb") as f:
        data = bytearray(f.read())
    if case == "truncated":
        data = data[:len(data) // 2]
    elif case == "short_header":
        data = data[:20]
    elif case == "overwritten":
        data[len(data) // 2:len(data) // 2 + 16] = b"\x00" * 16
    elif case == "appended":
        data += b"extra"
    elif case in ("newer", "older"):
        data[8:12] = struct.pack("<I", modelfile.FORMAT_VERSION + 1 if case == "newer" else 0)
    elif case == "empty":
        data = b""
    elif case == "text":
        data = b"config = {}\n" * 10
    elif case == "wav":
        sf.write(dst, np.zeros(1000, np.float32), 22050, format="WAV")
        return
    with open(dst, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("case,message", [
    ("truncated", "is truncated"), ("short_header", "is truncated"), ("overwritten", "is damaged (its checksum"),
    ("appended", "longer than its header says"), ("newer", "upgrade crnn_jax"), ("older", "export it again"),
    ("empty", "is not a crnn_jax model file"), ("text", "is not a crnn_jax model file"),
    ("wav", "is not a crnn_jax model file"), ("missing", "no such file"),
])
def test_unusable_file_is_one_line_and_left_alone(case, message, model_file, song, tmp_path, capsys):
    bad = str(tmp_path / "bad.crnn")
    if case != "missing":
        damage(model_file, bad, case)
    before = read(bad) if case != "missing" else None
    with pytest.raises(modelfile.ModelFileError, match="^--model "):
        predictor_lib.Predictor.from_file(bad)
    assert predict_lib.main(["--model", bad, song]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert out.out == "" and len(lines) == 1 and lines[0].startswith("crnn_jax.predict: error: --model "), out.err
    assert message in lines[0] and bad in lines[0], lines[0]
    assert (read(bad) if case != "missing" else None) == before


def test_intact_file_of_another_model_is_one_line(run_dir, model_file, tmp_path):
    # A well-formed file whose arrays do not fit its config (another writer's bug): caught before any forward.
    p = predictor_lib.load_model(run_dir)
    odd = str(tmp_path / "odd.crnn")
    modelfile.write_model(odd, p.cfg.replace(gru_units=(8, 4)), p.class_names, p.state)
    with pytest.raises(modelfile.ModelFileError, match="does not match the model its config describes: "
                       r"params/gru1/cell/hn/bias is \(8,\) in the file, the model needs \(4,\)"):
        predictor_lib.Predictor.from_file(odd)


def test_export_is_atomic_and_never_overwrites_foreign_files(run_dir, model_file, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "m.crnn")
    shutil.copy(model_file, out)
    old = read(out)

    def full_disk(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, "replace", full_disk)
    assert export_lib.main(["--workdir", run_dir, "--out", out]) == 1  # the disk refused: a failure of the machine (exit 1), not of the input (2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert os.listdir(tmp_path) == ["m.crnn"] and read(out) == old  # no temporary, old file whole
    monkeypatch.undo()

    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert export_lib.main(["--workdir", run_dir, "--out", str(notes)]) == 2
    assert "is not a crnn_jax model file; it is left alone" in capsys.readouterr().err
    assert notes.read_text() == "mine"
    assert export_lib.main(["--workdir", run_dir, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert export_lib.main(["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "x.crnn")]) == 2
    assert "no such directory" in capsys.readouterr().err and not os.path.exists(tmp_path / "x.crnn")
    assert export_lib.main(["--workdir", run_dir, "--out", out]) == 0  # replacing our own model file is fine
    assert predictor_lib.Predictor.from_file(out).class_names == predictor_lib.load_model(run_dir).class_names
