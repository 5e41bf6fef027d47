"""Several processes (one per host), one data-parallel run, on JAX's distributed runtime.

    # host A (process 0, also the coordinator)      # host B
    python -m crnn_jax.train --coordinator A:7654 --num-processes 2 --process-id 0 ...
    python -m crnn_jax.train --coordinator A:7654 --num-processes 2 --process-id 1 ...

Under SLURM or Open MPI (and a Kubernetes indexed Job with the `kubernetes` package) no flags are needed:
`jax.distributed.initialize()` reads the cluster's environment. The one pmap then spans every device of
every process; each process feeds only its own devices' rows of each global batch (`local_rows`), so the
run takes the same examples in the same order, and gets the same numbers, as one process with as many
devices. This module does the start-up and the checks that make failures one clear line:
- a peer that never arrives: a watchdog ends the wait after --init-timeout seconds (JAX itself would
  abort the process with a C++ stack trace);
- the coordinator's port already taken: a bind on process 0 before JAX tries;
- processes that disagree on the config or the data: fingerprints compared across processes at start.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import os
import socket
import sys
import threading
from typing import Callable, TypeVar

import jax
import numpy as np

from crnn_jax.config import Config, ConfigError

T = TypeVar("T")

# Config fields that may differ between processes: a host-local path, not what is learned.
HOST_LOCAL_FIELDS = {"cache_dir"}


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins a run; launch parameters, never part of the Config or config.json.

    coordinator: "HOST:PORT" of process 0 (None: detect a cluster, or run alone).
    num_processes, process_id: this run's process count and this process's index in [0, num_processes).
    init_timeout: seconds to wait for every process to join before giving up.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    init_timeout: float = 300.0


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add --coordinator, --num-processes, --process-id and --init-timeout to `parser`."""
    g = parser.add_argument_group("several processes (see docs/distributed.md)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the run (one per host)")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 .. N-1")
    g.add_argument("--init-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for every process to join (default 300)")


def launch_of(args: argparse.Namespace) -> Launch:
    """The parsed flags -> a checked Launch (ConfigError naming the flag when they do not fit together)."""
    given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if any(given) and not all(given):
        raise ConfigError("--coordinator, --num-processes and --process-id go together: give all three or none")
    if not args.init_timeout > 0:
        raise ConfigError(f"--init-timeout must be > 0 seconds, got {args.init_timeout}")
    if args.coordinator is not None:
        _host_port(args.coordinator)
        if args.num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            raise ConfigError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
    return Launch(args.coordinator, args.num_processes, args.process_id, args.init_timeout)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator must be HOST:PORT with a port in 1..65535, got {address!r}")
    return host.strip("[]"), int(port)  # [::1]:port -> ::1


def cluster_env() -> str | None:
    """The multi-process launcher `jax.distributed.initialize()` would detect here, or None.

    Checked by their environment variables (the ones JAX reads) and only when they describe more than one
    process, so a single SLURM task, or a pod that is not part of an indexed Job, runs alone.
    """
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in env for v in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        try:  # JAX's own Kubernetes detection needs the client library to ask the API for the Job's size
            import kubernetes  # noqa: F401
        except ImportError:
            return None
        return "Kubernetes"
    return None


def initialize(launch: Launch) -> bool:
    """Join the run `launch` describes, or a detected cluster; -> True when there are several processes.

    Must run before any other JAX call of the process. With no flags and no cluster, does nothing (one
    process). A peer that never arrives ends the process after launch.init_timeout seconds with one line
    on stderr and exit status 2; a taken coordinator port raises ConfigError naming it.
    """
    if launch.coordinator is None:
        where = cluster_env()
        if where is None:
            return False
        kwargs, what = {}, f"all of the {where} job's processes"
    else:
        if launch.num_processes == 1:
            return False
        if launch.process_id == 0:
            _check_port_free(_host_port(launch.coordinator)[1])
        # "deactivate": explicit flags mean what they say, even inside a SLURM or MPI job, where JAX would
        # otherwise restrict each process to the one GPU numbered by its local task id.
        kwargs = dict(coordinator_address=launch.coordinator, num_processes=launch.num_processes,
                      process_id=launch.process_id, cluster_detection_method="deactivate")
        what = f"all {launch.num_processes} processes at the coordinator {launch.coordinator}"
    # The same program runs on CPU hosts: cross-process CPU collectives need gloo (ignored on GPU/TPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    def give_up() -> None:  # JAX's own timeout aborts with a C++ stack trace; end first, with one line
        print(f"crnn_jax.train: error: not {what} joined within {launch.init_timeout:g} s (--init-timeout); "
              f"start every process with the same --coordinator and --num-processes and a distinct "
              f"--process-id", file=sys.stderr, flush=True)
        os._exit(2)

    watchdog = threading.Timer(launch.init_timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=int(launch.init_timeout) + 60)
    finally:
        watchdog.cancel()
    if jax.process_index() != 0:
        _silence_stdout()
    return True


def _check_port_free(port: int) -> None:
    """Process 0 hosts the coordinator on `port` (all interfaces): fail early if something holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a previous run's connections in TIME_WAIT are no conflict; a listener is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            why = "is already in use on this host" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
            raise ConfigError(f"--coordinator: port {port} {why}; choose a free port (another run may be "
                              f"using it)") from None


def _silence_stdout() -> None:
    """Only process 0 logs: the others' stdout (ours and C++ libraries' notices, e.g. gloo's) goes to
    /dev/null at the file-descriptor level; stderr (warnings, errors) is kept."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def is_primary() -> bool:
    """True on process 0, the one that logs and writes the workdir's files."""
    return jax.process_index() == 0


def local_devices() -> tuple[int, int]:
    """This process's devices as a block of the pmap's device order -> (index of the first, count).

    The pmap runs over jax.devices(), which lists each process's devices together; device i takes rows
    [i * per_device, (i + 1) * per_device) of every global batch.
    """
    order = [d.id for d in jax.devices()]
    mine = [order.index(d.id) for d in jax.local_devices()]
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise RuntimeError(f"process {jax.process_index()}'s devices are not contiguous in jax.devices() "
                           f"(positions {mine}); cannot assign it a block of each batch")
    return mine[0], len(mine)


def fingerprints(cfg: Config, ds, split: dict[str, np.ndarray]) -> dict[str, int]:
    """32-bit digests of what every process must agree on: each Config field (except host-local paths)
    and the data (song names, lengths, labels, class names, the split; not the audio samples)."""
    digest = lambda b: int.from_bytes(hashlib.sha256(b).digest()[:4], "little") - 2**31  # fits int32
    out = {f"config field {k}": digest(json.dumps(v, sort_keys=True).encode())
           for k, v in sorted(dataclasses.asdict(cfg).items()) if k not in HOST_LOCAL_FIELDS}
    h = hashlib.sha256(json.dumps([list(ds.names), list(ds.class_names), list(ds.audio.shape)]).encode())
    for a in (ds.lengths, ds.labels, *(split[k] for k in sorted(split))):
        h.update(np.ascontiguousarray(a, np.int64).tobytes())
    out["data (song names, lengths, labels or split)"] = digest(h.digest())
    return out


def agreed(prepare: Callable[[], T], fingerprint: Callable[[T], dict[str, int]]) -> T:
    """prepare() on every process, then check that all succeeded and agree -> prepare()'s result.

    One process alone: just prepare(). Several: an error on any process stops all of them (it raises its
    own; the others a ConfigError saying which process failed, instead of waiting for it forever), and
    fingerprints that differ raise ConfigError naming the first thing that differs.
    """
    if jax.process_count() == 1:
        return prepare()
    from jax.experimental import multihost_utils

    try:
        result, error = prepare(), None
        prints = fingerprint(result)
    except Exception as e:  # noqa: BLE001 -- reported to the others first, then raised as it was
        result, error, prints = None, e, None
    n_fields = len(fingerprint_names())
    row = np.zeros(1 + n_fields, np.int32)  # [failed?, digests...]
    if error is not None:
        row[0] = 1
    else:
        row[1:] = [prints[k] for k in fingerprint_names()]
    rows = np.asarray(multihost_utils.process_allgather(row))  # [processes, 1 + n_fields]
    if error is not None:
        raise error
    failed = np.flatnonzero(rows[:, 0])
    if failed.size:
        raise ConfigError(f"process {failed[0]} stopped with an error at start (see its log); stopping too")
    for i in range(1, len(rows)):
        differ = np.flatnonzero(rows[i, 1:] != rows[0, 1:])
        if differ.size:
            raise ConfigError(f"processes disagree on the {fingerprint_names()[differ[0]]} (process {i} differs "
                              f"from process 0): start every process with the same flags and data")
    return result


def fingerprint_names() -> list[str]:
    """The names `fingerprints` returns, in a fixed order (the same on every process)."""
    fields = sorted(f.name for f in dataclasses.fields(Config) if f.name not in HOST_LOCAL_FIELDS)
    return [f"config field {k}" for k in fields] + ["data (song names, lengths, labels or split)"]
