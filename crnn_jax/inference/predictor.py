"""A trained model scoring your own songs: windows -> mean log-probability per song -> genre probabilities.

A song is scored exactly as evaluation scores a test song (training.evaluator): cut into windows of the
training crop (data.eval_windows, hop = eval hop), each window through the network with its stored
parameters (the book's theta, running BatchNorm averages, no dropout), and the per-window
log-probabilities averaged over the song. Windows go through one jitted forward in fixed-size batches,
so a ten-minute song needs no more device memory than a batch of windows. A Predictor comes from a
training workdir (inference.restore) or a model file (inference.modelfile); several workdirs make an
Ensemble. Nothing in the workdir or beside the model file is ever written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax
import numpy as np

from crnn_jax import model as model_lib
from crnn_jax.config import Config
from crnn_jax.data import dataset as data_lib
from crnn_jax.errors import ConfigError, DataError
from crnn_jax.inference import modelfile, restore
from crnn_jax.training import evaluator as eval_lib
from crnn_jax.training import report
from crnn_jax.training import steps as steps_lib

DEFAULT_BATCH = 16  # windows per forward call: 48 s of audio at 3 s crops


class Predictor:
    """A trained model ready to score audio.

    cfg: the run's Config; class_names: genre per output index; state: TrainState with the stored params
    and batch_stats; batch_size: windows per forward call (the only shape ever compiled).
    """

    def __init__(self, cfg: Config, class_names: tuple[str, ...], state: steps_lib.TrainState, *,
                 batch_size: int = DEFAULT_BATCH):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cfg, self.class_names, self.batch_size = cfg, tuple(class_names), batch_size
        self.state = state.replace(opt_state=())  # the optimiser's r and v play no part in a prediction
        net = model_lib.build_model(cfg, len(self.class_names))
        # One jit per Predictor, traced once for the [batch_size, crop] shape; the state is an argument,
        # not a closure, so the parameters are not baked into the program as constants.
        self._eval = jax.jit(steps_lib.make_eval_step(net, head=cfg.head))
        self._gains = np.ones(batch_size, np.float32)

    @classmethod
    def from_file(cls, path: str, *, batch_size: int = DEFAULT_BATCH) -> "Predictor":
        """A model file written by `crnn-jax export` (inference/modelfile.py) -> Predictor; ModelFileError (one
        line) for a missing, foreign, damaged or other-version file."""
        cfg, class_names, state = modelfile.read_model(path)
        return cls(cfg, class_names, state, batch_size=batch_size)

    @property
    def sample_rate(self) -> int:
        """Hz; audio given to `predict` must be at this rate."""
        return self.cfg.sample_rate

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """int16 windows [batch_size, crop] -> log-probabilities [batch_size, n_classes] (float32)."""
        return np.asarray(self._eval(self.state, {"crops": crops, "gains": self._gains}))

    def window_log_probs(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every evaluation window of one song through the network.

        audio: [samples] float in [-1, 1] at sample_rate Hz. -> (log-probabilities [W, n_classes],
        window starts [W] in samples). Windows are cut batch by batch: at most batch_size of them exist at once.
        """
        audio = np.asarray(audio)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"audio must be a non-empty 1-D waveform, got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise ValueError("audio contains NaN or infinite samples")
        crop = self.cfg.crop_samples
        # The model saw int16 audio in training and evaluation; quantise the same way so a song decoded
        # from a 16-bit file gives bit-for-bit the windows the Evaluator gives.
        song = data_lib.to_int16(audio)  # [samples]
        song = np.pad(song, (0, max(0, crop - song.size)))  # [max(samples, crop)]
        _, starts = data_lib.eval_windows(np.array([audio.size]), np.array([0]), crop=crop,
                                          hop=self.cfg.eval_hop_samples)
        out = []
        for _, o, n in eval_lib.padded_batches(np.zeros(len(starts), np.int64), starts, self.batch_size):
            out.append(self._forward(eval_lib.song_crops(song, o, crop))[:n])  # [n, C] of [batch_size, crop]
        return np.concatenate(out), starts

    def predict(self, audio: np.ndarray, *, top: int = 3) -> dict:
        """Genre probabilities of one song.

        audio: [samples] float at sample_rate Hz; top: how many genres to list (clipped to n_classes).
        -> {"top": [{"genre", "probability"}] best first, "probabilities": {genre: p},
            "log_probs": [C] mean window log-probability (the Evaluator's song score), "windows": W,
            "seconds": song length in s, "window_starts": [W] s, "window_probs": [W, C]}.
        Softmax head: p = softmax of the mean log-probabilities (the geometric mean of the windows'
        distributions, renormalised; sums to 1). Sigmoid head: p = exp(mean log-sigmoid) per class, each
        genre's own geometric-mean probability (no normalisation: the genres are independent outputs).
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        logp, starts = self.window_log_probs(audio)  # [W, C], [W]
        mean = logp.astype(np.float64).mean(axis=0)  # [C]
        probs = eval_lib.song_probabilities(mean, self.cfg.head)
        order = np.argsort(-probs, kind="stable")[:top]
        return {
            "top": [{"genre": self.class_names[i], "probability": float(probs[i])} for i in order],
            "probabilities": {g: float(p) for g, p in zip(self.class_names, probs)},
            "log_probs": mean,
            "windows": int(len(starts)),
            "seconds": float(np.asarray(audio).size / self.sample_rate),
            "window_starts": starts / self.sample_rate,
            "window_probs": np.exp(logp),
        }


class Ensemble(Predictor):
    """Several trained models scored as one: each window's log-probabilities averaged over the members,
    so a song's score is the members' mean song log-probability (what `crnn_jax.cv --set ensemble=M`
    scores). Members must share genres, head, sample rate, crop and evaluation hop (their windows align).
    """

    def __init__(self, members: list[Predictor]):
        first = members[0]
        for m in members[1:]:
            for what, a, b in (("genres", m.class_names, first.class_names), ("head", m.cfg.head, first.cfg.head),
                               ("sample rate", m.sample_rate, first.sample_rate),
                               ("crop", m.cfg.crop_samples, first.cfg.crop_samples),
                               ("evaluation hop", m.cfg.eval_hop_samples, first.cfg.eval_hop_samples)):
                if a != b:
                    raise ConfigError(f"the models of an ensemble must agree in their {what}: {b} against {a}")
        self.members, self.cfg, self.class_names, self.batch_size = members, first.cfg, first.class_names, \
            first.batch_size

    def window_log_probs(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (log-probabilities [W, n_classes] averaged over the members, window starts [W] in samples)."""
        outs = [m.window_log_probs(audio) for m in self.members]
        return np.mean([logp.astype(np.float64) for logp, _ in outs], axis=0), outs[0][1]


def load_model(workdir: str, *, batch_size: int = DEFAULT_BATCH,
               warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Predictor:
    """The checkpoint a training workdir's test pass uses, as a Predictor (restore.workdir_state: best/ or
    the newest intact checkpoint, a damaged newer one passed over with a `warn`). ConfigError (one line)
    when the workdir cannot give a model; the workdir is never written."""
    cfg, classes, state = restore.workdir_state(workdir, warn)
    return Predictor(cfg, classes, state, batch_size=batch_size)


def load_models(workdirs: list[str], *, batch_size: int = DEFAULT_BATCH) -> Predictor:
    """One workdir -> its Predictor; several -> their Ensemble."""
    models = [load_model(w, batch_size=batch_size) for w in workdirs]
    return models[0] if len(models) == 1 else Ensemble(models)


def read_song(path: str, sample_rate: int) -> np.ndarray:
    """Decode one audio file -> [samples] float32 at sample_rate Hz; DataError naming the file otherwise."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    from crnn_jax.data import loaders  # decoding lives with the data loaders (soundfile, resample_poly)

    try:
        return loaders.read_audio(path, sample_rate)
    except DataError as e:
        raise DataError(str(e) if path in str(e) else f"{path}: {e}") from None
    except Exception as e:  # a decoder error the loader did not translate: still one line naming the file
        raise DataError(f"{path}: cannot be decoded ({type(e).__name__}: {e})") from None


def plot_timeline(result: dict, class_names: tuple[str, ...], path: str, title: str) -> None:
    """Genre probability of every window against its start time (s), one line per genre, saved as PNG."""
    plt = report.pyplot()
    t, p = result["window_starts"], result["window_probs"]  # [W] s, [W, C]
    order = np.argsort(-result["log_probs"], kind="stable")  # legend in the song's ranking
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i in order:
        ax.plot(t, p[:, i], marker="o" if len(t) < 40 else None, ms=3, label=class_names[i])
    ax.set_xlabel("window start (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
