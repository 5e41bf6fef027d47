"""Real audio in: a folder of genre sub-folders (or TensorFlow Datasets' GTZAN) -> data.Dataset + split.

    python -m crnn_jax.train --data /path/to/genres                  # <genres>/<genre>/*.wav|au|flac|ogg|mp3
    python -m crnn_jax.train --data /path/to/Data --split fault-filtered
    python -m crnn_jax.train --data tfds:gtzan[@/path/to/tfds_data_dir]

Folders. The genre root is found by walking down from --data while it holds a single sub-folder with audio,
so `genres/<genre>/...` (the GTZAN archive) and `Data/genres_original/<genre>/...` (the Kaggle copy) work
from their parent folders too. A genre is a sub-folder of the root; its songs are the audio files under it
(by extension, any case). Every file is decoded with soundfile, averaged to mono and resampled to
cfg.sample_rate (scipy.signal.resample_poly). A file that does not decode, is truncated, empty, silent or
holds NaN/inf (GTZAN's jazz.00054 is one) is skipped with a warning; bad folders are one-line DataErrors.

Cache. Each file's decoded length is known from its header, so the songs are decoded block by block
(decode.py) straight into their places in one preallocated int16 .npy file, songs end to end, under
<cache_dir>/folder-<key>.audio.npy (memory-mapped when read back), with offsets, lengths, names and labels
in folder-<key>.meta.npz. The key is the folder's real path and the sample rate; the meta file holds a
fingerprint of every audio file's (relative path, size, mtime) and CACHE_VERSION: a second run starts in
seconds, and adding, removing or touching a file rebuilds the entry in place (one entry per folder and
rate, never one per state of it). Files are replaced by atomic renames, the audio first, then the meta
file naming the audio file (inode, size, mtime) it belongs to, so a reader sees a matching pair or
rebuilds. A cache that does not load or does not match is rebuilt, never trusted. The data folder is
never written.

TFDS (`pip install -e '.[tfds]'`). `tfds:gtzan` reads TFDS's "gtzan" builder (1000 wav files, 22050 Hz):
names are "<genre>/<audio/filename>" so the fault-filtered lists match. A data dir already prepared
(default $TFDS_DATA_DIR or ~/tensorflow_datasets; or --data tfds:gtzan@<data_dir>) is used as is. The
builder's download link (opihi.cs.uvic.ca/sound/genres.tar.gz) is dead, so it is never tried: with the
original archive, put genres.tar.gz in <data_dir>/downloads/manual/ (TFDS's manual_dir) and TFDS prepares
from it after checking its sha256 (preparing needs pydub and importlib_resources besides TFDS and TF).
Simpler still: extract the archive and pass the folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import os
import re
import sys
import time
import warnings

import numpy as np

from crnn_jax.data import dataset as data
from crnn_jax.data import decode
from crnn_jax.data import splits
from crnn_jax.data.dataset import DataError

AUDIO_EXTS = splits.AUDIO_EXTS
CACHE_VERSION = 2  # bump when decoding or the layout changes, so old caches are not reused (2: songs end to end)
SKIP_DIRS = ("__MACOSX",)
MAX_DEPTH = 8  # folder levels walked below --data (bounds symlink loops)
# (url, bytes, sha256, file name) of GTZAN's original archive, as in tensorflow/datasets' gtzan/checksums.tsv.
GTZAN_ARCHIVE = ("http://opihi.cs.uvic.ca/sound/genres.tar.gz", "1225571541",
                 "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6", "genres.tar.gz")


def load(cfg) -> tuple[data.Dataset, dict[str, np.ndarray]]:
    """cfg.data (a folder or "tfds:gtzan[@data_dir]") -> (Dataset at cfg.sample_rate, split by cfg.split).

    The split is {"train", "valid", "test"}: sorted int64 song indices (see splits.make_split).
    """
    load_fn = load_tfds if cfg.data.startswith("tfds:") else load_folder
    ds = load_fn(cfg.data, sample_rate=cfg.sample_rate, cache=cfg.cache_dir)
    return ds, splits.make_split(cfg, ds)


# --- one file ----------------------------------------------------------------------------------------------
def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """Decode an audio file -> float32 [samples] mono at `sample_rate` Hz, in [-1, 1] for PCM files.

    Channels are averaged; the file's rate is converted with a polyphase filter (up/down from the gcd),
    block by block (decode.blocks: the same samples as one resample_poly call on the whole file).
    Raises DataError naming the file when it does not decode, is truncated, has no samples, holds NaN or
    infinite samples, or is silent (every sample 0).
    """
    return np.concatenate(list(decode.blocks(path, sample_rate)))


_one_line = decode.one_line
_to_mono_rate = decode.to_mono_rate


# --- a folder ------------------------------------------------------------------------------------------
def load_folder(path: str, *, sample_rate: int, cache: str = "") -> data.Dataset:
    """A folder of genre sub-folders -> Dataset: int16 rows at `sample_rate` Hz, names "<genre>/<file>",
    class_names the sorted genre folder names. Decoded audio is cached under data.cache_dir(cache)."""
    root = _check_folder(path)
    files, ignored = _scan(root)
    if not files:
        raise DataError(f"--data {path}: no audio files ({', '.join(AUDIO_EXTS)}) in it or its sub-folders"
                        + (f"; found only {_describe(ignored)}" if ignored else ""))
    prefix = _genre_root(files, root)
    groot = os.path.join(root, *prefix)
    below = [f[len(prefix):] for f in files if f[:len(prefix)] == prefix]  # components below the genre root
    songs, stray = sorted("/".join(f) for f in below if len(f) > 1), [f[0] for f in below if len(f) == 1]
    if _describe(ignored, prefix):
        _say(f"ignored {_describe(ignored, prefix)} in {groot}")
    if stray:
        _say(f"warning: ignored {len(stray)} audio file(s) directly in {groot}, outside any genre folder "
             f"(first: {stray[0]})")
    _check_unique(songs)
    stats = [os.stat(os.path.join(groot, s)) for s in songs]
    # The entry's name says which folder at which rate; its content fingerprint is stored inside, so a
    # folder that changed replaces its entry (never one entry per state of the folder).
    fingerprint = hashlib.sha256(repr((CACHE_VERSION, int(sample_rate), [(s, st.st_size, st.st_mtime_ns)
                                                                         for s, st in zip(songs, stats)])).encode())
    name_key = hashlib.sha256(repr((os.path.realpath(groot), int(sample_rate))).encode())
    cache_path = os.path.join(data.cache_dir(cache), f"folder-{name_key.hexdigest()[:20]}")
    t0 = time.time()
    got = _read_cache(cache_path, songs, sample_rate, fingerprint.hexdigest())
    if got is not None:
        ds, skipped = dataclasses.replace(got[0], root=groot), got[1]
        _say(f"{len(ds)} songs, {len(ds.class_names)} genres from {groot} (cached, {time.time() - t0:.1f} s)"
             + (f"; {len(skipped)} bad file(s) were skipped (first: {skipped[0][1]})" if skipped else ""))
        return ds
    n_bytes = sum(st.st_size for st in stats)
    tmp = f"{cache_path}.audio.npy.tmp{os.getpid()}"
    try:
        try:
            ds, skipped = _decode_folder(groot, songs, sample_rate, n_bytes, tmp)
        except OSError as e:  # a read-only or full cache dir is no reason to fail: run uncached
            _say(f"warning: could not write the cache {cache_path} ({_one_line(e)}); decoding into memory "
                 f"(set --cache-dir to a folder you can write)")
            return _decode_folder(groot, songs, sample_rate, n_bytes, None)[0]
        try:  # audio first, then the metadata that names the audio file it belongs to (inode, size, mtime)
            os.replace(tmp, f"{cache_path}.audio.npy")
            st = os.stat(f"{cache_path}.audio.npy")
            data.save_npz_atomic(
                f"{cache_path}.meta.npz", version=np.array(CACHE_VERSION), fingerprint=np.array(fingerprint.hexdigest()),
                root=np.array(groot), audio_file=np.array([st.st_ino, st.st_size, st.st_mtime_ns], np.int64),
                offsets=ds.offsets, lengths=ds.lengths, labels=ds.labels, names=np.array(ds.names),
                class_names=np.array(ds.class_names), sample_rate=np.array(sample_rate),
                skipped_names=np.array([n for n, _ in skipped], str), skipped_why=np.array([w for _, w in skipped], str))
        except OSError as e:  # the Dataset is already open (memory-mapped), cache or not
            _say(f"warning: could not write the cache {cache_path} ({_one_line(e)})")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ds


def _check_unique(songs: list[str]) -> None:
    """One song in two formats (x.au and x.wav) would be two songs that a split can put on both sides."""
    seen: dict[tuple[str, ...], str] = {}
    for s in songs:
        k = splits.song_key(s)
        if k in seen:
            raise DataError(f"{seen[k]} and {s} look like one song in two formats (same name, different "
                            f"extension); keep one of them")
        seen[k] = s


def _check_folder(path: str) -> str:
    if os.path.isfile(path):
        raise DataError(f"--data {path} is a file; pass the folder that holds one sub-folder per genre")
    if not os.path.isdir(path):
        raise DataError(f"--data {path}: no such folder")
    return os.path.abspath(path)


def _scan(root: str) -> tuple[list[tuple[str, ...]], dict]:
    """Audio files under root as path-component tuples; other files counted as {(folder, kind): n}."""
    files, ignored = [], {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel = tuple(p for p in os.path.relpath(dirpath, root).split(os.sep) if p != ".")
        keep = len(rel) < MAX_DEPTH
        dirnames[:] = sorted(d for d in dirnames if keep and not d.startswith(".") and d not in SKIP_DIRS)
        for fn in filenames:
            ext = os.path.splitext(fn)[1].lower()
            if ext in AUDIO_EXTS and not fn.startswith("."):  # "._x.wav": macOS metadata, not audio
                files.append(rel + (fn,))
            else:
                kind = "._* (macOS metadata)" if fn.startswith("._") else ext or fn
                ignored[(rel, kind)] = ignored.get((rel, kind), 0) + 1
    return files, ignored


def _describe(counts: dict, prefix: tuple[str, ...] = ()) -> str:
    """{(folder, kind): n} below `prefix` -> "3 other file(s) (.DS_Store, .txt)" ('' if none)."""
    by_kind: dict[str, int] = {}
    for (rel, kind), n in counts.items():
        if rel[:len(prefix)] == prefix:
            by_kind[kind] = by_kind.get(kind, 0) + n
    return f"{sum(by_kind.values())} other file(s) ({', '.join(sorted(by_kind))})" if by_kind else ""


def _genre_root(files: list[tuple[str, ...]], root: str) -> tuple[str, ...]:
    """The folder (as components below root) whose sub-folders are the genres: walk down while there
    is exactly one sub-folder holding audio and no audio beside it."""
    prefix: tuple[str, ...] = ()
    while True:
        under = [f[len(prefix):] for f in files if f[:len(prefix)] == prefix]
        subs = sorted({f[0] for f in under if len(f) >= 2})
        if len(subs) >= 2:
            return prefix
        if len(subs) == 1 and all(len(f) >= 2 for f in under):
            prefix += (subs[0],)
            continue
        if subs or prefix:  # one sub-folder with audio beside it, or we walked down into the only genre
            genre = subs[0] if subs else prefix[-1]
            what = f"audio of only one genre ({genre})"
        else:
            what = "audio files but no genre sub-folders"
        raise DataError(f"--data {root} holds {what}; it needs at least 2 genres, one sub-folder each "
                        f"(<data>/<genre>/<song>.wav)")


def _decode_folder(groot: str, songs: list[str], sample_rate: int, n_bytes: int, path: str | None
                   ) -> tuple[data.Dataset, list[tuple[str, str]]]:
    """Decode every song into one int16 array, songs end to end -> (Dataset, [(name, why)] skipped).

    Each song's length is known from its header before decoding, so the array (the .npy file `path`, or
    memory if None) is allocated once and each file is decoded block by block straight into its place, in
    threads (libsndfile and resample_poly release the GIL): memory holds a block per thread, never the
    library twice. Files that turn out shorter (or bad) leave gaps, closed at the end.
    """
    workers = min(8, os.cpu_count() or 1)
    _say(f"decoding {len(songs)} files ({n_bytes / 1e6:.0f} MB) from {groot} at {sample_rate} Hz "
         f"with {workers} threads; cached after this run")
    why: dict[int, str] = {}
    sizes = np.zeros(len(songs), np.int64)  # samples reserved per song
    for i, name in enumerate(songs):
        try:
            sizes[i] = decode.frames_out(os.path.join(groot, name), sample_rate)
        except DataError as e:
            why[i] = str(e).replace(os.path.join(groot, ""), "")
    reserved = np.concatenate([[0], np.cumsum(sizes)])  # [n + 1] where each song's room starts
    sink = data.SampleSink(path, int(reserved[-1]))

    def one(i: int) -> tuple[int, str]:
        if i in why:
            return 0, why[i]
        pos, room = int(reserved[i]), int(sizes[i])
        try:
            for block in decode.blocks(os.path.join(groot, songs[i]), sample_rate):
                block = data.to_int16(block)[:room - (pos - int(reserved[i]))]  # never past its room
                sink.write(pos, block)
                pos += len(block)
        except DataError as e:
            return 0, str(e).replace(os.path.join(groot, ""), "")
        return pos - int(reserved[i]), ""

    try:
        lengths, names, keep, skipped = [], [], [], []
        t0, last = time.time(), time.time()
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, (n, bad) in enumerate(pool.map(one, range(len(songs)))):
                if bad or not n:
                    bad = bad or f"{songs[i]}: no audio (0 samples)"
                    _say(f"warning: skipping {bad}")
                    skipped.append((songs[i], bad))
                else:
                    lengths.append(n)
                    names.append(songs[i])
                    keep.append(i)
                if time.time() - last > 10 and i + 1 < len(songs):
                    last = time.time()
                    _say(f"decoded {i + 1}/{len(songs)} files ({last - t0:.0f} s)")
        if skipped:
            _say(f"skipped {len(skipped)} of {len(songs)} files (first: {skipped[0][1]})")
        for genre in sorted({s.split("/", 1)[0] for s in songs} - {n.split("/", 1)[0] for n in names}):
            _say(f"warning: genre {genre} has no usable song and is left out")
        if not names:
            raise DataError(f"--data {groot}: none of its {len(songs)} audio files could be used (first: "
                            f"{skipped[0][1]})")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # back to back
        for i, dst, n in zip(keep, offsets, lengths):
            if reserved[i] != dst:
                sink.move(int(reserved[i]), int(dst), int(n))
        audio = sink.finish(int(sum(lengths)))
    finally:
        sink.close()
    ds = dataclasses.replace(_assemble(audio, np.array(lengths, np.int64), names, sample_rate), root=groot)
    _say(f"{len(ds)} songs, {len(ds.class_names)} genres, {ds.lengths.sum() / sample_rate / 3600:.2f} h of audio "
         f"from {groot} ({time.time() - t0:.1f} s)")
    return ds, skipped


def _assemble(audio: np.ndarray, lengths: np.ndarray, names: list[str], sample_rate: int,
              class_names: tuple[str, ...] | None = None) -> data.Dataset:
    """int16 [total] songs back to back, their lengths and names "<genre>/..." -> Dataset (classes: the
    genres present, sorted)."""
    genres = [n.split("/", 1)[0] for n in names]
    if class_names is None:
        class_names = tuple(sorted(set(genres)))
        if len(class_names) < 2:
            raise DataError(f"only one genre ({class_names[0]}) has usable songs; at least 2 are needed")
    index = {g: i for i, g in enumerate(class_names)}
    return data.Dataset(audio=audio, lengths=lengths, labels=np.array([index[g] for g in genres], np.int32),
                        names=tuple(names), class_names=tuple(class_names), sample_rate=int(sample_rate))


def _read_cache(path: str, songs: list[str], sample_rate: int, fingerprint: str
                ) -> tuple[data.Dataset, list[tuple[str, str]]] | None:
    """The cached Dataset and skipped-file notes if the entry at `path` (.meta.npz + .audio.npy) loads,
    is of this folder's current state (`fingerprint`) and matches `songs`; else None (it is rebuilt in
    place). The audio is memory-mapped (read only): pages are read when sliced."""
    if not os.path.exists(f"{path}.meta.npz"):
        return None
    try:
        # Our own file handle: np.load leaks the one it opens when the zip is damaged.
        with open(f"{path}.meta.npz", "rb") as f, np.load(f, allow_pickle=False) as z:
            if "version" not in z or int(z["version"]) != CACHE_VERSION or str(z["fingerprint"]) != fingerprint:
                _say(f"the folder changed since it was cached; rebuilding {path}")
                return None
            lengths, offsets, labels = z["lengths"], z["offsets"], z["labels"]
            names, classes = tuple(z["names"].tolist()), tuple(z["class_names"].tolist())
            rate, audio_file = int(z["sample_rate"]), z["audio_file"].tolist()
            skipped = list(zip(z["skipped_names"].tolist(), z["skipped_why"].tolist()))
        st = os.stat(f"{path}.audio.npy")
        if audio_file != [st.st_ino, st.st_size, st.st_mtime_ns]:  # another write's audio, or a hand edit
            raise ValueError("its audio file is not the one its metadata was written for")
        audio = np.load(f"{path}.audio.npy", mmap_mode="r")  # [total] int16; a short file raises
        n = len(names)
        skipped_names = {s for s, _ in skipped}
        ok = (audio.dtype == np.int16 and audio.ndim == 1 and n == len(lengths) == len(labels) == len(offsets)
              and rate == sample_rate and list(names) == sorted(names) and n + len(skipped) == len(songs)
              and set(names) | skipped_names == set(songs) and lengths.min() >= 1 and offsets.min() >= 0
              and (offsets + lengths).max() <= audio.shape[0]
              and classes == tuple(sorted({s.split("/", 1)[0] for s in names}))
              and np.array_equal(labels, [classes.index(s.split("/", 1)[0]) for s in names]))
        if not ok:  # a file from another version, a hand edit...
            raise ValueError("its contents do not match the folder")
    except Exception as e:  # truncated, corrupt, stale: rebuild
        _say(f"warning: cache {path} is unusable ({_one_line(e)}); rebuilding it")
        return None
    ds = data.Dataset(audio=audio, lengths=lengths.astype(np.int64), labels=labels.astype(np.int32), names=names,
                      class_names=classes, sample_rate=sample_rate, offsets=offsets.astype(np.int64))
    return ds, skipped


# --- TensorFlow Datasets -------------------------------------------------------------------------------------
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
                        f"{_one_line(e)[:200]}); {hint}") from None
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
            rows.append(data.to_int16(_to_mono_rate(x, rate, sample_rate, f"tfds:gtzan {name}")))
            names.append(name)
        except DataError as e:
            _say(f"warning: skipping {e}")
            skipped += 1
    if not rows or len(set(names)) != len(names):
        raise DataError(f"--data {spec}: no usable examples ({skipped} skipped)" if not rows else
                        f"--data {spec}: two examples share the file name "
                        f"{next(n for n in names if names.count(n) > 1)}")
    _say(f"tfds:gtzan: {len(rows)} songs, {len(class_names)} genres at {sample_rate} Hz"
         + (f"; skipped {skipped} bad examples" if skipped else ""))
    return _assemble(np.concatenate(rows), np.array([len(r) for r in rows], np.int64), names, sample_rate,
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


def _say(msg: str) -> None:
    print(f"data: {msg}", file=sys.stderr, flush=True)
