"""The summary of a k-fold evaluation: song accuracy mean +- spread over folds and seeds, the pooled
confusion matrices, per-genre recall, the network paired with MFCC+SVM (by fold and, per seed, by song with an
exact McNemar test), fold times; written as summary.json, summary.md and two confusion plots.

`crnn_jax.cv` runs the folds and hands each run's record here (a dict per run: seed, fold, n_test, accuracy,
correct [n_test] bools, confusion, and the same under "baseline"); nothing here trains or reads audio."""

from __future__ import annotations

import json
import os
import statistics

import numpy as np

from crnn_jax import files
from crnn_jax.config import Config
from crnn_jax.data import splits
from crnn_jax.training import report


NOTE = ("Folds are by song (every window of a song on one side), not by artist: where one artist or album "
        "has several songs (as adjacent GTZAN clips do), this measures recognising a new song of a possibly "
        "known artist, not artist-filtered generalisation.")
NOTE_GROUPED = ("Folds are by {g}: all the songs of each {g} are on one side of every split, so this measures songs "
                "of {g}s the network has never heard.")


def spread(runs: list[dict], key) -> dict:
    """Mean over all runs; spread between folds (sample std over each seed's folds, pooled over seeds:
    sqrt of the mean variance) and between seeds (sample std of the per-seed means); per seed mean/std.
    A std of fewer than two values is None (a partial summary)."""
    seeds = sorted({r["seed"] for r in runs})
    by_seed = {s: [key(r) for r in runs if r["seed"] == s] for s in seeds}
    std = lambda v: statistics.stdev(v) if len(v) > 1 else None  # noqa: E731
    variances = [statistics.variance(v) for v in by_seed.values() if len(v) > 1]
    return {
        "mean": statistics.mean(key(r) for r in runs),
        "std_folds": float(np.sqrt(statistics.mean(variances))) if variances else None,
        "std_seeds": std([statistics.mean(v) for v in by_seed.values()]),
        "std_all": std([key(r) for r in runs]),
        "per_seed": {str(s): {"mean": statistics.mean(v), "std": std(v), "folds": v} for s, v in by_seed.items()},
    }


def pooled(runs: list[dict], conf_key, class_names) -> dict:
    conf = np.sum([np.array(conf_key(r)) for r in runs], axis=0)
    return {"confusion": conf.tolist(), "accuracy": float(np.trace(conf) / conf.sum()),
            "recall": {n: v["recall"] for n, v in report.per_class(conf, class_names).items()}}


def mcnemar(runs: list[dict]) -> dict:
    """Exact McNemar test of network against baseline on the same test songs, per seed: over a seed's K
    folds every song is tested once, by both, so the songs are the paired samples (folds of 14 songs make
    a fold's accuracy too coarse to pair on). n_net_only: songs only the network got right; n_base_only:
    only the baseline; p: two-sided exact binomial p-value of the larger count given their sum (1.0 when
    they are equal or both 0). A song of two seeds is two pairs of one song, not independent: no pooled p."""
    from scipy import stats

    out = {}
    for seed in sorted({r["seed"] for r in runs}):
        net = np.concatenate([r["correct"] for r in runs if r["seed"] == seed]).astype(bool)
        base = np.concatenate([r["baseline"]["correct"] for r in runs if r["seed"] == seed]).astype(bool)
        a, b = int((net & ~base).sum()), int((~net & base).sum())
        p = float(stats.binomtest(max(a, b), a + b, 0.5).pvalue) if a + b else 1.0
        out[str(seed)] = {"n_songs": int(net.size), "n_net_only": a, "n_base_only": b, "p": min(1.0, p)}
    return out


def summarise(cfg: Config, k: int, seeds: list[int], runs: list[dict], class_names) -> dict:
    s = {"model": cfg.model, "data": cfg.data, "folds": k, "seeds": seeds, "n_runs": len(runs),
         "complete": len(runs) == k * len(seeds),
         "n_test_songs": sum(r["n_test"] for r in runs), "class_names": list(class_names),
         "grouping": splits.describe(cfg), "note": NOTE_GROUPED.format(g=cfg.group_by) if cfg.group_by else NOTE,
         "config": json.loads(cfg.replace(workdir="", seed=0, fold=0, split=f"kfold:{k}").to_json()),
         "network": {**spread(runs, lambda r: r["accuracy"]), **pooled(runs, lambda r: r["confusion"], class_names)},
         "runs": runs, "ensemble": cfg.ensemble}
    if cfg.ensemble > 1:  # the rows score the ensemble; this is what its members scored alone
        s["members"] = spread(runs, lambda r: statistics.mean(r["member_accuracies"]))
    if all("baseline" in r for r in runs):
        s["baseline"] = {**spread(runs, lambda r: r["baseline"]["accuracy"]),
                         **pooled(runs, lambda r: r["baseline"]["confusion"], class_names)}
        s["baseline_songs"] = spread(runs, lambda r: r["baseline"]["accuracy_songs"])
        s["difference"] = spread(runs, lambda r: r["accuracy"] - r["baseline"]["accuracy"])
        if all("correct" in r and "correct" in r["baseline"] for r in runs):
            s["mcnemar"] = mcnemar(runs)
    times = [r["timing"]["wall_seconds"] for r in runs if r.get("timing")]
    loads = [r["timing"]["loadavg_1_5_15"][0] for r in runs if r.get("timing")]
    if times:
        s["timing"] = {"fold_wall_seconds_mean": statistics.mean(times), "fold_wall_seconds_max": max(times),
                       "loadavg_1min_mean": statistics.mean(loads), "timed_runs": len(times),
                       "partial_runs": sum(bool(r["timing"].get("partial")) for r in runs if r.get("timing"))}
    return s


def plus_minus(d: dict) -> str:
    """A spread() dict as text: "mean ± std (folds), seeds ± std"."""
    folds = f" ± {d['std_folds']:.3f} (folds)" if d.get("std_folds") is not None else ""
    seeds = f", seeds ± {d['std_seeds']:.3f}" if d.get("std_seeds") is not None else ""
    return f"{d['mean']:.3f}{folds}{seeds}"


def write(s: dict, out: str) -> None:
    """summary.json, summary.md and the confusion plots."""
    files.write_json(os.path.join(out, "summary.json"), s)
    name, has_b = s["model"].upper(), "baseline" in s
    lines = [f"# {s['folds']}-fold evaluation by {s['grouping']}: {name} on {s['data']}", "", s["note"], "",
             ("" if s["complete"] else f"**PARTIAL: {s['n_runs']} of {s['folds'] * len(s['seeds'])} runs "
              "finished; run the same command again to complete it.** ")
             + f"Seeds {', '.join(map(str, s['seeds']))}; {s['n_runs']} runs, {s['n_test_songs']} test songs in all. "
             "Accuracy is song-level (mean window log-probability per song).", "",
             f"| seed | fold | test songs | {name} |" + (" MFCC+SVM |" if has_b else "")
             + " tested checkpoint (step) | wall s | load (1 min) |",
             "|---|---|---|---|" + ("---|" if has_b else "") + "---|---|---|"]
    for r in s["runs"]:
        t = r.get("timing") or {}
        lines.append(f"| {r['seed']} | {r['fold']} | {r['n_test']} | {r['accuracy']:.3f} |"
                     + (f" {r['baseline']['accuracy']:.3f} |" if has_b else "")
                     + f" {r.get('tested_checkpoint') or '-'} ({r.get('tested_step') or '-'}) |"
                     + f" {t.get('wall_seconds', '-')}{' (partial)' if t.get('partial') else ''} |"
                     + f" {(t.get('loadavg_1_5_15') or ['-'])[0]} |")
    ens = s.get("ensemble", 1)
    lines += ["", f"- {name}" + (f", ensemble of {ens} (mean song log-probability)" if ens > 1 else "")
              + f": {plus_minus(s['network'])}; pooled {s['network']['accuracy']:.3f}"]
    if "members" in s:
        lines.append(f"- its members alone (mean of the {ens} accuracies per fold): {plus_minus(s['members'])}")
    if has_b:
        lines += [f"- MFCC+SVM (windows): {plus_minus(s['baseline'])}; pooled {s['baseline']['accuracy']:.3f}",
                  f"- MFCC+SVM (song statistics): {plus_minus(s['baseline_songs'])}",
                  f"- {name} - MFCC+SVM, paired by run: {plus_minus(s['difference'])}"]
        for seed, m in s.get("mcnemar", {}).items():
            lines.append(f"- paired by song, seed {seed} (exact McNemar over its {m['n_songs']} test songs): "
                         f"{m['n_net_only']} right only by the {name}, {m['n_base_only']} only by MFCC+SVM, "
                         f"p = {m['p']:.3f}")
    if "timing" in s:
        t = s["timing"]
        lines.append(f"- wall time per fold (every run that recorded one, in this call or an earlier one): mean "
                     f"{t['fold_wall_seconds_mean']:.0f} s, max "
                     f"{t['fold_wall_seconds_max']:.0f} s, 1-minute load average {t['loadavg_1min_mean']:.2f}"
                     + (f"; {t['partial_runs']} partial (stopped and resumed: the stopped part's training "
                        "seconds only)" if t.get("partial_runs") else ""))
    lines += ["", "Per-genre recall (pooled over all test songs):", "",
              "| genre | " + name + " |" + (" MFCC+SVM |" if has_b else ""), "|---|---|" + ("---|" if has_b else "")]
    for g in s["class_names"]:
        lines.append(f"| {g} | {s['network']['recall'][g]:.2f} |"
                     + (f" {s['baseline']['recall'][g]:.2f} |" if has_b else ""))
    with files.atomic(os.path.join(out, "summary.md")) as f:
        f.write("\n".join(lines) + "\n")
    n = s["n_test_songs"]
    report.plot_confusion(np.array(s["network"]["confusion"]), s["class_names"],
                          os.path.join(out, "summary-confusion.png"),
                          f"{name}, {s['folds']} folds x {len(s['seeds'])} seeds: "
                          f"{s['network']['accuracy']:.3f} (n={n})")
    if has_b:
        report.plot_confusion(np.array(s["baseline"]["confusion"]), s["class_names"],
                              os.path.join(out, "summary-confusion-baseline.png"),
                              f"MFCC+SVM, same folds: {s['baseline']['accuracy']:.3f} (n={n})")
