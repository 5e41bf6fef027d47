"""The k-fold driver behind `crnn-jax cv` (crnn_jax/cv.py's docstring says what it measures and writes).

run_all trains (or skips, or resumes) every (seed, fold) as a training run in OUT/seed<s>-fold<i> with
--split kfold:K --fold i --seed s (and --group-by, when given, so no group is in two parts), fits the
MFCC+SVM baseline (kfold/baseline.py) on the same training songs and scores it on the same test songs
(OUT/seed<s>-fold<i>/baseline_mfcc_svm.json), scores an ensemble of M members by their mean song
log-probability, and writes the summary after every run (kfold/summary.py).
"""

from __future__ import annotations

import os
import time

import numpy as np

from crnn_jax import files
from crnn_jax.config import Config, member_workdir
from crnn_jax.data import dataset as data_lib
from crnn_jax.data import splits
from crnn_jax.errors import DataError
from crnn_jax.kfold import baseline
from crnn_jax.kfold.summary import summarise, write
from crnn_jax.training import loop, runlog
from crnn_jax.training import report
from crnn_jax.training import workdir as workdir_lib

def run_config(cfg: Config, out: str, k: int, seed: int, fold: int, member: int = 0) -> Config:
    """The one training run of (seed, fold, member): OUT/seed<s>-fold<i> for member 0, OUT/seed<s>-fold<i>-m<m>
    for the other members of an ensemble (each a single network: ensemble=1 in its config.json)."""
    return cfg.replace(split=f"kfold:{k}", fold=fold, seed=seed, member=member, ensemble=1,
                       workdir=member_workdir(os.path.join(out, f"seed{seed}-fold{fold}"), member))


def finished(cfg: Config) -> dict | None:
    """results.json of a finished run of exactly this config, else None."""
    wd = cfg.workdir
    saved = files.read_json(os.path.join(wd, "config.json"))
    if not isinstance(saved, dict) or workdir_lib.config_changes(saved, cfg, {"workdir", "cache_dir", "workers"}):  # another config (train() refuses it in one line) or a longer run of this one (train() resumes)
        return None
    return files.read_json(os.path.join(wd, "results.json"))


def write_timing(path: str, wall: float, res: dict) -> None:
    """OUT/seed<s>-fold<i>/cv_timing.json after a train() call of `wall` seconds. A call that resumed a run
    an earlier call had timed (a longer schedule, or a finished run re-tested after a resumable config change)
    adds its time to that record, and one that trained no step keeps the earlier load average, so a rerun
    never replaces a fold's training time with the seconds of a re-test. A call that resumed a run stopped
    before any record was written (killed mid-fold) adds the stopped segment's training seconds up to its
    checkpoint (train_time.jsonl beside `path`) and marks the record `partial`: that segment's compiling and
    lost steps are not known."""
    resumed = res.get("resumed_from")
    prev = files.read_json(path) if resumed else None
    same_steps = prev is not None and resumed == res.get("steps")
    earlier = (prev or {}).get("wall_seconds", 0.0)
    if resumed and prev is None:
        rows = runlog.read_rows(os.path.join(os.path.dirname(path), runlog.TRAIN_TIME))
        earlier = runlog.train_seconds_at(rows, resumed)
    record = {"wall_seconds": round(wall + earlier, 1), "train_seconds": res["train_seconds"],
              "resumed_from": resumed,
              "loadavg_1_5_15": prev["loadavg_1_5_15"] if same_steps else [round(x, 2) for x in os.getloadavg()]}
    if (resumed and prev is None) or (prev or {}).get("partial"):
        record["partial"] = True
    files.write_json(path, record, None)


def train_member(rc: Config, tag: str, log) -> tuple[Config, dict]:
    """Skip (finished before), resume or train one run -> (its config, its results.json)."""
    res = finished(rc)
    timing_path = os.path.join(rc.workdir, "cv_timing.json")
    if res is not None:
        log(f"{tag} done before: test accuracy {res['test_accuracy']:.4f} ({rc.workdir}/results.json)")
        return rc, res
    workdir_lib.check(rc.workdir, rc)  # a workdir of another config: one line, untouched
    t0 = time.time()
    res = loop.train(rc, log=lambda m: None if m.startswith("config:") else log(f"{tag} {m}"))
    write_timing(timing_path, time.time() - t0, res)
    return rc, res


def fold_timing(records: list[dict | None]) -> dict | None:
    """A fold's cv_timing over its members (one record each): seconds add up, the last load average stands;
    None when a member has no record (trained by an older version, or killed before one was written)."""
    if not records or any(r is None for r in records):
        return None
    if len(records) == 1:
        return records[0]
    out = {"wall_seconds": round(sum(r["wall_seconds"] for r in records), 1),
           "train_seconds": sum(r["train_seconds"] for r in records), "resumed_from": None,
           "loadavg_1_5_15": records[-1]["loadavg_1_5_15"]}
    return {**out, "partial": True} if any(r.get("partial") for r in records) else out


def member_song_log_probs(rc: Config, res: dict, ds: data_lib.Dataset, test: np.ndarray) -> np.ndarray:
    """One member's test songs' mean window log-probabilities [S, C], from its results.json."""
    if "song_log_probs" not in res["test"]:
        raise DataError(f"{rc.workdir}/results.json holds no song log-probabilities (written by an earlier version "
                        "of crnn_jax); move that fold's workdir aside to train it again")
    return np.asarray(res["test"]["song_log_probs"], np.float64)


def ensemble_scores(members: list[tuple[Config, dict]], ds: data_lib.Dataset, test: np.ndarray) -> dict:
    """The fold's ensemble: each test song's log-probabilities averaged over the members (each already
    the mean over the song's windows), argmax -> the row's accuracy and confusion; the members' own
    accuracies beside them, so the summary shows what averaging added."""
    scores = report.ensemble_scores([member_song_log_probs(rc, res, ds, test) for rc, res in members],
                                    ds.labels[test], len(ds.class_names))
    return {**scores, "member_accuracies": [res["test_accuracy"] for _, res in members],
            "member_workdirs": [rc.workdir for rc, _ in members]}


def run_all(cfg: Config, out: str, k: int, seeds: list[int], *, with_baseline: bool = True, log=print) -> dict:
    """Train (or skip, or resume) every (seed, fold), score the baseline on the same split, write the summary.
    -> the summary dict (also OUT/summary.json)."""
    os.makedirs(out, exist_ok=True)
    runs, feats, ds0 = [], None, None
    for seed in seeds:
        # Load once per seed: the data and its class names; checks K before any training starts.
        ds, _ = loop.load_data(run_config(cfg, out, k, seed, 0))
        ds0 = ds if ds0 is None else ds0
        for fold in range(k):
            tag = f"[seed {seed} fold {fold}/{k}]"
            members = [train_member(run_config(cfg, out, k, seed, fold, m),
                                    tag[:-1] + f" member {m}]" if cfg.ensemble > 1 else tag, log)
                       for m in range(cfg.ensemble)]
            rc, res = members[0]
            split = splits.make_split(rc, ds)
            test_names = [ds.names[i] for i in split["test"]]
            for rc_m, res_m in members:
                if test_names != res_m["test_songs"]:
                    raise DataError(f"{rc_m.workdir}: its test songs are not fold {fold}'s of --seeds {seed} on this "
                                    f"data (the data folder changed?); use another --out")
            row = {"seed": seed, "fold": fold, "workdir": rc.workdir, "accuracy": res["test_accuracy"],
                   "n_test": res["n_test"], "confusion": res["test"]["confusion"],
                   "n_train": len(split["train"]), "n_valid": len(split["valid"]),
                   "timing": fold_timing([files.read_json(os.path.join(m.workdir, "cv_timing.json")) for m, _ in members])}
            labels = ds.labels[split["test"]]
            row["correct"] = [bool(x) for x in np.asarray(res["test"]["song_predictions"]) == labels]
            if cfg.ensemble > 1:
                row.update(ensemble_scores(members, ds, split["test"]))
            for key in ("tested_checkpoint", "tested_step", "stopped_early_at"):  # which state was tested
                row[key] = res.get(key)
            if with_baseline:
                path = os.path.join(rc.workdir, "baseline_mfcc_svm.json")
                b = files.read_json(path)
                if b is None or b.get("test_songs") != test_names:
                    if feats is None:  # the features of a song do not depend on the split: compute them once
                        t0 = time.time()
                        feats = baseline.song_features(cfg, ds, np.arange(len(ds)))
                        log(f"MFCC features of {len(ds)} songs ({time.time() - t0:.1f} s)")
                    b = {"workdir": rc.workdir, "data": cfg.data, "split": rc.split, "fold": fold, "seed": seed,
                         "test_songs": test_names, **baseline.evaluate(ds, split, feats)}
                    files.write_json(path, b)
                row["baseline"] = {"accuracy": b["test_accuracy"], "accuracy_songs": b["test_accuracy_songs"],
                                   "confusion": b["confusion_windows"], "C": b["C_windows"],
                                   "correct": [bool(x) for x in np.asarray(b["test_predictions"]) == labels]}
                log(f"{tag} {cfg.model.upper()}{f' ensemble of {cfg.ensemble}' if cfg.ensemble > 1 else ''} "
                    f"{row['accuracy']:.4f}, MFCC+SVM {b['test_accuracy']:.4f} "
                    f"({row['n_test']} test songs)")
            runs.append(row)
            summary = summarise(cfg, k, seeds, runs, ds0.class_names)
            write(summary, out)  # after every run: an interrupted evaluation leaves a (partial) summary
    return summary


def compilation_cache(cfg: Config) -> None:
    """Folds of one seed compile the same programs: keep them on disk (beside the decoded-audio cache) so
    folds 2..K, and a rerun, load instead of compiling. $JAX_COMPILATION_CACHE_DIR, when set, wins."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.join(data_lib.cache_dir(cfg.cache_dir), "xla"))
