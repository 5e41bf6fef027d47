"""`crnn-jax evaluate`'s work: a model (workdir or model file) scored on a folder or split, into a new folder.

A song is scored as training's test pass scores it (training.evaluator); `out` receives results.json (song
and window accuracy, per-class precision/recall/F1, confusion matrices) and confusion.png; the model's
workdir is never written.
"""

from __future__ import annotations

import os

import numpy as np

from crnn_jax import files
from crnn_jax.data import splits
from crnn_jax.errors import ConfigError, DataError
from crnn_jax.inference import predictor as predictor_lib
from crnn_jax.training import report
from crnn_jax.training.evaluator import relabel, score
from crnn_jax.training.loop import load_data, load_test_data

PARTS = ("test", "valid", "train", "all")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out(out: str, workdirs: list[str], model: str | None) -> None:
    """Refuse an --out that would write into a training workdir or over anything that is not ours."""
    for workdir in workdirs:
        if _inside(out, workdir):
            raise ConfigError(f"--out {out} is inside the training workdir {workdir}; evaluation never writes "
                              "there: name another folder")
    if model and os.path.realpath(out) == os.path.realpath(model):
        raise ConfigError(f"--out {out} is the model file; name a folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file; name a folder")
    if os.path.isdir(out):
        foreign = sorted(set(os.listdir(out)) - {"results.json", "confusion.png"})
        if foreign:
            raise ConfigError(f"--out {out} already holds other files ({foreign[0]}, ...); name a new or empty "
                              "folder (or one an earlier evaluation wrote)")


def _changes(trained, changes: dict) -> dict:
    """The config changes for a model trained with --split all --test-data: another --data or --split no longer
    means the run's test songs, so the test data goes; --split all alone would leave no test songs."""
    if not trained.test_data or not {"data", "split"} & set(changes):
        return changes
    if (changes.get("split") or "").strip() == "all":
        raise ConfigError("--split all leaves no test songs: give --part all to score every song of --data")
    split = changes.get("split") or ("random" if trained.split.strip() == "all" else trained.split)
    return {**changes, "split": split, "test_data": ""}


def _refuse_members_trained_on(workdirs: list[str], names: list[str], what: str) -> None:
    """An ensemble is scored on the first member's split: refuse when another member trained (or validated)
    on any of those songs (its split.json), which would inflate the score."""
    for w in workdirs[1:]:
        seen = files.read_json(os.path.join(w, "split.json")) or {}
        used = set(seen.get("train", [])) | set(seen.get("valid", []))
        n = sum(name in used for name in names)
        if n:
            raise ConfigError(f"--workdir {w} trained on {n} of the {len(names)} songs of the {what} (its split "
                              f"differs: another --seed, --fold or data?); an ensemble's members must share "
                              f"one split")


def run(*, out: str, model: str | None = None, workdir: str | list[str] | None = None, part: str = "test",
        changes: dict | None = None, log=print) -> dict:
    """Score the model of `model` (a file) or `workdir` (several: an ensemble, each song scored by the
    members' mean log-probability, as predict does) on the `part` of its data and split (the first member's;
    with config `changes`: data, split, fold, group_by, cache_dir), write results.json and confusion.png into
    `out` -> the results dict."""
    workdirs = [workdir] if isinstance(workdir, str) else list(workdir or [])
    check_out(out, workdirs, model)
    predictor = predictor_lib.Predictor.from_file(model) if model else predictor_lib.load_models(workdirs)
    members = getattr(predictor, "members", [predictor])  # an Ensemble has checked that its members agree
    cfg = predictor.cfg.replace(**_changes(predictor.cfg, dict(changes or {})))
    runs_test_data = part == "test" and bool(cfg.test_data)  # trained with --split all --test-data X, scored as run
    data = cfg.test_data if runs_test_data else cfg.data
    if runs_test_data:  # its test songs are every song of X
        ds, split, part_of = load_test_data(cfg, predictor.class_names), None, "all"
    elif part == "all" and cfg.data != "synthetic":  # every song: no split (a folder too small for one is fine)
        from crnn_jax.data import loaders

        ds, split, part_of = loaders.load_dataset(cfg), None, "all"
    else:
        ds, split = load_data(cfg)
        part_of = part
    ds = relabel(ds, predictor.class_names)
    songs = np.arange(len(ds), dtype=np.int64) if part_of == "all" else split[part]
    if not len(songs):
        raise DataError(f"the {part} part of split {cfg.split!r} of {cfg.data} holds no songs; "
                        "choose another --part or --split")
    what = "--test-data of the run" if runs_test_data else f"{part} part of split {cfg.split}"
    if len(workdirs) > 1 and part_of != "all":
        _refuse_members_trained_on(workdirs, [ds.names[i] for i in songs], what)
    source = model or " + ".join(workdirs)
    log(f"evaluate: {source} on {data} ({what}: {len(songs)} songs)")
    ev = score([(m.cfg, m.state) for m in members], ds, songs)  # each member's network, crop and hop
    results = {"model": source, **({"members": workdirs} if len(workdirs) > 1 else {}), "data": data,
               "split": cfg.split, "fold": cfg.fold, "grouping": splits.describe(cfg),
               "part": part, "accuracy": ev["accuracy"], "window_accuracy": ev["window_accuracy"],
               "n_songs": ev["n_songs"], "class_names": list(ds.class_names),
               "songs": [ds.names[i] for i in songs], part: ev}
    os.makedirs(out, exist_ok=True)
    files.write_json(os.path.join(out, "results.json"), results)
    kinds = [m.cfg.model.upper() for m in members]
    name = " + ".join(kinds) if len(set(kinds)) > 1 else kinds[0] + (f" x {len(kinds)}" if len(kinds) > 1 else "")
    report.plot_confusion(np.array(ev["confusion"]), ds.class_names, os.path.join(out, "confusion.png"),
                          f"{name} {part} songs: accuracy {ev['accuracy']:.3f} "
                          f"(n={ev['n_songs']})")
    log(f"accuracy {ev['accuracy']:.4f} by song ({ev['n_songs']} songs), {ev['window_accuracy']:.4f} by window; "
        f"results in {out}")
    return results
