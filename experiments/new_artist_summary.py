"""One row of the new-artist table (experiments/README.md, "New artists") from the runs of one choice:

    python experiments/new_artist_summary.py runs/na-base-s0 runs/na-base-s1 runs/na-base-s2

Each argument is a training workdir (its results.json) or an evaluation folder (`crnn-jax evaluate --out`);
all must have scored the same songs. Prints song accuracy per run and mean +- sample std over runs, the test
loss, per-genre recall pooled over runs (right / songs), and the runs as one ensemble: a song's score is the
mean over runs of its mean window log-probability (what `crnn-jax predict --workdir A --workdir B` does).
"""

import argparse
import json
import os
import sys

import numpy as np


def load(path: str) -> dict:
    """results.json of a workdir or evaluation folder -> {"songs", "labels", "log_probs" [S, C], "classes",
    "accuracy", "loss"}."""
    with open(os.path.join(path, "results.json") if os.path.isdir(path) else path) as f:
        r = json.load(f)
    t = r["test"]  # a workdir's and an evaluation's results.json both keep the scores under "test"
    songs = r.get("test_songs") or r["songs"]  # "genre/file" paths: the folder is the true genre
    labels = np.array([r["class_names"].index(s.split("/")[0]) for s in songs])
    return {"songs": songs, "labels": labels, "log_probs": np.asarray(t["song_log_probs"]),
            "classes": r["class_names"], "accuracy": t["accuracy"], "loss": t["loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="workdirs or evaluation folders of one choice")
    runs = []
    for r in p.parse_args(argv).runs:
        try:
            runs.append(load(r))
        except (OSError, ValueError, KeyError) as e:  # a run not finished, or not a run: one line naming it
            print(f"new_artist_summary: {r}: no readable results.json ({type(e).__name__}: {e}); give a finished "
                  f"workdir or a `crnn-jax evaluate --out` folder", file=sys.stderr)
            return 2
    first = runs[0]
    if any(r["songs"] != first["songs"] or r["classes"] != first["classes"] for r in runs):
        print("new_artist_summary: the runs scored different songs or genres", file=sys.stderr)
        return 2
    acc = np.array([r["accuracy"] for r in runs])
    n = len(first["labels"])
    spread = f" +- {acc.std(ddof=1):.3f}" if len(acc) > 1 else ""
    print(f"song accuracy over {n} songs: {acc.mean():.3f}{spread} ({', '.join(f'{a:.3f}' for a in acc)}); "
          f"test loss {np.mean([r['loss'] for r in runs]):.2f}")
    right = np.zeros(len(first["classes"]), int)
    total = np.zeros(len(first["classes"]), int)
    for r in runs:
        pred = r["log_probs"].argmax(1)
        np.add.at(total, r["labels"], 1)
        np.add.at(right, r["labels"], pred == r["labels"])
    print("per-genre recall, pooled: " + ", ".join(
        f"{c} {right[i] / max(total[i], 1):.2f}" for i, c in enumerate(first["classes"])))
    if len(runs) > 1:
        ens = np.mean([r["log_probs"] for r in runs], axis=0).argmax(1)
        print(f"the {len(runs)} runs as one ensemble: {np.mean(ens == first['labels']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
