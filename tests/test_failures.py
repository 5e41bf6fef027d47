"""What a user can get wrong, or the machine can refuse, ends in one line naming what to change, and leaves the
user's files (workdir, checkpoints, data) exactly as they were: damaged checkpoints, out of memory, a full disk,
an unwritable / foreign / file workdir, a changed config, front-end settings that do not fit, reruns."""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import types

import jax
import numpy as np
import pytest

from conftest import EXPERIMENT_SCRIPTS, ROOT, SMOKE
from crnn_jax.training import checkpoint as ckpt_lib
from crnn_jax import config as config_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.training import report
from crnn_jax import train as train_lib
from crnn_jax.config import Config, ConfigError
from crnn_jax.training import runlog
from crnn_jax.training import loop
from crnn_jax.training import workdir as workdir_lib

# XLA's own words (jnp.zeros((2**38,)) on the CPU backend raises exactly this JaxRuntimeError).
OOM = "RESOURCE_EXHAUSTED: Out of memory allocating 1099511627776 bytes."


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def snapshot(path) -> dict:
    """{relative path: sha256} of every file under path (or of path itself), and every folder."""
    if os.path.isfile(path):
        return {".": sha(path)}
    out = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path) + "/"] = "dir"
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = sha(full)
    return out


def run(capsys, *args):
    """train.main in this process -> (exit status, crnn_jax.train's lines on stderr, all of stderr)."""
    code = train_lib.main(["--config", SMOKE, *args])
    err = capsys.readouterr().err
    return code, [l for l in err.splitlines() if l.startswith("crnn_jax.train:")], err


def lines(path):
    with open(path) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def finished(smoke_run):
    """A finished smoke run (conftest's, which `--config SMOKE` trains): the reference every other run here is
    compared with. Tests copy it before they change anything."""
    assert sorted(os.listdir(os.path.join(smoke_run, "checkpoints"))) == ["4", "6"]
    return smoke_run


def copy_of(finished, tmp_path):
    wd = str(tmp_path / "run")
    shutil.copytree(finished, wd)
    return wd


# --- damaged checkpoints ------------------------------------------------------------------------------------
def _data_files(step_dir):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs if os.sep + "d" + os.sep in
                  os.path.join(r, f))


def _truncate(step_dir):
    big = max(_data_files(step_dir), key=os.path.getsize)
    os.truncate(big, os.path.getsize(big) // 2)
    return r"\S+ has \d+ bytes, \d+ were written"


def _overwrite(step_dir):  # same size, one byte changed: orbax alone restores this as wrong numbers
    big = max(_data_files(step_dir), key=os.path.getsize)
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    return r"\S+ differs from what was written"


def _half_copied(step_dir):
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs)
    for f in files[len(files) // 2:]:
        os.remove(f)
    return r"\S+ is missing"


def _data_lost_without_list(step_dir):  # no crnn_jax.sha256 (an older version's checkpoint): orbax notices
    # Every array data file goes, not half of all files: their names are random, and orbax leaves data files
    # that no array reads, so a half chosen by name sometimes spared every one it needs (a flaky test).
    os.remove(os.path.join(step_dir, ckpt_lib.MANIFEST))
    for f in _data_files(step_dir):
        os.remove(f)
    return r"orbax cannot restore it: .+"


# The fast tier keeps the damage orbax alone would restore as wrong numbers; the others resume alike.
@pytest.mark.parametrize("damage", [pytest.param(_truncate, marks=pytest.mark.slow), _overwrite,
                                    pytest.param(_half_copied, marks=pytest.mark.slow),
                                    pytest.param(_data_lost_without_list, marks=pytest.mark.slow)])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_training_goes_on_from_the_previous(
        finished, tmp_path, capsys, damage):
    wd = copy_of(finished, tmp_path)
    ck = os.path.join(wd, "checkpoints")
    why = damage(os.path.join(ck, "6"))
    damaged = snapshot(os.path.join(ck, "6"))
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 0 and not ours and "Traceback" not in err
    warnings = [l for l in err.splitlines() if "damaged" in l]
    assert len(warnings) == 1, err[-3000:]
    assert re.fullmatch(rf"warning: checkpoint 6 in {re.escape(ck)} is damaged \({why}\); moved it to "
                        rf"{re.escape(ck)}-damaged/6 \(kept, not deleted\); resuming from checkpoint 4", warnings[0])
    assert snapshot(os.path.join(ck + "-damaged", "6")) == damaged  # kept byte for byte
    # Resumed from step 4 and retrained 5-6: the same lines, bit for bit, as the run never damaged.
    for name in ("metrics.jsonl", "timing.jsonl"):
        assert [json.loads(l)["step"] for l in lines(os.path.join(wd, name))] == \
               [json.loads(l)["step"] for l in lines(os.path.join(finished, name))]
    assert lines(os.path.join(wd, "metrics.jsonl")) == lines(os.path.join(finished, "metrics.jsonl"))
    assert sorted(os.listdir(ck)) == ["4", "6"]
    c = ckpt_lib.Checkpointer(ck)
    assert c.damage(6) == "" and c.damage(4) == ""
    c.close()


def test_no_intact_checkpoint_is_one_line_and_nothing_is_moved(finished, tmp_path, capsys):
    wd = copy_of(finished, tmp_path)
    ck = os.path.join(wd, "checkpoints")
    _overwrite(os.path.join(ck, "6"))
    _truncate(os.path.join(ck, "4"))
    before = snapshot(wd)
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 2 and "Traceback" not in err
    assert len(ours) == 1 and ours[0].startswith(
        f"crnn_jax.train: error: no intact checkpoint in {ck} (damaged: 6, 4; newest: ")
    assert ours[0].endswith("); move that folder aside to start the run over, or choose another --workdir")
    assert snapshot(wd) == before


# --- config.json: refused only with checkpoints of another config; out of memory -----------------------------
def _oom_at_call(monkeypatch, n):
    """The training call number n (1 = the first, which compiles) raises XLA's out-of-memory error."""
    real = loop.steps_lib.parallel
    calls = []

    def parallel(fn, *a, **k):
        p = real(fn, *a, **k)
        if not k.get("state_out"):
            return p

        def wrapped(*args):
            calls.append(1)
            if len(calls) == n:
                raise jax.errors.JaxRuntimeError(OOM)
            return p(*args)

        return wrapped

    monkeypatch.setattr(loop.steps_lib, "parallel", parallel)


def test_out_of_memory_before_a_checkpoint_then_rerun_with_a_smaller_batch(tmp_path, capsys, monkeypatch):
    wd = str(tmp_path / "run")
    with monkeypatch.context() as m:
        _oom_at_call(m, 1)  # the first call, which compiles
        code, ours, err = run(capsys, "--workdir", wd, "--batch-size", "16")
    assert code == 1 and "Traceback" not in err
    assert ours == [f"crnn_jax.train: error: out of device memory ({OOM}); lower --batch-size (now 16) or "
                    f"--crop-seconds, or pass --data-placement host to keep the data set off the device"]
    assert os.listdir(os.path.join(wd, "checkpoints")) == []
    # No checkpoint yet: the corrected flags are accepted, and config.json says what really ran.
    code, ours, err = run(capsys, "--workdir", wd, "--batch-size", "8")
    assert code == 0 and not ours, err
    assert load(wd, "config.json")["batch_size"] == 8
    assert [r["step"] for r in runlog.read_rows(os.path.join(wd, "metrics.jsonl")) if "train_loss" in r] == \
           [1, 2, 3, 4, 5, 6]
    # Now it has checkpoints: another batch size is refused, and nothing is touched.
    before = snapshot(wd)
    code, ours, err = run(capsys, "--workdir", wd, "--batch-size", "16")
    assert code == 2 and ours == [f"crnn_jax.train: error: workdir {wd} holds a run with a different config "
                                  f"(batch_size: 8 -> 16); choose another --workdir"]
    assert snapshot(wd) == before


@pytest.mark.slow
def test_out_of_memory_after_a_checkpoint_keeps_it_and_says_how_to_resume(finished, tmp_path, capsys,
                                                                          monkeypatch):
    wd = str(tmp_path / "run")
    with monkeypatch.context() as m:
        _oom_at_call(m, 4)  # steps 1-3 ran; checkpoint 2 is on disk
        code, ours, err = run(capsys, "--workdir", wd)
    assert code == 1 and "Traceback" not in err
    assert ours == [f"crnn_jax.train: error: out of device memory ({OOM}); lower --batch-size (now 8) or "
                    f"--crop-seconds, or pass --data-placement host to keep the data set off the device; to "
                    f"resume {wd} as it is, try --data-placement host or a smaller --steps-per-call (they do not "
                    f"change what is learned)"]
    # What the line suggests is accepted on this workdir (tests/test_feed.py: the same crops and losses)...
    cfg = train_lib.parse_config(["--config", SMOKE, "--workdir", wd])
    for change in (dict(data_placement="host"), dict(steps_per_call=1)):
        workdir_lib.check(wd, cfg.replace(**change), log=lambda *_: None)
    # ... and the run resumes from checkpoint 2 to the very lines of a run never stopped.
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 0 and not ours
    assert lines(os.path.join(wd, "metrics.jsonl")) == lines(os.path.join(finished, "metrics.jsonl"))


# --- full disk ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_disk_full_writing_metrics_is_one_line_and_the_rerun_resumes(finished, tmp_path, capsys, monkeypatch):
    wd = str(tmp_path / "run")
    real = runlog.append_row

    def full(path, row):
        if path.endswith("metrics.jsonl") and row["step"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, row)

    with monkeypatch.context() as m:
        m.setattr(runlog, "append_row", full)
        code, ours, err = run(capsys, "--workdir", wd)
    assert code == 1 and "Traceback" not in err
    assert ours == [f"crnn_jax.train: error: the disk is full: writing {wd}/metrics.jsonl failed (No space left on "
                    f"device); free space on it or choose a --workdir on another disk, then rerun with the same "
                    f"flags: the checkpoints already written are intact"]
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4"]
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 0 and not ours
    for name in ("metrics.jsonl", "train_time.jsonl"):
        steps = [json.loads(l)["step"] for l in lines(os.path.join(wd, name))]
        assert steps == [json.loads(l)["step"] for l in lines(os.path.join(finished, name))]
    assert lines(os.path.join(wd, "metrics.jsonl")) == lines(os.path.join(finished, "metrics.jsonl"))


def test_disk_full_writing_a_checkpoint_is_one_line_and_keeps_the_older_ones(tmp_path, capsys, monkeypatch):
    wd = str(tmp_path / "run")
    real = ckpt_lib.ocp.CheckpointManager.save

    def full(self, step, *a, **k):  # what tensorstore really raises on a full disk (seen on a 64 KiB tmpfs)
        if step == 4:
            raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database at local file '
                             f'"{wd}/checkpoints/4.orbax-checkpoint-tmp/": Failed to write 321385 bytes to file 7: '
                             f"No space left on device [os_error_code='28']")
        return real(self, step, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(ckpt_lib.ocp.CheckpointManager, "save", full)
        code, ours, err = run(capsys, "--workdir", wd)
    assert code == 1 and "Traceback" not in err
    assert ours == [f"crnn_jax.train: error: the disk is full: writing {wd}/checkpoints failed (No space left on "
                    f"device); free space on it or choose a --workdir on another disk, then rerun with the same "
                    f"flags: the checkpoints already written are intact"]
    c = ckpt_lib.Checkpointer(os.path.join(wd, "checkpoints"))
    assert c.all_steps() == [2] and c.damage(2) == ""
    c.close()


# --- the workdir itself -----------------------------------------------------------------------------------------
def test_a_workdir_that_is_a_file_or_under_one_is_refused_untouched(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    code, ours, err = run(capsys, "--workdir", str(f))
    assert code == 2 and ours == [f"crnn_jax.train: error: --workdir {f} is a file, not a folder; choose another "
                                  f"--workdir"]
    code, ours, err = run(capsys, "--workdir", str(f / "run"))
    assert code == 2 and ours == [f"crnn_jax.train: error: {f}/run: part of this path is a file, not a folder "
                                  f"(Not a directory); choose another --workdir"]
    assert f.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("files", [{"notes.txt": "x", "data.csv": "1,2"}, {"config.json": '{"lr": 0.1}'}])
def test_another_programs_folder_is_refused_untouched(tmp_path, capsys, files):
    wd = tmp_path / "theirs"
    wd.mkdir()
    for name, text in files.items():
        (wd / name).write_text(text)
    before = snapshot(str(wd))
    code, ours, err = run(capsys, "--workdir", str(wd))
    assert code == 2 and "Traceback" not in err and len(ours) == 1
    what = ("is not empty (data.csv, notes.txt) and holds no crnn_jax run" if "notes.txt" in files else
            "holds a config.json that is not crnn_jax's")
    assert ours[0] == (f"crnn_jax.train: error: --workdir {wd} {what}; choose a new or empty folder (its files are "
                       f"left as they are)")
    assert snapshot(str(wd)) == before


def _immutable(path) -> bool:
    """Make a folder unwritable even for root (chattr +i); False where the filesystem does not allow it."""
    if os.geteuid() != 0:
        os.chmod(path, 0o500)
        return True
    return shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(path)],
                                                                capture_output=True).returncode == 0


def test_an_unwritable_workdir_is_one_line(tmp_path, capsys):
    wd = tmp_path / "locked"
    wd.mkdir()
    if not _immutable(wd):
        pytest.skip("this filesystem cannot make a folder unwritable for root (chattr +i)")
    try:
        code, ours, err = run(capsys, "--workdir", str(wd))
    finally:
        subprocess.run(["chattr", "-i", str(wd)], capture_output=True) if os.geteuid() == 0 else os.chmod(wd, 0o700)
    why = os.strerror(errno.EPERM if os.geteuid() == 0 else errno.EACCES)
    assert code == 2 and ours == [f"crnn_jax.train: error: cannot write {wd} ({why}); choose a --workdir you can "
                                  f"write to"]
    assert os.listdir(wd) == []


def test_an_unwritable_cache_is_a_warning_naming_the_flag(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    ds = data_lib.synthetic(clips_per_class=3, seconds=0.5, sample_rate=8000, seed=0, cache=str(f / "cache"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(ds) == 30 and len(err) == 1
    assert err[0].startswith(f"data: warning: could not write the cache {f}/cache/synthetic-")
    assert err[0].endswith("(Not a directory); running uncached (set --cache-dir to a folder you can write)")


# --- reruns: nothing logged twice; train_seconds over every segment; cosine totals -------------------------------
def test_rerunning_a_finished_run_writes_nothing_twice(finished, tmp_path, capsys):
    wd = copy_of(finished, tmp_path)
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 0 and not ours
    for name in ("metrics.jsonl", "timing.jsonl", "train_time.jsonl"):
        assert lines(os.path.join(wd, name)) == lines(os.path.join(finished, name)), name
    old, new = (load(d, "results.json") for d in (finished, wd))
    assert new["train_seconds"] == old["train_seconds"] and new["test_accuracy"] == old["test_accuracy"]


class _Killed(KeyboardInterrupt):
    """Stands for a kill at one point of the run's end (main treats it like Ctrl-C)."""


def _kill_after_the_last_checkpoint(m):
    m.setattr(ckpt_lib.Checkpointer, "close", lambda self: (_ for _ in ()).throw(_Killed()))


def _kill_between_the_metrics_and_the_timing_line(m):
    real = runlog.append_row

    def append(path, row):
        if path.endswith("timing.jsonl") and row["step"] == 6:
            raise _Killed()
        real(path, row)

    m.setattr(runlog, "append_row", append)


def _kill_before_the_results(m):
    m.setattr(report, "plot_confusion", lambda *a, **k: (_ for _ in ()).throw(_Killed()))


@pytest.mark.slow  # two whole runs each; the fast tier resumes from a checkpoint in the damaged-checkpoint test
@pytest.mark.parametrize("kill", [_kill_after_the_last_checkpoint, _kill_between_the_metrics_and_the_timing_line,
                                  _kill_before_the_results])
def test_a_run_killed_after_its_last_checkpoint_finishes_without_duplicates(finished, tmp_path, capsys,
                                                                           monkeypatch, kill):
    wd = str(tmp_path / "run")
    with monkeypatch.context() as m:
        kill(m)
        code, ours, _ = run(capsys, "--workdir", wd)
    assert code == 130 and ours == ["crnn_jax.train: interrupted; rerun with the same --workdir to resume"]
    code, ours, err = run(capsys, "--workdir", wd)
    assert code == 0 and not ours
    for name in ("metrics.jsonl", "timing.jsonl", "train_time.jsonl"):
        steps = [json.loads(l)["step"] for l in lines(os.path.join(wd, name))]
        assert steps == [json.loads(l)["step"] for l in lines(os.path.join(finished, name))], name
    assert lines(os.path.join(wd, "metrics.jsonl")) == lines(os.path.join(finished, "metrics.jsonl"))
    results = load(wd, "results.json")
    assert results["train_seconds"] == runlog.read_rows(os.path.join(wd, "train_time.jsonl"))[-1]["train_seconds"]


@pytest.mark.slow
def test_train_seconds_count_every_resumed_segment(tmp_path, capsys, monkeypatch):
    wd = str(tmp_path / "run")
    extra = [0.0]  # seconds the first segment's clock runs ahead: 100 per training call
    real_parallel, real_time = loop.steps_lib.parallel, loop.time.time

    def parallel(fn, *a, **k):
        p = real_parallel(fn, *a, **k)
        if not k.get("state_out"):
            return p

        def slow(*args):
            extra[0] += 100.0
            return p(*args)

        return slow

    with monkeypatch.context() as m:
        m.setattr(loop.steps_lib, "parallel", parallel)
        m.setattr(loop, "time", types.SimpleNamespace(time=lambda: real_time() + extra[0]))
        code, _, _ = run(capsys, "--workdir", wd, "--max-steps", "4")
    assert code == 0
    first = load(wd, "results.json")["train_seconds"]
    assert first >= 400
    code, _, _ = run(capsys, "--workdir", wd, "--max-steps", "6")  # a constant schedule may be extended
    assert code == 0
    rows = runlog.read_rows(os.path.join(wd, "train_time.jsonl"))
    assert [r["step"] for r in rows] == [2, 4, 6] and rows[1]["train_seconds"] == first
    second = load(wd, "results.json")["train_seconds"]
    assert first < second < first + 300 and second == rows[-1]["train_seconds"]


def test_a_cosine_run_refuses_another_total_on_resume(finished, tmp_path, capsys):
    wd = copy_of(finished, tmp_path)  # its config.json made a cosine run's: the guard reads only that and the
    saved = load(wd, "config.json")   # checkpoint folders, before anything is built or loaded
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump({**saved, "lr_schedule": "cosine"}, f)
    preset = tmp_path / "cosine.py"
    preset.write_text(f"from crnn_jax.config import load_preset\nconfig = load_preset({SMOKE!r}).replace("
                      f"lr_schedule='cosine')\n")
    before = snapshot(wd)
    for flags, asked in ((["--max-steps", "8"], "--max-steps 8"), (["--max-steps", "3"], "--max-steps 3")):
        code = train_lib.main(["--config", str(preset), "--workdir", wd, *flags])
        ours = [l for l in capsys.readouterr().err.splitlines() if l.startswith("crnn_jax.train:")]
        assert code == 2 and ours == [f"crnn_jax.train: error: workdir {wd} holds a cosine-schedule run of "
                                      f"--max-steps 6, whose learning rate decays over that total; it cannot "
                                      f"resume with {asked}: rerun with --max-steps 6, or choose another --workdir"]
        assert snapshot(wd) == before
    # The same total is accepted (--epochs is moot under --max-steps); a constant schedule may be extended.
    cfg = config_lib.load_preset(str(preset)).replace(workdir=wd)
    workdir_lib.check(wd, cfg.replace(epochs=3), log=lambda *_: None)
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump({**saved, "lr_schedule": "cosine", "max_steps": None, "epochs": 2}, f)
    with pytest.raises(ConfigError, match=r"cosine-schedule run of --epochs 2, .* cannot resume with --epochs 3: "):
        workdir_lib.check(wd, cfg.replace(max_steps=None, epochs=3), log=lambda *_: None)
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(saved, f)
    workdir_lib.check(wd, cfg.replace(lr_schedule="constant", max_steps=8), log=lambda *_: None)


# --- settings checked before any audio is decoded --------------------------------------------------------------
@pytest.mark.parametrize("kw,message", [
    (dict(n_mels=32), "freq_pools (2, 3, 4, 4) pool 96 mel bands into one but n_mels is 32: the last conv block "
                      "would see no band; raise n_mels or lower the pools"),
    (dict(conv_channels=(8,) * 5, freq_pools=(1, 2, 2, 2, 2)),
     "5 conv blocks but automatic time pools exist for at most 4; give time_pools, one per block"),
    (dict(conv_channels=(8,) * 3), "conv_channels (8, 8, 8) and freq_pools (2, 3, 4, 4) need the same length"),
    (dict(sample_rate=16000), "f_max 11025.0 Hz is above the Nyquist frequency of sample_rate 16000 Hz; add "
                              "--set f_max=8000 (the mel front end's top edge, Hz) or less"),
    (dict(f_min=11025.0), "f_min 11025.0 Hz must be below f_max 11025.0 Hz"),
    (dict(time_pools=(4, 4, 4, 4), crop_seconds=1.0), "a 1.0 s crop is 44 frames, fewer than the 256 the time_pools "
                                                      "(4, 4, 4, 4) reduce to one step; use a longer --crop-seconds "
                                                      "or smaller pools"),
    (dict(n_fft=0), "n_fft must be a positive integer, got 0"),
    (dict(hop_length=2048), "hop_length 2048 is longer than the FFT window n_fft 1024: audio between frames would "
                            "be skipped; use hop_length <= n_fft"),
    (dict(n_fft=256, hop_length=128, n_mels=128, freq_pools=(2, 2, 2, 2)),
     "n_mels 128 leaves 18 empty mel filters at n_fft 256 between 0 and 11025 Hz; lower n_mels or raise n_fft"),
])
def test_network_settings_that_do_not_fit_are_refused_by_the_config(kw, message):
    with pytest.raises(ConfigError) as e:
        Config(**kw)
    assert str(e.value) == message


def test_the_config_agrees_with_the_model_and_the_front_end():
    from crnn_jax import mel

    rng = np.random.default_rng(0)
    for _ in range(100):  # a config is refused exactly when the filterbank would have an empty filter
        sr = int(rng.choice([8000, 16000, 22050, 44100]))
        n_fft, n_mels = int(rng.integers(64, 2048)), int(rng.integers(1, 160))
        f_min = float(rng.uniform(0, sr / 4))
        f_max = float(rng.uniform(f_min + 1, sr / 2))
        empty = int((mel._filterbank_f64(float(sr), n_fft, n_mels, f_min, f_max).max(0) <= 0).sum())
        kw = dict(sample_rate=sr, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, f_min=f_min, f_max=f_max,
                  conv_channels=(4,), freq_pools=(1,), time_pools=(1,), spec_freq_mask_bins=0)
        if empty:
            with pytest.raises(ConfigError, match="empty mel filters"):
                Config(**kw)
        else:
            Config(**kw)
    frames = Config().replace(crop_seconds=1.3)
    assert frames.mel.n_frames(frames.crop_samples) == 56  # as _check_network counts them


def test_bad_settings_in_a_preset_stop_before_any_data_is_loaded(tmp_path, capsys, monkeypatch):
    preset = tmp_path / "bad.py"
    preset.write_text("from crnn_jax.config import Config\nconfig = Config(n_mels=32)\n")
    monkeypatch.setattr(loop, "load_data", lambda cfg: pytest.fail("data loaded before the config was checked"))
    assert train_lib.main(["--config", str(preset), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["crnn_jax.train: error: freq_pools (2, 3, 4, 4) pool 96 mel bands into one but n_mels is 32: the "
                   "last conv block would see no band; raise n_mels or lower the pools"]
    assert not os.path.exists(tmp_path / "w")


def test_a_config_that_is_a_folder_is_one_line(tmp_path, capsys):
    assert train_lib.main(["--config", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"crnn_jax.train: error: --config {tmp_path} is a folder; pass a preset file such as experiments/smoke.py"]


@pytest.mark.parametrize("text,message", [
    ("def get_config():\n    return {}['missing']\n", "failed to load: KeyError: 'missing'"),
    ("x = 1\n", "defines neither `config` nor `get_config()`"),
    ("config = 3\n", "must define a crnn_jax.config.Config, got int"),
])
def test_a_broken_preset_is_one_line(text, message, tmp_path, capsys):
    preset = tmp_path / "broken.py"
    preset.write_text(text)
    assert train_lib.main(["--config", str(preset), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("crnn_jax.train: error: --config"), err
    assert not os.path.exists(tmp_path / "w")


def test_ctrl_c_while_loading_data_and_a_data_file_are_one_line(tmp_path, capsys, monkeypatch):
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    code, ours, err = run(capsys, "--workdir", str(tmp_path / "a"), "--data", str(song))
    assert code == 2 and ours == [f"crnn_jax.train: error: --data {song} is a file; pass the folder that holds one "
                                  f"sub-folder per genre"] and "Traceback" not in err

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "load_data", interrupted)
    code, ours, err = run(capsys, "--workdir", str(tmp_path / "b"))
    assert code == 130 and ours == ["crnn_jax.train: interrupted; rerun with the same --workdir to resume"]
    assert os.listdir(tmp_path / "b") == [] and song.read_bytes() == b"RIFF"


@pytest.mark.parametrize("preset", sorted(f for f in os.listdir(os.path.join(ROOT, "experiments"))
                                          if f.endswith(".py") and f not in EXPERIMENT_SCRIPTS))
def test_every_preset_loads_and_passes_the_config_checks(preset):
    """Each experiments/<name>.py preset defines a Config that Config's own checks accept."""
    cfg = config_lib.load_preset(os.path.join(ROOT, "experiments", preset))
    assert isinstance(cfg, Config) and Config.from_dict(json.loads(cfg.to_json())) == cfg
