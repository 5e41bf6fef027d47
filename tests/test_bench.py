"""`python -m crnn_jax.bench`: what it reports is internally consistent (not how fast anything is)."""

import importlib.util
import json

import pytest

from crnn_jax import bench

SHAPES = ["--channels", "4,4,4,4", "--crops", "1", "--batch-sizes", "4"]
TINY = [*SHAPES, "--repeats", "1"]


def run_train(tmp_path, *extra):
    out = tmp_path / "train.json"
    assert bench.main(["train", *TINY, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_train_bench_reports_per_step_cost_and_the_peer(tmp_path):
    one = run_train(tmp_path)
    (entry,) = one["runs"]
    assert entry["batch"] == 4 and entry["crop_s"] == 1.0
    assert entry["flops_per_clip"] > 0 and entry["flops_per_step"] == pytest.approx(4 * entry["flops_per_clip"])
    jax_row = entry["rows"][0]
    assert jax_row["impl"] == "jax" and jax_row["median_s"] > 0
    assert jax_row["clips_per_s"] == pytest.approx(4 / jax_row["median_s"])
    have_torch = importlib.util.find_spec("torch") is not None
    assert (len(entry["rows"]) == 2) == have_torch and (one["torch_skipped"] is None) == have_torch
    if have_torch:
        assert entry["jax_speedup"] == pytest.approx(entry["rows"][1]["median_s"] / jax_row["median_s"])
    # K steps per call: times and FLOPs are reported per step, so the count matches K = 1.
    four = run_train(tmp_path, "--steps-per-call", "4")
    assert four["steps_per_call"] == 4
    assert four["runs"][0]["flops_per_step"] == pytest.approx(entry["flops_per_step"], rel=0.02)


def test_mel_bench_agrees_with_librosa(tmp_path):
    pytest.importorskip("librosa")
    out = tmp_path / "mel.json"
    assert bench.main(["mel", "--batch", "2", "--seconds", "1", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["max_abs_db_diff_clip0"] < 1e-2  # the same log-mel, to float32 rounding in dB
    assert r["jax"]["clips_per_s"] == pytest.approx(2 / r["jax"]["median_s"])


@pytest.mark.parametrize("flags,message", [(["--repeats", "0"], "--repeats must be >= 1"),
                                           (["--steps-per-call", "0"], "--steps-per-call must be >= 1")])
def test_bad_values_are_one_line(capsys, flags, message):
    assert bench.main(["train", *SHAPES, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crnn_jax.bench: error: {message}, got 0"
