"""`python -m crnn_jax.benchmarks.memory`: peak resident memory of training on a library of very uneven songs.

    python -m crnn_jax.benchmarks.memory make /tmp/lib               # 3 genres, wav/flac/ogg/mp3, 44.1 kHz stereo,
                                                                # 1 s .. 20 min, junk beside them
    python -m crnn_jax.benchmarks.memory run /tmp/lib                # train 2 smoke steps on it, report peak RSS
    python -m crnn_jax.benchmarks.memory run /tmp/lib --repo /work/main   # the same with another checkout

`run` starts `python -m crnn_jax.train` with the smoke network's flags `--data LIB --split random --max-steps 2`
(cwd: the repository, so its own crnn_jax is imported) with a fresh cache and workdir, and prints the
training process's peak resident set (os.wait4's ru_maxrss: that child alone), the 'data placement'
line. tests/test_memory.py uses the same library and measurement and asserts the bound.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENRES = ("blues", "jazz", "rock")
RATE = 44100  # Hz of the files written
# (seconds, extension) per song of each genre; one 20-minute mix, the rest 1 s .. 1 min.
SONGS = ((1, ".wav"), (3, ".flac"), (8, ".ogg"), (15, ".mp3"), (30, ".wav"), (45, ".flac"), (60, ".ogg"))
LONG = ("jazz", 20 * 60, ".wav")  # genre, seconds, extension of the long one


def _write(path: str, seconds: float, freq: float, seed: int, block: int = 10 * RATE) -> None:
    """A stereo tone plus noise, `seconds` long at RATE Hz, written block by block (a 20-minute file
    never exists as one array)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = int(round(seconds * RATE))
    rng = np.random.default_rng(seed)
    ext = os.path.splitext(path)[1]
    kw = {"format": "MP3", "subtype": "MPEG_LAYER_III"} if ext == ".mp3" else (
        {"subtype": "PCM_16"} if ext == ".wav" else {})
    with sf.SoundFile(path, "w", samplerate=RATE, channels=2, **kw) as f:
        for i in range(0, n, block):
            t = np.arange(i, min(n, i + block)) / RATE
            left = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
            right = 0.3 * np.sin(2 * np.pi * freq * 1.01 * t) + 0.05 * rng.standard_normal(len(t))
            f.write(np.stack([left, right], axis=1).astype(np.float32))  # [frames, 2]


def make_library(root: str, *, songs=SONGS, long=LONG, genres=GENRES) -> list[str]:
    """Write the library under root -> the relative paths of its songs (what training must see).

    Beside the songs: a README.txt and .DS_Store files, and hidden folders holding audio (root/.Trash/ and
    <genre>/.previews/), which the loader must ignore."""
    names = []
    for g, genre in enumerate(genres):
        for j, (seconds, ext) in enumerate(songs):
            names.append(f"{genre}/{genre}-{j:02d}{ext}")
            _write(os.path.join(root, names[-1]), seconds, 220.0 * (g + 1) + 10 * j, seed=100 * g + j)
        with open(os.path.join(root, genre, ".DS_Store"), "wb") as f:
            f.write(b"\0\1\2")
    if long:
        genre, seconds, ext = long
        names.append(f"{genre}/{genre}-mix{ext}")
        _write(os.path.join(root, names[-1]), seconds, 330.0, seed=999)
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("my music\n")
    with open(os.path.join(root, ".DS_Store"), "wb") as f:
        f.write(b"\0")
    _write(os.path.join(root, ".Trash", "deleted", "old.wav"), 2, 440.0, seed=1)
    _write(os.path.join(root, genres[0], ".previews", "preview.wav"), 2, 440.0, seed=2)
    return sorted(names)


def peak_rss(cmd: list[str], *, cwd: str, env: dict | None = None, timeout: float = 600
             ) -> tuple[int, int, str]:
    """Run cmd -> (exit status, peak resident set of that process in bytes, stdout + stderr).

    The peak is os.wait4's ru_maxrss for that child only (not the largest of every child so far)."""
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)  # reaps it with its own rusage (Popen must not wait)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return p.returncode, usage.ru_maxrss * 1024, out.read()


# The smoke network (tests/conftest.py's SMOKE, experiments/smoke.py) as flags: no file of the checkout needed.
SMOKE_FLAGS = ("--conv-channels", "8,16,16,16", "--set", "gru_units=8,8", "--crop-seconds", "1", "--batch-size", "8",
               "--log-every", "1", "--checkpoint-every", "2")


def train_command(data: str, workdir: str, cache: str) -> list[str]:
    """The measured command: two smoke steps on `data`, random split."""
    return [sys.executable, "-m", "crnn_jax.train", *SMOKE_FLAGS, "--data", data, "--split", "random", "--max-steps", "2", "--workdir", workdir, "--cache-dir", cache]


def placement_gib(output: str) -> float | None:
    """The GiB figure of train's 'data placement: ... (X GiB of int16 audio ...)' line."""
    m = re.search(r"data placement: .*\(([\d.]+) GiB of int16 audio", output)
    return float(m.group(1)) if m else None


def audio_bytes(root: str, names: list[str], sample_rate: int = 22050) -> int:
    """int16 bytes of the songs at the model rate, from their headers (2 bytes a sample)."""
    from crnn_jax.data import decode

    return 2 * sum(decode.frames_out(os.path.join(root, n), sample_rate) for n in names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crnn_jax.benchmarks.memory", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("make", help="write the library").add_argument("dir")
    r = sub.add_parser("run", help="train on it and report peak RSS")
    r.add_argument("dir")
    r.add_argument("--repo", default=ROOT, help="the checkout whose crnn_jax to run (default: this one)")
    args = p.parse_args(argv)
    if args.what == "make":
        names = make_library(args.dir)
        print(f"{len(names)} songs in {args.dir}: {audio_bytes(args.dir, names) / 2**20:.1f} MiB of int16 at 22050 Hz")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": args.repo}
        rc, peak, out = peak_rss(train_command(os.path.abspath(args.dir), os.path.join(tmp, "wd"),
                                               os.path.join(tmp, "cache")), cwd=args.repo, env=env)
    if rc:
        print(out[-3000:], file=sys.stderr)
        print(f"training exited {rc}", file=sys.stderr)
        return rc
    print(f"repo {args.repo}: peak RSS {peak / 2**20:.0f} MiB; data placement {placement_gib(out)} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
