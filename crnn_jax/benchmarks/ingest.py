"""`crnn-jax bench ingest FOLDER`: audio-hours per minute decoded into the cache, with 1 and N worker processes.

    crnn-jax bench ingest /tmp/lib --make 240            # first write a mixed library of 240 files there
    crnn-jax bench ingest /tmp/lib --workers 1,2 [--repeats 3] [--json FILE]

`--make N` writes a few 30 s songs (44.1 kHz stereo; 48 kHz for .opus) in every format the loader reads
into FOLDER/.sources/ (a hidden folder: the loader skips it) and hard-links them to N names in 4 genre
folders. Each measurement is a fresh `python -m crnn_jax.benchmarks.ingest --measure` process decoding
FOLDER into a fresh cache dir (folders.load_folder with --workers W, at 22050 Hz), so that peak RSS is
that run's alone: the process's own (its VmHWM; its RSS before decoding, the imports, beside it), its
largest worker's and the largest sum over the process and its children (sampled from /proc every 0.2 s,
see _Sampler; Linux only). The files are read once beforehand, so every run finds them in the page cache (the
first would otherwise pay the disk). Wall time includes starting the workers; worker counts take turns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

GENRES = ("blues", "classical", "jazz", "rock")
SOURCES_PER_FORMAT = 2  # distinct songs per format; the rest of the library is hard links to them
SAMPLE_RATE = 22050  # Hz decoded to (Config's default)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a folder of genre sub-folders (written first with --make)")
    p.add_argument("--make", type=int, default=0, metavar="N",
                   help="write a mixed library of N files into FOLDER (which must not exist or be empty) first")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each generated song, s (with --make)")
    p.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated; the first is "
                   "the baseline of the ratio")
    p.add_argument("--repeats", type=int, default=1, help="runs per worker count (the median is reported)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def bench_ingest(args: argparse.Namespace) -> dict:
    """Run the measurements of `args` (see add_args), print a table, return (and --json write) the results."""
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--workers must list worker counts >= 1, got {args.workers!r}")
    counts = list(dict.fromkeys(counts))
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.make:
        make_library(args.folder, args.make, seconds=args.seconds)
    n_files, load_before = _warm(args.folder), os.getloadavg()
    # Interleaved (1, 2, 1, 2, ...), so that load from other jobs hits every worker count alike.
    reps = {w: [] for w in counts}
    for _ in range(args.repeats):
        for w in counts:
            reps[w].append(_measure_in_child(args.folder, w))
    runs = []
    for w in counts:
        median = sorted(reps[w], key=lambda r: r["wall_s"])[len(reps[w]) // 2]  # that run, all its numbers
        runs.append({**median, "wall_s_all": [r["wall_s"] for r in reps[w]]})
    base = runs[0]["hours_per_min"]
    for r in runs:
        r["ratio"] = r["hours_per_min"] / base
    result = {"folder": os.path.abspath(args.folder), "files": n_files, "sample_rate": SAMPLE_RATE,
              "machine": machine(), "versions": versions(), "runs": runs,
              "date": time.strftime("%Y-%m-%d"), "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
    print(f"{n_files} files, {runs[0]['audio_h']:.2f} h of audio, {result['machine']['cpu']} "
          f"({result['machine']['cores']} cores), 1-min load average {load_before[0]:.2f} before, "
          f"{result['load_avg_after'][0]:.2f} after")
    print("| workers | wall s | audio-hours/min | ratio | CPU s | parent RSS MiB: before, peak | worker peak | "
          "total peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['hours_per_min']:.2f} | {r['ratio']:.2f}x | "
              f"{r['cpu_s']:.1f} | {r['parent_before_mib']:.0f}, {r['parent_peak_mib']:.0f} | "
              f"{r['worker_peak_mib']:.0f} | {r['total_peak_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


# --- the library -------------------------------------------------------------------------------------------
def make_library(folder: str, n_files: int, *, seconds: float = 30.0) -> list[str]:
    """Write SOURCES_PER_FORMAT songs of `seconds` s per format the loader reads into folder/.sources/ and
    hard-link (copy where links fail) them to `n_files` names "<genre>/<genre>.<j:05d><ext>" -> the names."""
    from crnn_jax.data import folders

    if os.path.isdir(folder) and os.listdir(folder):
        raise ValueError(f"--make: {folder} is not empty; name a new folder (a user's files are never touched)")
    exts = [e for e in (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus") if e in folders.AUDIO_EXTS]
    sources = []
    for k in range(SOURCES_PER_FORMAT):
        for e, ext in enumerate(exts):
            sources.append(os.path.join(folder, ".sources", f"song{k}{ext}"))
            _write_song(sources[-1], seconds, seed=k * len(exts) + e)
    names = []
    for j in range(n_files):
        genre = GENRES[j % len(GENRES)]
        src = sources[j % len(sources)]
        names.append(f"{genre}/{genre}.{j:05d}{os.path.splitext(src)[1]}")
        os.makedirs(os.path.join(folder, genre), exist_ok=True)
        try:
            os.link(src, os.path.join(folder, names[-1]))
        except OSError:  # a file system without hard links
            shutil.copyfile(src, os.path.join(folder, names[-1]))
    return names


def _write_song(path: str, seconds: float, seed: int) -> None:
    """Three stereo tones and noise, `seconds` long, at 44.1 kHz (48 kHz for .opus, its only rate)."""
    import numpy as np

    ext = os.path.splitext(path)[1]
    rate = 48000 if ext == ".opus" else 44100
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freqs = rng.uniform(100, 2000, 3)  # Hz
    mono = sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)
    x = (np.stack([mono, np.roll(mono, 100)], axis=1) + 0.02 * rng.standard_normal((len(t), 2))).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if ext in (".m4a", ".opus"):
        _write_av(path, x, rate, "aac" if ext == ".m4a" else "libopus")
        return
    import soundfile as sf

    kw = {"format": "MP3", "subtype": "MPEG_LAYER_III"} if ext == ".mp3" else (
        {"subtype": "PCM_16"} if ext == ".wav" else {})
    sf.write(path, x, rate, **kw)


def _write_av(path: str, x, rate: int, codec: str) -> None:
    """float32 [frames, 2] at `rate` Hz -> `path` encoded with PyAV's `codec` (aac, libopus)."""
    import av
    import numpy as np

    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        for i in range(0, len(x), 1 << 16):  # PyAV re-frames to the codec's frame size
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[i:i + (1 << 16)].T), format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _warm(folder: str) -> int:
    """Read every song of the library `folder` once (each inode once), so that no run pays the disk
    -> songs. DataError (one line) if it is no library."""
    from crnn_jax.data import folders

    groot, songs = folders.find_songs(folder)
    seen = set()
    for f in (os.path.join(groot, s) for s in songs):
        ino = os.stat(f).st_ino
        if ino not in seen:
            seen.add(ino)
            with open(f, "rb") as fh:
                while fh.read(1 << 22):
                    pass
    return len(songs)


# --- one measurement ---------------------------------------------------------------------------------------
def _measure_in_child(folder: str, workers: int) -> dict:
    """One run in a fresh process with a fresh cache dir -> its measure() dict."""
    cache = tempfile.mkdtemp(prefix="crnn_jax_ingest_")
    try:
        p = subprocess.run([sys.executable, "-m", "crnn_jax.benchmarks.ingest", "--measure", str(workers),
                            "--cache-dir", cache, folder], capture_output=True, text=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ValueError(f"the measurement with {workers} worker(s) failed: {last}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(folder: str, workers: int, cache: str) -> dict:
    """Decode `folder` into `cache` with `workers` processes, in this process -> wall s, audio, peak RSS
    (MiB): this process's before decoding and at its peak, its largest worker's, and parent + workers."""
    from crnn_jax.data import folders

    before = _status_kib(os.getpid(), "VmRSS") / 1024
    cpu0 = _cpu_s()
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    try:
        ds = folders.load_folder(folder, sample_rate=SAMPLE_RATE, cache=cache, workers=workers)
    finally:
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    hours, cpu = float(ds.lengths.sum()) / SAMPLE_RATE / 3600, _cpu_s() - cpu0
    peak = _status_kib(os.getpid(), "VmHWM") / 1024  # not ru_maxrss: see _Sampler
    return {"workers": workers, "wall_s": wall, "cpu_s": cpu, "songs": len(ds), "audio_h": hours,
            "hours_per_min": hours / (wall / 60), "hours_per_cpu_min": hours / (cpu / 60),
            "parent_before_mib": before, "parent_peak_mib": peak,
            "worker_peak_mib": max(sampler.workers.values(), default=0) / 1024,
            "total_peak_mib": max(sampler.total / 1024, peak)}  # the samples may miss the parent's own peak


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its reaped children (the workers, once joined)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class _Sampler(threading.Thread):
    """Every PERIOD s until `stop`: each worker's own peak RSS (its VmHWM) and the largest sum of the RSS
    of this process and all its children, in KiB. Not ru_maxrss: Linux keeps a process's peak across exec,
    so a spawned process's counts its parent's RSS at the fork (measured: 262 MiB for a worker of 127)."""

    PERIOD = 0.2

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.workers, self.total = threading.Event(), {}, 0  # {pid: KiB}, KiB

    def run(self) -> None:
        me = os.getpid()
        while True:  # a first sample at once: a small folder may be done within one period
            kids = _children(me)
            for pid in kids:
                if b"spawn_main" in _read(f"/proc/{pid}/cmdline"):  # a worker, not the resource tracker
                    self.workers[pid] = max(self.workers.get(pid, 0), _status_kib(pid, "VmHWM"))
            self.total = max(self.total, sum(_status_kib(pid, "VmRSS") for pid in [me, *kids]))
            if self.stop.wait(self.PERIOD):
                return


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc; [] elsewhere)."""
    stats = {int(d): _read(f"/proc/{d}/stat") for d in os.listdir("/proc") if d.isdigit()}
    return [p for p, st in stats.items() if st and int(st.rsplit(b")", 1)[1].split()[1]) == pid]  # state, ppid


def _status_kib(pid: int, field: str) -> int:
    """A "kB" field of /proc/<pid>/status (VmRSS, VmHWM); 0 when the process is gone or not Linux."""
    for line in _read(f"/proc/{pid}/status").decode().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def machine() -> dict:
    """CPU model (/proc/cpuinfo's "model name", as lscpu shows it), cores this process may use, OS."""
    from crnn_jax.data import ingest

    models = [line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").decode().splitlines()
              if line.startswith("model name")]
    return {"cpu": models[0] if models else platform.processor() or platform.machine(), "cores": ingest.cores(),
            "os": platform.platform()}


def versions() -> dict:
    import importlib.metadata as md

    import soundfile as sf

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "libsndfile": sf.__libsndfile_version__,
            **{name: version(name) for name in ("numpy", "scipy", "soundfile", "av")}}


def _main(argv: list[str] | None = None) -> int:
    """The --measure child: one measurement, printed as one JSON line."""
    p = argparse.ArgumentParser(prog="python -m crnn_jax.benchmarks.ingest")
    p.add_argument("folder")
    p.add_argument("--measure", type=int, required=True, metavar="WORKERS")
    p.add_argument("--cache-dir", required=True)
    args = p.parse_args(argv)
    try:
        print(json.dumps(measure(args.folder, args.measure, args.cache_dir)))
    except ValueError as e:  # DataError, ConfigError: one line for the parent to show
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
