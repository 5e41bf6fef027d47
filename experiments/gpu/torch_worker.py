"""The PyTorch twin's training step timed in a process of its own, for experiments/gpu/run.py's grid stages.

Why a process: torch and JAX each load a CUDA runtime, cuDNN and an allocator; in one process a clash between
them, a torch.compile crash or a CUDA out-of-memory beside JAX's memory pool could take the JAX numbers down
too. Here a torch failure costs torch's rows only. The worker imports JAX on the CPU (JAX_PLATFORMS=cpu: it
needs crnn_jax's config and model helpers, never the GPU).

Protocol: one JSON object a line. The worker first answers {"ready": true, "torch", "cuda", "device"} or
{"fatal": why}; then, per request {"cfg": Config overrides, "variables": pickle path, "repeats", "gpu",
"threads", "inject"?}, one answer: crnn_jax.benchmarks.torch_reference.time_training_step's dict, or
{"error": why}. Anything torch prints goes to stderr (the run's log), never into the answers.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class TorchWorker:
    """Client side: start() early (torch's import overlaps other work), then call() per grid point.

    call() never raises for the worker's sake: a death, a silence past the timeout or a bad answer comes back
    as {"error": why}, the process is killed, and the next call starts a fresh one (at most `max_starts` in
    all). An exception from outside (the stage's time limit) kills the process and propagates."""

    def __init__(self, *, gpu: bool, log=print, cmd: list[str] | None = None, max_starts: int = 2):
        self.gpu, self.log, self.max_starts = gpu, log, max_starts
        self.cmd = cmd or [sys.executable, "-u", os.path.abspath(__file__)]
        self.proc, self.hello, self.fatal, self.last_error, self.starts = None, None, None, None, 0

    def start(self) -> None:
        if self.proc is not None or self.fatal or self.starts >= self.max_starts:
            return
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
            [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        self.starts += 1
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                         cwd=ROOT)
        except OSError as e:  # no process, no torch rows; the JAX rows do not depend on it
            self.fatal = f"the torch worker did not start: {e}"
            return
        self.hello = None
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self._lines), daemon=True).start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.put(line)
        lines.put(None)  # end of file: the process is gone

    def unavailable(self) -> str | None:
        """Why no further call can be answered, or None."""
        if self.fatal:
            return self.fatal
        if self.proc is None and self.starts >= self.max_starts:
            return f"torch worker gave up after {self.starts} start(s); last: {self.last_error}"
        return None

    def _answer(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=max(timeout, 0.1))
        except queue.Empty:
            raise _Lost(f"no answer from the torch worker within {timeout:.0f} s") from None
        if line is None:
            raise _Lost(f"the torch worker exited with code {self.proc.wait()}")
        try:
            return json.loads(line)
        except ValueError:
            raise _Lost(f"the torch worker answered {line[:200]!r}") from None

    def call(self, request: dict, timeout: float) -> dict:
        """Send one request; its answer within `timeout` seconds (start-up included) -> dict."""
        why = self.unavailable()
        if why:
            return {"error": why}
        deadline = time.monotonic() + timeout
        try:
            self.start()
            if self.fatal:
                return {"error": self.fatal}
            if self.hello is None:
                self.hello = self._answer(deadline - time.monotonic())
                if "fatal" in self.hello:
                    self.fatal = f"torch unavailable: {self.hello['fatal']}"
                elif self.gpu and not self.hello.get("cuda"):
                    self.fatal = f"torch {self.hello.get('torch')} sees no CUDA device"
                if self.fatal:
                    self.close()
                    return {"error": self.fatal}
            self.proc.stdin.write(json.dumps({**request, "gpu": self.gpu}) + "\n")
            self.proc.stdin.flush()
            return self._answer(deadline - time.monotonic())
        except (_Lost, OSError) as e:  # OSError: a broken pipe to a worker that died
            self.last_error = str(e)
            self.log(f"  torch worker: {e}; killed ({self.max_starts - self.starts} restart(s) left)")
            self._kill()
            return {"error": self.last_error}
        except BaseException:
            self.last_error = "interrupted"
            self._kill()
            raise

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """End the worker: end of input asks it to exit; killed if it has not within 5 s."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()


class _Lost(Exception):
    """The worker died, went silent or answered garbage."""


def save_variables(variables, path: str) -> str:
    """Flax variables (host numpy arrays) -> a pickle file for the worker -> path."""
    with open(path, "wb") as f:
        pickle.dump(variables, f)
    return path


def _point(ref, train_step, request: dict) -> dict:
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in request["cfg"].items()}
    precision = overrides.pop("precision")
    cfg = train_step.base_config(precision=precision).replace(**overrides)
    with open(request["variables"], "rb") as f:
        variables = pickle.load(f)
    inputs = train_step.train_inputs(cfg, cfg.batch_size)  # the same seeded arrays the JAX side timed
    return ref.time_training_step(cfg, train_step.N_CLASSES, variables, inputs, gpu=request["gpu"],
                                  repeats=request["repeats"], threads=request.get("threads"))


def serve() -> int:
    """Worker side: answer requests from stdin until it closes."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever torch or inductor prints goes to stderr, not into the answers

    def answer(obj):
        answers.write(json.dumps(obj, default=str) + "\n")
        answers.flush()

    try:
        import torch

        from crnn_jax.benchmarks import torch_reference as ref
        from crnn_jax.benchmarks import train_step
    except BaseException as e:
        answer({"fatal": f"{type(e).__name__}: {e}"[:1000]})
        return 1
    cuda = torch.cuda.is_available()
    answer({"ready": True, "torch": torch.__version__, "cuda": cuda,
            "device": torch.cuda.get_device_name(0) if cuda else None})
    for line in sys.stdin:
        request = json.loads(line)
        inject = request.get("inject")
        if inject == "crash":  # tests only: a worker that dies mid-request
            os._exit(70)
        try:
            if inject == "fail":  # tests only
                raise RuntimeError("injected torch failure (stands in for a torch.compile error or a CUDA OOM)")
            result = _point(ref, train_step, request)
        except Exception as e:
            result = {"error": f"{type(e).__name__}: {e}"[:2000],
                      "out_of_memory": isinstance(e, torch.cuda.OutOfMemoryError)}
        if cuda:  # torch's cached blocks go back: JAX's next point shares the GPU
            torch.cuda.empty_cache()
        answer(result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(serve())
