"""The GPU measurements (issues 13, 29) in one command that cannot lose what it has measured.

    bash experiments/gpu/run.sh                          # on the lent GPU (a 600 s call): results in $OUT
    python experiments/gpu/run.py --plan                 # the stages in order with their budgets; starts nothing
    python experiments/gpu/run.py --quick --out /tmp/q   # every stage on a CPU at toy sizes (tests/test_gpu_script.py)

Stages run in order of value (PLAN): the backend check (outside --quick anything but JAX on a GPU stops the
run), the headline numbers (training step fp32/bf16 against torch.compile, the GTZAN-size epoch, the log-mel),
the rest, the GPU tests last. Each stage runs in its own guard (gpu_schedule.py): an exception, a torch failure
(torch runs in a process of its own, torch_worker.py) or a stage over its time limit costs that stage (or those
torch rows) only. OUT/gpu_results.json and .md are written before the first stage, as each stage starts (marked
running) and after each one, so a call killed from outside still leaves every finished stage's numbers. The
stages themselves are in gpu_stages.py, the Markdown in gpu_report.py, the parallel data build in synth_pool.py.

Time: the device tool kills a call after LIMIT_S; --budget-s (default LIMIT_S - SPARE_S) counts from run.sh's
start. A stage starts only if the budget still holds its planned seconds; it may use those plus what earlier
stages left unused, never the seconds planned for later stages, and SIGALRM stops it there (once the current C
call returns: an XLA or inductor compile is not cut short). First compiles are cached on disk under
$CRNN_GPU_CACHE (default /tmp/crnn_jax_gpu_cache: XLA's and inductor's caches), so a second call in the same
lease skips them; "cache" in the JSON says whether this run started warm.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import importlib.metadata
import os
import platform
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The checkout's crnn_jax, and this folder's modules. Nothing heavier at the top level: the data build's
# spawned workers re-run it.
sys.path[:0] = [p for p in (ROOT, HERE) if p not in sys.path]

from gpu_schedule import Budget, StageContext, log, run_stages  # noqa: E402  (standard library only)

LIMIT_S = 600  # the device tool's limit on one call
SPARE_S = 120  # left under it: a compile the alarm cannot cut short, the final write, the copy back
STARTUP_S = 15  # run.sh before the first stage: wheel install, nvidia-smi, Python, the first imports

# (stage, seconds planned on an H100/H200, seconds in --quick on a CPU, why). Full-size seconds are estimates
# of first (uncached) compiles, not yet measured on this project's code: no GPU run has been made.
PLAN = (
    ("backend", 15, 10, "JAX's CUDA start, jax.devices(), one jit; versions"),
    ("train_fp32", 130, 20, "2 points x (20 s JAX compile + timing, 45 s torch.compile of a new shape + timing)"),
    ("train_bf16", 85, 20, "1 point with torch (65 s) + 1 JAX-only (20 s)"),
    ("epoch_gtzan", 60, 30, "800 x 30 s clips on all cores (~10 s), 2 compiles (~30 s), 2 epochs, test"),
    ("mel", 15, 5, "1,000 x 30 s clips, 100 a call: one compile (~5 s), ~3 GB through HBM"),
    ("epoch_recipe", 30, 20, "data cached by epoch_gtzan; compile (~15 s), 2 x 200 steps at batch 4"),
    ("profile", 15, 10, "the fp32 (3 s, 32) program from the compile cache; 3 steps traced"),
    ("train_default", 45, 30, "python -m crnn_jax.train: start, 1,000 x 10 s clips, compile, 440 steps"),
    ("deterministic", 25, 30, "2 bench processes; the default one hits the compile cache"),
    ("tests", 45, 10, "test_gpu, test_ops, test_model with -W default; gets all that is left"),
)
STAGES = tuple(name for name, *_ in PLAN)
INJECT_KINDS = ("torch-fail", "torch-crash", "stage-raise", "overrun")  # tests only: --inject KIND:TARGET,...
OVERRUN_LIMIT_S = 0.5  # an --inject overrun stage's time limit


def package_versions() -> dict:
    """Installed versions, read without importing anything (an import may be what fails)."""
    out = {}
    for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "flax", "optax",
                 "orbax-checkpoint", "numpy", "scipy", "torch", "triton"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def print_plan(quick: bool, budget_s: float) -> None:
    col = 2 if quick else 1
    total = STARTUP_S + sum(row[col] for row in PLAN)
    print(f"{'quick' if quick else 'full'} plan: stages in order, each with the seconds it needs to start")
    print(f"  {'':2} {'(startup)':<14} {STARTUP_S:4d} s  run.sh, Python and imports before the first stage")
    for i, row in enumerate(PLAN, 1):
        print(f"  {i:2d} {row[0]:<14} {row[col]:4d} s  {row[3]}")
    print(f"  total {total} s of --budget-s {budget_s:.0f}; call limit {LIMIT_S} s, {LIMIT_S - total} s to spare")


def _parse_inject(text: str) -> dict:
    out: dict = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, target = item.partition(":")
        if kind not in INJECT_KINDS or not target:
            raise ValueError(f"--inject: {item!r} is not KIND:TARGET with KIND one of {', '.join(INJECT_KINDS)}")
        allowed = ("fp32", "bf16") if kind.startswith("torch") else STAGES
        if target not in allowed:
            raise ValueError(f"--inject: {kind} takes one of {', '.join(allowed)}, not {target!r}")
        out.setdefault(kind, set()).add(target)
    return out


def _setup_env() -> dict:
    """Before JAX starts: the GPU memory policy and the on-disk compilation caches -> where they are."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch's process needs GPU memory too
    root = os.environ.setdefault("CRNN_GPU_CACHE", os.path.join(tempfile.gettempdir(), "crnn_jax_gpu_cache"))
    xla = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    inductor = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "inductor"))
    count = lambda d: sum(len(f) for _, _, f in os.walk(d)) if os.path.isdir(d) else 0
    return {"xla": xla, "xla_files_at_start": count(xla), "inductor": inductor,
            "inductor_files_at_start": count(inductor)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-out", help="folder for gpu_results.json/.md")
    p.add_argument("--budget-s", type=float, default=float(LIMIT_S - SPARE_S),
                   help=f"seconds from run.sh's start after which no stage starts (default {LIMIT_S - SPARE_S})")
    p.add_argument("--quick", action="store_true", help="toy sizes on any backend (the test of this script)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)} "
                   "(the backend check always runs first)")
    p.add_argument("--plan", action="store_true", help="print the stages in order with their budgets and exit")
    p.add_argument("--inject", default="", help=argparse.SUPPRESS)  # tests only: faults to survive
    args = p.parse_args(argv)
    chosen = {s.strip() for s in args.stages.split(",") if s.strip()}
    try:
        if chosen - set(STAGES):
            raise ValueError(f"unknown stage(s) {', '.join(sorted(chosen - set(STAGES)))}; choose from {', '.join(STAGES)}")
        inject = _parse_inject(args.inject)
    except ValueError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    if args.plan:
        print_plan(args.quick, args.budget_s)
        return 0
    stages = [s for s in STAGES if s in chosen | {"backend"}]
    cache = _setup_env()
    try:
        t0 = float(os.environ.get("CRNN_GPU_T0", ""))
    except ValueError:
        t0 = None
    budget = Budget(args.budget_s, t0)
    os.makedirs(args.out, exist_ok=True)
    import gpu_report as report_lib  # standard library only

    col = 2 if args.quick else 1
    needs = {name: row[col] for row in PLAN for name in [row[0]]}
    forced = {}
    for name in inject.get("overrun", ()):
        needs[name], forced[name] = 0, OVERRUN_LIMIT_S
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "mode": "quick" if args.quick else "full", "budget_s": args.budget_s, "limit_s": LIMIT_S,
               "plan": [{"stage": s, "need_s": needs[s]} for s in stages], "device": {},
               "versions": package_versions(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "load_avg": os.getloadavg(), "xla_flags": os.environ.get("XLA_FLAGS", ""), "cache": cache,
               "inject": {k: sorted(v) for k, v in inject.items()}, "status": "running", "stages": {}}

    def write():
        try:
            report_lib.write(results, args.out)
        except Exception as e:  # a report bug must not stop the measurements
            log(f"could not write {args.out}: {type(e).__name__}: {e}")

    write()  # before the first stage
    log(f"{results['mode']} run, budget {args.budget_s:.0f} s ({budget.left():.0f} s left), stages {', '.join(stages)}")
    faulthandler.enable()  # a crash inside XLA or CUDA leaves a Python traceback in run.log
    faulthandler.dump_traceback_later(max(budget.left(), 0) + 60, exit=False)  # and a hang, where it hangs
    shared: dict = {}
    modules: dict = {}

    def runner(name):
        def run(ctx):
            if name in inject.get("stage-raise", ()):
                raise RuntimeError(f"injected failure in stage {name} (--inject stage-raise:{name})")
            if "stages" not in modules:
                import gpu_stages  # starts JAX: inside the stage's guard

                modules["stages"] = gpu_stages
            try:
                r = modules["stages"].RUNNERS[name](ctx)
            finally:
                if grid and name == grid[-1] and "torch" in shared:  # its GPU memory goes back for the rest
                    shared["torch"].close()
            if name == "backend" and grid:
                import torch_worker  # start torch's import now: it overlaps the stages before the grid

                shared["torch"] = torch_worker.TorchWorker(gpu=r["backend"] == "gpu", log=log)
                shared["torch"].start()
            return r
        return run

    grid = [s for s in stages if s in ("train_fp32", "train_bf16")]
    runners = {name: runner(name) for name in stages}
    with tempfile.TemporaryDirectory(prefix="crnn_gpu_") as tmp:
        sizes = lambda: getattr(modules["stages"], "QUICK" if args.quick else "FULL")
        make_ctx = lambda name, limit: StageContext(name, limit, sizes=sizes, quick=args.quick, tmp=tmp,
                                                    results=results, write=write, shared=shared, inject=inject, log=log)
        try:
            run_stages(stages, runners, needs, budget, results, write, make_ctx, forced_limits=forced)
        finally:
            if "torch" in shared:
                shared["torch"].close()
            faulthandler.cancel_dump_traceback_later()
    results["total_s"] = args.budget_s - budget.left()
    failed = {n: r.get("error", "") for n, r in results["stages"].items() if r.get("ok") is False}
    results["failed"] = failed
    results["status"] = "aborted" if results.get("aborted") else "complete"
    write()
    try:
        print(report_lib.markdown(results), flush=True)
    except Exception as e:
        log(f"could not render the Markdown: {type(e).__name__}: {e}")
    return 3 if results.get("aborted") else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
