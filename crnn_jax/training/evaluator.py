"""Evaluation shared by training (validation and test passes), `crnn-jax evaluate`, predict and k-fold:
windows -> song scores.

A song is scored as a test song: every evaluation window (data.eval_windows: the training crop, hop = eval
hop) through the network in fixed-size batches, the window log-probabilities averaged over the song, argmax =
the song's genre (report.evaluate_scores). Lives in training/ because the loop validates with it; inference
builds on it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax
import numpy as np

from crnn_jax import model as model_lib
from crnn_jax.config import Config
from crnn_jax.data import dataset as data_lib
from crnn_jax.errors import DataError
from crnn_jax.training import report
from crnn_jax.training import steps as steps_lib


def padded_batches(w_song: np.ndarray, w_off: np.ndarray, batch: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Windows [W] (song ids, offsets in samples) in batches of exactly `batch` -> (songs [batch],
    offsets [batch], n real). The last batch is padded with copies of its last window (their outputs are
    dropped by the caller), so every call has one shape and compiles once."""
    for i in range(0, len(w_song), batch):
        s, o = w_song[i:i + batch], w_off[i:i + batch]
        n, pad = len(s), batch - len(s)
        yield np.concatenate([s, np.repeat(s[-1:], pad)]), np.concatenate([o, np.repeat(o[-1:], pad)]), n


def dataset_crops(ds: data_lib.Dataset, songs: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
    """The one place evaluation cuts crops from a Dataset: songs/offsets [b] -> int16 [b, crop]."""
    return ds.crops(songs, offsets, crop)


def song_crops(song: np.ndarray, offsets: np.ndarray, crop: int) -> np.ndarray:
    """Windows of one song: song int16 [samples >= offsets.max() + crop], offsets [b] -> int16 [b, crop]."""
    return song[offsets[:, None] + np.arange(crop)[None, :]]


def song_probabilities(mean_log_probs: np.ndarray, head: str) -> np.ndarray:
    """A song's mean window log-probabilities [C] -> genre probabilities [C]. Softmax head: renormalised
    (the geometric mean of the windows' distributions; sums to 1). Sigmoid head: exp per class (each
    genre's own geometric-mean probability; the genres are independent outputs)."""
    mean = np.asarray(mean_log_probs, np.float64)
    return np.exp(mean - np.logaddexp.reduce(mean)) if head == "softmax" else np.exp(mean)


class Evaluator:
    """Every window of the given songs through the pmapped eval step -> report.evaluate_scores dict.

    p_eval: `parallel` of make_eval_step(gather=True). n_devices: of the whole run; local: (first, count),
    this process's devices (default all): it slices only their windows' crops, and the gathered outputs
    give every process every window's scores.
    """

    def __init__(self, cfg: Config, ds: data_lib.Dataset, p_eval, n_devices: int,
                 local: tuple[int, int] | None = None):
        self.cfg, self.ds, self.p_eval, self.n_devices = cfg, ds, p_eval, n_devices
        per_device = max(1, -(-max(cfg.batch_size, 64) // n_devices))
        self.batch = n_devices * per_device  # windows per call, over all devices
        first, self.n_local = local or (0, n_devices)
        self.rows = slice(first * per_device, (first + self.n_local) * per_device)  # this process's windows

    @classmethod
    def for_training(cls, cfg: Config, ds: data_lib.Dataset, net, n_devices: int,
                     local: tuple[int, int] | None = None) -> "Evaluator":
        """The evaluator of a training run: `net`'s pmapped eval step (the one `parallel`)."""
        p_eval = steps_lib.parallel(steps_lib.make_eval_step(net, head=cfg.head, gather=True), state_out=False)
        return cls(cfg, ds, p_eval, n_devices, local)

    def window_log_probs(self, state, songs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every evaluation window of `songs` -> (log-probabilities [W, C], window song ids [W])."""
        cfg, ds = self.cfg, self.ds
        w_song, w_off = data_lib.eval_windows(ds.lengths, songs, crop=cfg.crop_samples, hop=cfg.eval_hop_samples)
        out = []
        for s, o, n in padded_batches(w_song, w_off, self.batch):
            s, o = s[self.rows], o[self.rows]
            crops = dataset_crops(ds, s, o, cfg.crop_samples)
            batch = {"crops": steps_lib.shard(crops, self.n_local),
                     "gains": steps_lib.shard(np.ones(len(s), np.float32), self.n_local)}
            logp = np.asarray(self.p_eval(state, batch))[0]  # first local device's copy: [devices, per_device, classes]
            out.append(logp.reshape(-1, logp.shape[-1])[:n])  # [windows, classes]
        return np.concatenate(out), w_song

    def __call__(self, state, songs: np.ndarray) -> dict:
        logp, w_song = self.window_log_probs(state, songs)
        return report.evaluate_scores(logp, w_song, songs, self.ds.labels, self.ds.class_names, self.cfg.head)


def score(members: list[tuple[Config, object]], ds: data_lib.Dataset, songs: np.ndarray) -> dict:
    """Trained states scored on `songs` of `ds` with every device of this (single) process, exactly as
    train() scores its test split -> report.evaluate_scores dict. members: [(run config, state with params
    and batch_stats)]; several are an ensemble: each window's log-probabilities averaged over the members
    (as inference.predictor.Ensemble does; they must share head, crop and evaluation hop, which it checks)."""
    logps = []
    for cfg, state in members:
        net = model_lib.build_model(cfg, len(ds.class_names), axis_name=steps_lib.AXIS)
        ev = Evaluator.for_training(cfg, ds, net, jax.device_count())
        logp, w_song = ev.window_log_probs(steps_lib.place_state(state), songs)
        logps.append(logp)
    mean = logps[0] if len(logps) == 1 else np.mean([lp.astype(np.float64) for lp in logps], axis=0)
    return report.evaluate_scores(mean, w_song, songs, ds.labels, ds.class_names, members[0][0].head)


def relabel(ds: data_lib.Dataset, class_names: tuple[str, ...]) -> data_lib.Dataset:
    """The data set's labels renumbered to the model's genre order. DataError when the data holds a
    genre the model has no output for."""
    if tuple(ds.class_names) == tuple(class_names):
        return ds
    unknown = [c for c in ds.class_names if c not in class_names]
    if unknown:
        raise DataError(f"--data has genre(s) {', '.join(unknown)} that the model does not know "
                        f"(its genres: {', '.join(class_names)})")
    index = np.array([class_names.index(c) for c in ds.class_names], np.int32)
    return dataclasses.replace(ds, labels=index[ds.labels], class_names=tuple(class_names))
