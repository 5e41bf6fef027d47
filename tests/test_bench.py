"""`python -m crnn_jax.bench`: what it measures is the work it names (not how fast anything is): the mel bench
compares the same log-mel with librosa's, the train bench counts one step's cost however many steps a call
fuses, and times the PyTorch peer when torch is installed; bad values are one line."""

import importlib.util
import json

import pytest

from crnn_jax import bench

SHAPES = ["--channels", "4,4,4,4", "--crops", "1"]


def run_train(tmp_path, *extra):
    out = tmp_path / "train.json"
    assert bench.main(["train", *SHAPES, "--repeats", "1", *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_train_bench_counts_one_step_per_step_and_times_the_peer(tmp_path):
    one = run_train(tmp_path, "--batch-sizes", "4")
    (small,) = one["runs"]
    assert (small["batch"], small["crop_s"]) == (4, 1.0) and small["flops_per_step"] > 0
    have_torch = importlib.util.find_spec("torch") is not None
    for entry in one["runs"]:
        jax_row = entry["rows"][0]
        assert jax_row["impl"] == "jax" and jax_row["median_s"] > 0
        assert (len(entry["rows"]) == 2) == have_torch and (one["torch_skipped"] is None) == have_torch
        if have_torch:
            assert entry["rows"][1]["impl"].startswith("torch") and entry["rows"][1]["median_s"] > 0
    # K steps per call: XLA counts a scan's body once; the bench reports one step's cost, so K = 4 matches K = 1.
    four = run_train(tmp_path, "--batch-sizes", "4", "--steps-per-call", "4", "--no-torch")
    assert four["steps_per_call"] == 4 and four["torch_skipped"]
    assert four["runs"][0]["flops_per_step"] == pytest.approx(small["flops_per_step"], rel=0.02)


def test_mel_bench_agrees_with_librosa(tmp_path):
    pytest.importorskip("librosa")
    out = tmp_path / "mel.json"
    assert bench.main(["mel", "--batch", "2", "--seconds", "1", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["max_abs_db_diff_clip0"] < 1e-2  # the same log-mel, to float32 rounding in dB
    assert r["jax"]["median_s"] > 0


@pytest.mark.parametrize("flags,message", [(["--repeats", "0"], "--repeats must be >= 1"),
                                           (["--steps-per-call", "0"], "--steps-per-call must be >= 1")])
def test_bad_values_are_one_line(capsys, flags, message):
    assert bench.main(["train", *SHAPES, "--batch-sizes", "4", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crnn_jax.bench: error: {message}, got 0"


def test_an_unwritable_json_is_one_line_before_any_measuring(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setitem(bench._SUBCOMMANDS, "mel", (bench._mel.add_args, lambda args: ran.append(1), ""))
    out = tmp_path / "no" / "such" / "folder" / "mel.json"
    assert bench.main(["mel", "--repeats", "1", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("crnn_jax.bench: error: --json") and "no such folder" in err
    assert not ran and not out.parent.exists()
