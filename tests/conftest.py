"""Shared test fixtures and the two tiers of the suite.

    python -m pytest                   # everything (what CI runs)
    python -m pytest -m "not slow"     # the fast tier, for every edit: every module, every cheap oracle
    python -m pytest -n 0 ...          # in this process, no workers (pyproject's addopts say -n auto)

`slow` marks a test that trains more than a few steps or starts a process (pyproject.toml registers it);
`gpu` one that needs a GPU. Tests run on the CPU with one device; two devices in one process are simulated
with jax.vmap(axis_name=steps.AXIS), which runs the same pmeans and cross-device BatchNorm; tests of real
devices and processes start subprocesses with XLA_FLAGS=--xla_force_host_platform_device_count=N, since the
device count is fixed per process.

What many tests read is built once per session (the fixtures below): one smoke run (smoke_record, smoke_run),
its exported model file (smoke_model), one run by a process with 2 devices (two_device_run, slow tier), and the
compiled train steps of a tiny network (tiny_train). Tests only read them; a test that changes a run copies it
first. (test_cv trains its one k-fold run once per module.)
"""

import json
import os
import subprocess
import sys
import tempfile
import types

# One persistent XLA compilation cache for the whole test session, in-process and in subprocesses: the
# smoke preset compiles to the same programs again and again, and compiling dominates the suite's time.
# Set before jax is imported anywhere.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="crnn_jax_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402
from crnn_jax.training import loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
SMOKE = os.path.join(ROOT, "experiments", "smoke.py")  # 6 steps, a checkpoint every 2 (4 and 6 kept)
# experiments/*.py that are scripts, not presets (every other file there is a preset the preset tests load).
EXPERIMENT_SCRIPTS = ("baseline_mfcc_svm.py", "new_artist_summary.py", "through_16k.py", "tta_lowpass.py")
# The 2-device run: 8 steps without dropout (a device's dropout masks are its own), a checkpoint every 4 so
# that test_distributed can kill a run after its first checkpoint and before its end.
TWO_DEVICE_ARGS = ["--config", SMOKE, "--dropout", "0", "--max-steps", "8", "--log-every", "1",
                   "--checkpoint-every", "4"]


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): a worker per core this process may use, at most 4, since each worker
    holds its own JAX with its compiled programs (~1 GiB) and some tests start processes of their own."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    """Keep the decoded-audio cache of the whole session out of the user's home."""
    os.environ.setdefault("CRNN_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


def snapshot(directory) -> list[tuple[str, int, int]]:
    """Every file and folder under `directory` with its size and modification time (ns): equal snapshots
    mean nothing was written, added or removed."""
    out = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            st = os.stat(os.path.join(root, name))
            out.append((os.path.relpath(os.path.join(root, name), directory), st.st_size, st.st_mtime_ns))
    return sorted(out)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def edit_json(path, **changes) -> None:
    """Set fields of a JSON object file in place (a copied run's config.json, to make it another model)."""
    with open(path) as f:
        d = json.load(f)
    d.update(changes)
    with open(path, "w") as f:
        json.dump(d, f)


@pytest.fixture(scope="session")
def smoke_record(tmp_path_factory) -> types.SimpleNamespace:
    """One smoke-preset training run, shared by the whole session: workdir, the results train() returned,
    and how often the train step was traced while it ran (once: test_train checks it)."""
    from crnn_jax import config as config_lib

    traces = []
    real = loop.steps_lib.make_train_step

    def counting(*a, **k):
        step = real(*a, **k)

        def traced(state, batch):
            traces.append(1)  # runs only while tracing
            return step(state, batch)

        return traced

    cfg = config_lib.load_preset(SMOKE).replace(workdir=str(tmp_path_factory.mktemp("smoke") / "run"))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(loop.steps_lib, "make_train_step", counting)
        results = loop.train(cfg, log=lambda *_: None)
    return types.SimpleNamespace(cfg=cfg, workdir=cfg.workdir, results=results, traces=len(traces))


@pytest.fixture(scope="session")
def smoke_run(smoke_record) -> str:
    """The workdir of the session's smoke run (smoke_record). Tests only read it (test_predict and
    test_evaluate snapshot it to prove that); a test that needs to damage or extend it copies it first."""
    return smoke_record.workdir


@pytest.fixture(scope="session")
def smoke_model(smoke_run, tmp_path_factory) -> str:
    """The smoke run exported once (`crnn-jax export`): the session's model file. Read only."""
    from crnn_jax import export

    path = str(tmp_path_factory.mktemp("model") / "genres.crnn")
    assert export.main(["--workdir", smoke_run, "--out", path]) == 0
    return path


@pytest.fixture(scope="session")
def two_device_run(tmp_path_factory) -> str:
    """The workdir of TWO_DEVICE_ARGS trained by one process with 2 host devices (a real pmap over two
    devices): the reference of test_train's one-device run and of test_distributed's two processes."""
    wd = str(tmp_path_factory.mktemp("two_devices") / "run")
    run_module("crnn_jax.train", *TWO_DEVICE_ARGS, "--workdir", wd, devices=2)
    return wd


class TinyTrain:
    """The train step (steps.make_train_step) of a one-block CNN on 1 s crops, in this process, for the tests of
    the step itself: the front end's and the conv block's BatchNorm, dropout, augmentations, the loss, the
    gradient pmean and Algorithm 8.6 are all there, and it compiles in seconds.

    state: the initial TrainState; batches: three global batches of 8 (crops of read_samples, long enough for
    a 0.1 speed change; `batch(i)` cuts them to the crop). step(augment, dropout, n_devices) -> a jitted
    fn(state, global batch) -> (state and metrics with a leading [n_devices] axis), the batch split over
    n_devices simulated devices: jax.vmap with the pmap axis name runs the same pmeans and cross-device
    BatchNorm statistics as jax.pmap over real devices (this process has one CPU device). Each (augment,
    dropout, n_devices) is compiled once per session, whichever test asks first."""

    def __init__(self):
        import jax
        import numpy as np

        from crnn_jax import config as config_lib
        from crnn_jax import model as model_lib
        from crnn_jax.training import steps as steps_lib

        self._jax, self._steps, self._model = jax, steps_lib, model_lib
        self.cfg = config_lib.load_preset(SMOKE).replace(model="cnn", conv_channels=(4,), freq_pools=(4,),
                                                          time_pools=(2,), n_mels=32, dropout=0.0)
        self.tx = steps_lib.make_optimizer(self.cfg, 100)
        self.state = steps_lib.create_state(self.net(0.0), self.tx, self.cfg.crop_samples, self.cfg.seed)
        rng = np.random.default_rng(0)
        read = self.cfg.replace(speed_change=0.1).read_samples
        self.batches = [{"crops": rng.integers(-8000, 8000, (8, read)).astype(np.int16),
                         "gains": rng.uniform(0.5, 2.0, 8).astype(np.float32),
                         "labels": rng.integers(0, 10, 8).astype(np.int32)} for _ in range(3)]
        self._compiled = {}

    def net(self, dropout: float):
        return self._model.build_model(self.cfg.replace(dropout=dropout), 10, axis_name=self._steps.AXIS)

    def batch(self, i: int, read: bool = False) -> dict:
        b = self.batches[i]
        return b if read else dict(b, crops=b["crops"][:, :self.cfg.crop_samples])

    def step(self, augment=None, dropout: float = 0.0, n_devices: int = 1):
        key = (augment, dropout, n_devices)
        if key not in self._compiled:
            jax, steps_lib = self._jax, self._steps
            train_step = steps_lib.make_train_step(self.net(dropout), self.tx, head=self.cfg.head, seed=self.cfg.seed,
                                                   augment=augment, crop_samples=self.cfg.crop_samples)
            vmapped = jax.jit(jax.vmap(train_step, in_axes=(None, 0), axis_name=steps_lib.AXIS))
            self._compiled[key] = lambda state, b: vmapped(state, {k: steps_lib.shard(v, n_devices)
                                                                   for k, v in b.items()})
        return self._compiled[key]


@pytest.fixture(scope="session")
def tiny_train() -> TinyTrain:
    return TinyTrain()


def run_module(module: str, *args: str, devices: int = 1, timeout: float = 300, env: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """`python -m module args` in a fresh process with `devices` host CPU devices; warnings are errors."""
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    # A deprecated JAX call anywhere in the run is an error, so API removals show up here first.
    e["PYTHONWARNINGS"] = "error::DeprecationWarning,error::FutureWarning"
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p
