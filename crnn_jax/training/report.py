"""Scores and pictures: song-level aggregation, confusion matrices, per-class P/R/F1, metrics.jsonl, plots.

Song-level prediction = argmax of the mean over a song's windows of the per-window log-probabilities;
that is the number reported as `test_accuracy`. Window-level accuracy is reported beside it.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from crnn_jax import files


def song_log_probs(window_logp: np.ndarray, window_song: np.ndarray, songs: np.ndarray) -> np.ndarray:
    """Mean window log-probability per song: [W, C], [W] song ids, [S] songs -> [S, C]."""
    index = {int(s): i for i, s in enumerate(songs)}
    rows = np.array([index[int(s)] for s in window_song])
    total = np.zeros((len(songs), window_logp.shape[1]), np.float64)
    np.add.at(total, rows, window_logp)
    counts = np.bincount(rows, minlength=len(songs))[:, None]
    return total / np.maximum(counts, 1)


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_classes, n_classes] counts; row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def per_class(conf: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    out = {}
    for i, name in enumerate(class_names):
        tp = conf[i, i]
        p = tp / conf[:, i].sum() if conf[:, i].sum() else 0.0
        r = tp / conf[i].sum() if conf[i].sum() else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[name] = {"precision": float(p), "recall": float(r), "f1": float(f1), "support": int(conf[i].sum())}
    return out


def window_loss(window_logp: np.ndarray, w_labels: np.ndarray, head: str = "softmax") -> float:
    """The training loss on unsmoothed one-hot targets (model.loss_fn), averaged over windows: window_logp
    [W, C] of the head (log-softmax; log-sigmoid per class), w_labels [W]. Sigmoid: the mean over classes of
    the binary cross-entropies, log(1 - sigmoid) recovered from log-sigmoid in float64."""
    rows = np.arange(len(w_labels))
    if head == "softmax":
        return float(-window_logp[rows, w_labels].mean())
    lp = window_logp.astype(np.float64)
    # log(1 - p) = log(-expm1(log p)), exact while float32 keeps log p below 0 (logits under ~87); the clip
    # keeps a wrong class's larger logit finite (about 87 where optax says z)
    log_not = np.log(-np.expm1(np.minimum(lp, -np.finfo(np.float32).tiny)))
    target = np.zeros_like(lp)
    target[rows, w_labels] = 1.0
    return float(-(target * lp + (1.0 - target) * log_not).mean())


def evaluate_scores(window_logp: np.ndarray, window_song: np.ndarray, songs: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], head: str = "softmax") -> dict:
    """Window- and song-level scores. window_logp [W, C] (the head's log-probabilities); window_song [W];
    songs [S]; labels: per dataset row (indexed by song id); head: softmax | sigmoid. -> dict with accuracy
    (song-level), window_accuracy, loss (the head's training loss on the windows, window_loss), confusion
    (song), window_confusion, per_class (song), n_songs, n_windows."""
    n_classes = len(class_names)
    w_labels = labels[window_song]
    w_pred = window_logp.argmax(-1)
    slp = song_log_probs(window_logp, window_song, songs)
    s_labels = labels[songs]
    s_pred = slp.argmax(-1)
    conf = confusion(s_labels, s_pred, n_classes)
    return {
        "accuracy": float((s_pred == s_labels).mean()),
        "window_accuracy": float((w_pred == w_labels).mean()),
        "loss": window_loss(window_logp, w_labels, head),
        "confusion": conf.tolist(),
        "window_confusion": confusion(w_labels, w_pred, n_classes).tolist(),
        "per_class": per_class(conf, class_names),
        "n_songs": int(len(songs)),
        "n_windows": int(len(window_song)),
        "song_predictions": s_pred.tolist(),
        "song_log_probs": slp.tolist(),  # [S, C] mean window log-probability: what an ensemble averages
        "song_labels": s_labels.tolist(),  # [S] the true genre of each song, in the model's genre order
    }


def ensemble_scores(song_log_probs: Sequence[np.ndarray], labels: np.ndarray, n_classes: int) -> dict:
    """Several networks' song scores as one ensemble: song_log_probs, one [S, C] per member (each the mean
    over a song's windows), averaged; argmax against labels [S] -> accuracy, correct [S], confusion."""
    pred = np.mean([np.asarray(x, np.float64) for x in song_log_probs], axis=0).argmax(-1)
    return {"accuracy": float((pred == labels).mean()), "correct": [bool(x) for x in pred == labels],
            "confusion": confusion(labels, pred, n_classes).tolist()}


def write_run_report(workdir: str, cfg, class_names: Sequence[str], results: dict, metrics_path: str) -> None:
    """A finished run's results.json, confusion.png (its test songs) and curves.png (metrics.jsonl)."""
    from crnn_jax.training.runlog import read_rows

    files.write_json(os.path.join(workdir, "results.json"), results)
    test = results["test"]
    plot_confusion(np.array(test["confusion"]), class_names, os.path.join(workdir, "confusion.png"),
                   f"{cfg.model.upper()} test songs: accuracy {test['accuracy']:.3f} (n={test['n_songs']})")
    plot_curves(read_rows(metrics_path), os.path.join(workdir, "curves.png"))


# --- pictures --------------------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend: never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(conf: np.ndarray, class_names: Sequence[str], path: str, title: str) -> None:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    plt = pyplot()
    conf = np.asarray(conf)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(rows: list[dict], path: str) -> None:
    """Training and validation loss/accuracy against step, saved as PNG."""
    plt = pyplot()
    train = [r for r in rows if "train_loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        a1.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train")
        a2.plot([r["step"] for r in train], [r["train_accuracy"] for r in train], label="train (windows)")
    if evals:
        a1.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation")
        a2.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", label="validation (songs)")
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a2.set_xlabel("step")
    a2.set_ylabel("accuracy")
    a2.set_ylim(0, 1)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
