"""Test-time augmentation by low-pass (issue 31's TTA row): a trained run's test songs scored with every
window also low-passed at a few cutoffs, the views' log-probabilities averaged per window, then per song as
the Evaluator does. Prints song accuracy for the plain windows, each low-passed view alone and the views
together.

    python experiments/tta_lowpass.py runs/kf-robust-s3-f0                          # its own test songs
    python experiments/tta_lowpass.py runs/kf-robust-s3-f0 --data runs/gtzan-70-16k  # the same songs, 16 kHz chain
    python experiments/tta_lowpass.py runs/na-lp08e630-s0                           # a --test-data run: gtzan-53-16k

The low-pass is training's own (training.augment.lowpass: a brick wall on each window's FFT).
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from crnn_jax import model as model_lib
from crnn_jax.data import dataset as data_lib
from crnn_jax.inference import predictor as predictor_lib
from crnn_jax.training import augment, report, steps
from crnn_jax.training.evaluator import dataset_crops, padded_batches, relabel
from crnn_jax.training.loop import load_data, load_test_data

CUTOFFS = (9000.0, 7500.0, 6000.0, 5000.0, 4000.0, 3000.0)  # Hz; the training low-pass draws 3 kHz-Nyquist


def window_log_probs(workdir: str, data: str | None, cutoffs: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """-> (log-probabilities [1 + len(cutoffs), W, C]: plain windows first, window songs [W], songs [S],
    labels [songs of the data set], class names)."""
    pred = predictor_lib.load_model(workdir)
    cfg = pred.cfg.replace(data=data) if data else pred.cfg
    if cfg.test_data and not data:  # trained with --split all --test-data X: X's songs are the test songs
        ds = load_test_data(cfg, pred.class_names)
        songs = np.arange(len(ds), dtype=np.int64)
    else:
        ds, split = load_data(cfg)
        ds, songs = relabel(ds, pred.class_names), split["test"]
    net = model_lib.build_model(cfg, len(pred.class_names))

    @jax.jit
    def forward(state, crops, cutoff):  # int16 [b, crop], Hz -> log-probabilities [b, C]
        audio = steps.to_audio(crops, jnp.ones(crops.shape[0], jnp.float32))
        audio = jnp.where(cutoff > 0, augment.lowpass(audio, jnp.full(crops.shape[0], cutoff), cfg.sample_rate), audio)
        logits = net.apply({"params": state.params, "batch_stats": state.batch_stats}, audio, train=False)
        return model_lib.log_probs(logits, cfg.head)

    w_song, w_off = data_lib.eval_windows(ds.lengths, songs, crop=cfg.crop_samples, hop=cfg.eval_hop_samples)
    views = []
    for cutoff in (0.0,) + tuple(cutoffs):
        out = [np.asarray(forward(pred.state, dataset_crops(ds, s, o, cfg.crop_samples), cutoff))[:n]
               for s, o, n in padded_batches(w_song, w_off, 64)]
        views.append(np.concatenate(out))
    return np.stack(views), w_song, songs, ds.labels, ds.class_names, cfg.head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdir")
    p.add_argument("--data", default=None, help="another folder with the same song names (e.g. 16 kHz copies)")
    p.add_argument("--cutoffs", default=",".join(str(int(c)) for c in CUTOFFS), help="Hz, comma-separated")
    p.add_argument("--json", default=None, help="also write the accuracies here")
    args = p.parse_args()
    cutoffs = tuple(float(c) for c in args.cutoffs.split(","))
    logp, w_song, songs, labels, names, head = window_log_probs(args.workdir, args.data, cutoffs)
    rows = {"plain": [0]} | {f"{int(c)} Hz alone": [i + 1] for i, c in enumerate(cutoffs)}
    rows["plain + every cutoff"] = list(range(len(cutoffs) + 1))
    out = {}
    for name, views in rows.items():
        ev = report.evaluate_scores(logp[views].mean(0), w_song, songs, labels, names, head)
        out[name] = {"accuracy": ev["accuracy"], "correct": int(round(ev["accuracy"] * len(songs))), "songs": len(songs)}
        print(f"{args.workdir}: {name:24s} {out[name]['correct']:3d} of {len(songs)} songs ({ev['accuracy']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
