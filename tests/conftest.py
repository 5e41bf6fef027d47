"""Shared test fixtures. Tests run on the CPU; multi-device tests start subprocesses with
XLA_FLAGS=--xla_force_host_platform_device_count=N, since the device count is fixed per process."""

import os
import subprocess
import sys

import tempfile

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


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    """Keep the decoded-audio cache of the whole session out of the user's home."""
    os.environ.setdefault("CRNN_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


SMOKE = os.path.join(ROOT, "experiments", "smoke.py")


def snapshot(directory) -> list[tuple[str, int, int]]:
    """Every file and folder under `directory` with its size and modification time (ns): equal snapshots
    mean nothing was written, added or removed."""
    out = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            st = os.stat(os.path.join(root, name))
            out.append((os.path.relpath(os.path.join(root, name), directory), st.st_size, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> str:
    """The workdir of one smoke-preset training run, shared by the whole session. Tests only read it
    (test_predict snapshots it to prove that); a test that needs to damage one copies it first."""
    from crnn_jax import config as config_lib

    cfg = config_lib.load_preset(SMOKE).replace(workdir=str(tmp_path_factory.mktemp("smoke") / "run"))
    loop.train(cfg, log=lambda *_: None)
    return cfg.workdir


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
