"""TensorFlow Datasets' GTZAN -> Dataset (`pip install -e '.[tfds]'`).

    python -m crnn_jax.train --data tfds:gtzan[@/path/to/tfds_data_dir]

`tfds:gtzan` reads TFDS's "gtzan" builder (1000 wav files, 22050 Hz): names are "<genre>/<audio/filename>"
so the fault-filtered lists match. A data dir already prepared (default $TFDS_DATA_DIR or
~/tensorflow_datasets; or --data tfds:gtzan@<data_dir>) is used as is. The builder's download link
(opihi.cs.uvic.ca/sound/genres.tar.gz) is dead, so it is never tried: with the original archive, put
genres.tar.gz in <data_dir>/downloads/manual/ (TFDS's manual_dir) and TFDS prepares from it after checking
its sha256 (preparing needs pydub and importlib_resources besides TFDS and TF). Simpler still: extract the
archive and pass the folder. TFDS hands over every example at once, so this is decoded in memory, uncached.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings

import numpy as np

from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data import ingest
from crnn_jax.errors import one_line
from crnn_jax.data.log import say
from crnn_jax.errors import DataError

# (url, bytes, sha256, file name) of GTZAN's original archive, as in tensorflow/datasets' gtzan/checksums.tsv.
GTZAN_ARCHIVE = ("http://opihi.cs.uvic.ca/sound/genres.tar.gz", "1225571541",
                 "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6", "genres.tar.gz")


def load_tfds(spec: str, *, sample_rate: int, cache: str = "") -> data.Dataset:
    """"tfds:gtzan[@data_dir]" -> Dataset at `sample_rate` Hz via tensorflow_datasets (see module docs).

    Names are "<genre>/<file name>" from the builder's audio/filename feature when it looks like GTZAN's
    ("blues.00012.wav"), else "<genre>/example.<index:05d>" numbered per genre in (label, file name) order.
    """
    name, _, data_dir = spec[len("tfds:"):].partition("@")
    if name != "gtzan":
        raise DataError(f"--data {spec}: only tfds:gtzan (or tfds:gtzan@/path/to/data_dir) is supported")
    if importlib.util.find_spec("tensorflow_datasets") is None or importlib.util.find_spec("tensorflow") is None:
        raise DataError(f"--data {spec} needs tensorflow-datasets and tensorflow: pip install -e '.[tfds]'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")  # TF only decodes here; the accelerators belong to JAX
    root = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
    archive = os.path.join(root, "downloads", "manual", "genres.tar.gz")
    have_archive = os.path.isfile(archive)
    if have_archive:
        _register_archive(archive, data.cache_dir(cache), spec)
    try:
        with warnings.catch_warnings():  # preparing imports pydub: audioop and "no ffmpeg" warnings, not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "Couldn't find ffmpeg", RuntimeWarning)
            # download=False without the archive: the dead link would cost minutes of retries.
            tds, info = tfds.load("gtzan", split="train", data_dir=root, with_info=True, download=have_archive)
            examples = [(int(ex["label"]), ex["audio/filename"].decode("utf-8", "replace"), ex["audio"])
                        for ex in tfds.as_numpy(tds)]
    except Exception as e:
        hint = ("its download link is dead: put genres.tar.gz in " + os.path.dirname(archive) + "/, or extract "
                "it and pass --data /path/to/genres") if not have_archive else (
            f"{archive} must be GTZAN's original archive ({GTZAN_ARCHIVE[1]} bytes)"
            if type(e).__name__ == "NonMatchingChecksumError" else "preparing from the archive needs pydub and "
            "importlib_resources: pip install pydub importlib_resources")
        raise DataError(f"--data {spec}: TFDS could not provide gtzan from {root} ({type(e).__name__}: "
                        f"{one_line(e)[:200]}); {hint}") from None
    class_names, rate = tuple(info.features["label"].names), int(info.features["audio"].sample_rate)
    examples.sort(key=lambda e: (e[0], e[1]))  # TFDS's order is a hash order; names must not depend on it
    rows, names, counts, skipped = [], [], {}, 0  # TFDS hands over every example at once anyway
    for label, fname, pcm in examples:
        genre = class_names[label]
        own = re.fullmatch(rf"{re.escape(genre)}\.\d{{5}}\.(wav|au)", fname)
        # Not GTZAN's file name (e.g. mock data): a number that no split list can mistake for a GTZAN song.
        name = f"{genre}/{fname}" if own else f"{genre}/example.{counts.get(genre, 0):05d}"
        counts[genre] = counts.get(genre, 0) + 1
        x = np.clip(pcm, -32768, 32767).astype(np.float32)[:, None] / data.INT16_SCALE  # [frames, 1]
        try:
            rows.append(data.to_int16(decode.to_mono_rate(x, rate, sample_rate, f"tfds:gtzan {name}")))
            names.append(name)
        except DataError as e:
            say(f"warning: skipping {e}")
            skipped += 1
    if not rows or len(set(names)) != len(names):
        raise DataError(f"--data {spec}: no usable examples ({skipped} skipped)" if not rows else
                        f"--data {spec}: two examples share the file name "
                        f"{next(n for n in names if names.count(n) > 1)}")
    say(f"tfds:gtzan: {len(rows)} songs, {len(class_names)} genres at {sample_rate} Hz"
         + (f"; skipped {skipped} bad examples" if skipped else ""))
    return ingest.assemble(np.concatenate(rows), np.array([len(r) for r in rows], np.int64), names, sample_rate,
                           class_names)


def _register_archive(archive: str, cache: str, spec: str) -> None:
    """Make TFDS take `archive` as its gtzan download. It takes a manual download only for a URL whose
    checksum it knows, and its wheel ships none for gtzan: register the original archive's (size, sha256)."""
    from tensorflow_datasets.core.download import checksums

    sums = os.path.join(cache, "tfds_checksums")
    os.makedirs(sums, exist_ok=True)
    with open(os.path.join(sums, "gtzan.txt"), "w") as f:
        f.write("\t".join(GTZAN_ARCHIVE) + "\n")
    checksums.add_checksums_dir(sums)
    for fn in ("_checksum_paths", "get_all_url_infos"):  # memoized: forget a registry read earlier
        getattr(getattr(checksums, fn, None), "cache_clear", lambda: None)()
    if checksums.get_all_url_infos().get(GTZAN_ARCHIVE[0]) is None:  # else TFDS would try the dead link
        raise DataError(f"--data {spec}: this TFDS version ignores {archive}; extract it and pass "
                        f"--data /path/to/genres instead")
