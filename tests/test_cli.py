"""The commands people type: the crnn-jax console script, every flag in --help with its default, the
common training flags and `--set field=value` reaching the Config, and one line for a bad one."""

import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import EXPERIMENT_SCRIPTS, ROOT, SMOKE
from crnn_jax import cli
from crnn_jax import config as config_lib
from crnn_jax import train as train_lib
from crnn_jax.config import Config, ConfigError
from crnn_jax import cmdline



def test_console_script_dispatches_to_every_module(capsys):
    assert set(cli.COMMANDS) == {"train", "predict", "evaluate", "export", "cv", "bench"}
    for name, (module, _) in cli.COMMANDS.items():
        assert callable(importlib.import_module(module).main), module
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^  {name}\s", out, re.M) for name in cli.COMMANDS), out
    assert cli.main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == ("crnn-jax: error: unknown command 'trian'; choose one of train, "
                                               "predict, evaluate, export, cv, bench")
    assert cli.main([]) == 2


def console_script() -> str:
    """The installed `crnn-jax` executable (pip install -e . puts it beside this Python's)."""
    path = os.path.join(sysconfig.get_path("scripts"), "crnn-jax")
    path = path if os.path.exists(path) else shutil.which("crnn-jax")
    assert path, "no crnn-jax console script: install the package first (pip install -e '.[test]')"
    return path


def test_output_into_a_closed_pipe_is_no_traceback():
    # `crnn-jax --help | head -1`: the reader goes away before the writer is done
    code = ("import os, sys\nr, w = os.pipe(); os.close(r); os.dup2(w, 1)\nfrom crnn_jax import cli\n"
            "sys.exit(cli.main(['--help']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr == ""


@pytest.mark.slow
def test_the_installed_console_script(tmp_path):
    # The process boundary is the point: the entry point pip installed runs cli.main with the command line.
    script = console_script()
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # every import, on stderr
    p = subprocess.run([script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and all(re.search(rf"^  {name}\s", p.stdout, re.M) for name in cli.COMMANDS), p.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "crnn_jax.cli" in imported and "jax" not in imported  # --help answers without loading JAX
    p = subprocess.run([script, "trian"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().startswith("crnn-jax: error: unknown command 'trian'")
    # A command's flags reach its main(argv): one line from crnn_jax.train, nothing written.
    wd = str(tmp_path / "wd")
    p = subprocess.run([script, "train", "--config", SMOKE, "--workdir", wd, "--set", "n_mel=64"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("crnn_jax.train: error: "), p.stderr
    assert "did you mean n_mels?" in lines[0]
    assert not os.path.exists(wd)


def help_of(command, capsys, *sub):
    with pytest.raises(SystemExit) as e:
        cli.main([command, *sub, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def parser_actions(command):
    """The argparse actions behind a command's flags (parse_args builds the parser; capture it)."""
    import argparse

    seen = []
    real = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        seen.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        module = importlib.import_module(cli.COMMANDS[command][0])
        with pytest.raises(SystemExit):
            module.parse_args([]) if hasattr(module, "parse_args") else module.main([])
    finally:
        argparse.ArgumentParser.parse_args = real
    return [a for a in seen[0]._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "export"])
def test_help_lists_every_flag_with_its_default(command, capsys):
    text = " ".join(help_of(command, capsys).split())  # unwrap argparse's line breaks
    actions = parser_actions(command)
    assert len(actions) >= 2
    for a in actions:
        assert a.option_strings[0] in text and a.help, a.option_strings
        if a.default not in (None, False) and not isinstance(a.default, list):
            assert f"default: {a.default}" in text or f"default {a.default}" in " ".join(a.help.split()) or \
                "default" in a.help, a.option_strings
    if command == "train":
        for flag, (field, _) in cmdline.FLAGS.items():
            help_text = " ".join(cmdline.flag_help(field).split())
            assert flag in text and help_text in text, flag
            assert "default" in help_text, flag  # every training flag says what an unset flag means
        for flag, unit in (("--crop-seconds", ", s"), ("--eval-hop-seconds", ", s"), ("--sample-rate", "Hz"),
                           ("--gain-db", "dB"), ("--batch-size", "global")):
            assert unit in cmdline.flag_help(cmdline.FLAGS[flag][0]), flag
        assert "default without --config: 32,64,64,64 on CPU, 64,128,128,128 on GPU" in text
        assert "--set FIELD=VALUE" in text


def test_bench_help_lists_its_subcommands(capsys):
    text = help_of("bench", capsys)
    assert "mel" in text and "train" in text
    text = " ".join(help_of("bench", capsys, "train").split())
    assert "--repeats" in text and "default: 10" in text


def test_common_flags_and_set_reach_the_config():
    cfg = train_lib.parse_config(["--config", SMOKE, "--eval-hop-seconds", "0.5", "--gain-db", "0",
                                  "--lr-schedule", "cosine", "--sample-rate", "16000", "--n-mels", "48",
                                  "--conv-channels", "4,8,8,8", "--set", "freq_pools=2,2,3,4", "--set", "f_max=8000",
                                  "--set", "dropout=None", "--set", "max_steps=3", "--set", "time_pools="])
    assert (cfg.eval_hop_seconds, cfg.gain_db, cfg.lr_schedule, cfg.sample_rate, cfg.n_mels) == (0.5, 0.0, "cosine",
                                                                                                16000, 48)
    assert cfg.conv_channels == (4, 8, 8, 8) and cfg.freq_pools == (2, 2, 3, 4) and cfg.f_max == 8000.0
    assert cfg.dropout is None and cfg.max_steps == 3 and cfg.time_pools == ()
    assert cfg.gru_units == config_lib.load_preset(SMOKE).gru_units  # the preset's other fields stay


def text_of(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "None" if value is None else str(value)


def test_set_parses_every_config_field_by_its_type():
    # Generic over dataclasses.fields(Config): fields added later are covered without a list to keep.
    base = Config()
    for f in dataclasses.fields(Config):
        value = getattr(base, f.name)
        assert cmdline.parse_override(f"{f.name}={text_of(value)}") == (f.name, value), f.name
    assert cmdline.parse_override("seed=7") == ("seed", 7) and cmdline.parse_override("n-mels=64")[1] == 64


@pytest.mark.parametrize("text,message", [
    ("n_mel=64", "Config has no field 'n_mel' (did you mean n_mels?)"),
    ("zzz=1", "Config has no field 'zzz'; fields: data, "),
    ("n_mels=lots", "'lots' is not a valid int for n_mels"),
    ("seed=1.5", "'1.5' is not a valid int for seed"),
    ("conv_channels=8,x", "'8,x' is not a valid tuple[int, ...] for conv_channels"),
    ("learning_rate=nan", "'nan' is not a valid float for learning_rate"),
    ("seed=None", "'None' is not a valid int for seed"),
    ("n_mels", "write field=value"),
])
def test_bad_set_is_one_clear_error(text, message):
    with pytest.raises(ConfigError) as e:
        train_lib.parse_config(["--set", text])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_flags_on_the_command_line_are_one_line_and_touch_nothing(tmp_path, capsys):
    wd = str(tmp_path / "wd")
    for args, message in ((["--set", "n_mel=64"], "did you mean n_mels?"),
                          (["--conv-channels", "8,x"], "is not a comma list of integers"),
                          (["--set", "conv_channels=8,8"], "need the same length"),
                          # values that once passed the checks and failed later with a traceback
                          (["--set", "eps=-1"], "eps must be >= 0"),
                          (["--crop-seconds", "inf"], "crop_seconds must be a finite number"),
                          (["--crop-seconds", "1e-5"], "crop is 0 samples"),
                          (["--eval-hop-seconds", "inf"], "eval_hop_seconds must be a finite number"),
                          (["--gain-db", "nan"], "gain_db must be a finite number"),
                          (["--sample-rate", "16000"], "add --set f_max=8000")):
        assert cli.main(["train", "--config", SMOKE, "--workdir", wd, *args]) == 2
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], cap.err
        assert lines[0].startswith("crnn_jax.train: error: ") and cap.out == ""
    assert not os.path.exists(wd)


@pytest.mark.slow
def test_train_through_the_console_entry_with_new_flags(tmp_path, capsys):
    wd = str(tmp_path / "run")
    assert cli.main(["train", "--config", SMOKE, "--workdir", wd, "--max-steps", "2", "--n-mels", "48",
                     "--set", "freq_pools=2,2,3,4", "--eval-hop-seconds", "0.5", "--gain-db", "3"]) == 0
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    assert saved["n_mels"] == 48 and saved["freq_pools"] == [2, 2, 3, 4] and saved["eval_hop_seconds"] == 0.5
    assert saved["gain_db"] == 3.0
    with open(os.path.join(wd, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 2 and results["test"]["n_windows"] > results["test"]["n_songs"]  # 0.5 s hop


PRESETS = ("cnn", "default_cpu", "gtzan", "gtzan70", "gtzan70_robust", "new_artists", "new_artists_robust",
           "seed_report", "seed_report_cnn", "smoke", "synth_compare")


def test_every_preset_loads_and_says_what_it_is():
    """Each experiments/<name>.py preset loads to a valid Config (Config validates itself when built) whose
    model matches its name, and the CNN variants differ from their CRNN presets in the model alone."""
    listed = {f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments")) if f.endswith(".py")}
    assert set(PRESETS) | {f[:-3] for f in EXPERIMENT_SCRIPTS} == listed  # a new preset joins this test
    cfgs = {name: config_lib.load_preset(os.path.join(ROOT, "experiments", f"{name}.py")) for name in PRESETS}
    for name, cfg in cfgs.items():
        assert cfg.model == ("cnn" if "cnn" in name else "crnn"), name
    assert cfgs["seed_report_cnn"] == cfgs["seed_report"].replace(model="cnn")
    assert cfgs["cnn"] == cfgs["default_cpu"].replace(model="cnn")
    # new artists: the gtzan70 recipe, every gtzan-70 clip training, tested on other artists' clips
    assert cfgs["new_artists"] == cfgs["gtzan70"].replace(split="all", test_data="../shared/data/gtzan-53-16k",
                                                          max_steps=1680)
    # the recipe for other artists and any recording chain: gtzan70 with the low-pass, 2,520 steps and two
    # networks, and its new-artist harness trains those steps on every gtzan-70 clip
    assert cfgs["gtzan70_robust"] == cfgs["gtzan70"].replace(lowpass_prob=0.8, epochs=630, ensemble=2)
    assert [c.workdir for c in cfgs["gtzan70_robust"].replace(workdir="runs/r").members()] == ["runs/r", "runs/r-m1"]
    assert cfgs["gtzan70_robust"].epochs * 4 == 2520  # 56 training songs a fold at batch 16: 4 steps an epoch
    assert cfgs["new_artists_robust"] == cfgs["gtzan70_robust"].replace(
        split="all", test_data="../shared/data/gtzan-53-16k", max_steps=2520)
    assert cfgs["seed_report"].batch_size == 4 and cfgs["seed_report"].momentum == 0.9  # the report's recipe
