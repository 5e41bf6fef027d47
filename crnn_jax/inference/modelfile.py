"""The model file: a trained model as one portable file (`crnn-jax export` writes it, predict/evaluate read it).

    crnn-jax export --workdir runs/crnn-genres-seed0 --out genres.crnn     # = python -m crnn_jax.export
    crnn-jax predict --model genres.crnn song.mp3
    crnn-jax evaluate --model genres.crnn --data /path/to/genres --out eval/

The file (extension .crnn by convention) holds everything prediction needs and nothing else: the
resolved config, the genre names, the parameters (the book's theta) and the BatchNorm running averages,
as float32 arrays; no optimiser state, so it is about a third of a checkpoint. Layout, all integers
little-endian:

    bytes 0-7    magic b"\\x89CRNN\\r\\n\\x1a" (the \\r\\n and \\x1a catch text-mode copies, as PNG's do)
    bytes 8-11   format version, uint32 (FORMAT_VERSION)
    bytes 12-19  payload length in bytes, uint64
    bytes 20-51  SHA-256 of the payload
    bytes 52-    payload: flax.serialization msgpack of {"config": JSON text of Config, "class_names": [str],
                 "step": int, "crnn_jax_version": str, "params": {...}, "batch_stats": {...}}

It is written to a temporary beside the target and renamed when complete, so a reader sees the old file
or the whole new one, and a failed export leaves no temporary. Reading checks magic, version, length and
checksum before decoding anything, and the arrays' shapes against the model the config describes:
a damaged, truncated, foreign or newer-format file is one line (ModelFileError), never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import jax
import numpy as np
from flax import serialization

from crnn_jax import __version__
from crnn_jax import model as model_lib
from crnn_jax.training import steps as steps_lib
from crnn_jax import files
from crnn_jax.config import Config
from crnn_jax.errors import ConfigError, ModelFileError
from crnn_jax.training.checkpoint import flat_shapes, mismatch as shapes_differ

MAGIC = b"\x89CRNN\r\n\x1a"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, payload length, sha256: 52 bytes
SUFFIX = ".crnn"


def write_model(path: str, cfg: Config, class_names: tuple[str, ...], state) -> int:
    """Write a trained state's params and batch_stats (a TrainState or anything with those fields) as one
    model file at `path`, atomically -> bytes written."""
    to_np = lambda tree: jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)  # noqa: E731
    payload = serialization.msgpack_serialize({
        "config": cfg.to_json(), "class_names": list(class_names), "step": int(jax.device_get(state.step)),
        "crnn_jax_version": __version__, "params": to_np(state.params), "batch_stats": to_np(state.batch_stats)})
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    with files.atomic(path, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())  # a model file is meant to be copied elsewhere: on disk before it has its name
    return len(header) + len(payload)


def is_model_file(path: str) -> bool:
    """Whether `path` starts with this format's magic (any version, intact or not)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_model(path: str) -> tuple[Config, tuple[str, ...], steps_lib.TrainState]:
    """A model file -> (Config, class names, TrainState with step, params, batch_stats and opt_state=()).
    Raises ModelFileError (one line naming the file and what to do) for anything unusable."""
    if not os.path.isfile(path):
        raise ModelFileError(f"--model {path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
                raise ModelFileError(f"--model {path} is not a crnn_jax model file (write one with "
                                     "`crnn-jax export --workdir RUN --out FILE`)")
            if len(head) < _HEADER.size:
                raise ModelFileError(f"--model {path} is truncated ({len(head)} bytes, shorter than its header); "
                                     "export or copy it again")
            _, version, length, digest = _HEADER.unpack(head)
            if version != FORMAT_VERSION:
                newer = version > FORMAT_VERSION
                raise ModelFileError(
                    f"--model {path} is model format version {version}; this crnn_jax ({__version__}) reads version "
                    f"{FORMAT_VERSION}: " + ("upgrade crnn_jax" if newer else "export it again from its workdir"))
            payload = f.read(length + 1)
    except OSError as e:
        raise ModelFileError(f"--model {path} is unreadable ({e.strerror or e})") from None
    if len(payload) != length:
        what = "truncated" if len(payload) < length else "longer than its header says"
        raise ModelFileError(f"--model {path} is {what} ({len(payload)} of {length} payload bytes); "
                             "export or copy it again")
    if hashlib.sha256(payload).digest() != digest:
        raise ModelFileError(f"--model {path} is damaged (its checksum does not match); export or copy it again")
    try:
        doc = serialization.msgpack_restore(payload)
        cfg = Config.from_dict(json.loads(doc["config"]))
        classes = tuple(str(c) for c in doc["class_names"])
        params, batch_stats, step = doc["params"], doc["batch_stats"], int(doc["step"])
    except ConfigError as e:  # intact, but a config this version cannot build (say, a field it does not know)
        raise ModelFileError(f"--model {path} holds a config this crnn_jax cannot use ({e})") from None
    except Exception as e:  # checksum right but content wrong: written by something else that reused the magic
        raise ModelFileError(f"--model {path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    net = model_lib.build_model(cfg, len(classes))
    want = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), np.zeros((1, cfg.crop_samples), np.float32),
                                           train=False))
    got = {"params": params, "batch_stats": batch_stats}
    mismatch = shapes_differ(flat_shapes({k: want[k] for k in got}), flat_shapes(got))
    if mismatch:
        raise ModelFileError(f"--model {path} does not match the model its config describes: "
                             f"{mismatch.replace('the checkpoint', 'the file')}")
    as_f32 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float32), tree)  # noqa: E731
    state = steps_lib.TrainState(step=np.asarray(step, np.int32), params=as_f32(params),
                                 batch_stats=as_f32(batch_stats), opt_state=())
    return cfg, classes, state
