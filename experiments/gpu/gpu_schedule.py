"""How experiments/gpu/run.py runs its stages: in order, each only if the budget still holds its planned
seconds, each in a guard (an exception or SIGALRM at its time limit costs that stage only), the results written
before each stage (marked running) and after it. Standard library only: the tests drive it with fake stages."""

from __future__ import annotations

import datetime
import signal
import time
import traceback


class Overrun(BaseException):
    """Raised by SIGALRM in a stage past its limit. BaseException: the stage's own handlers must not catch it."""


class Budget:
    """Seconds left of `seconds`, counted from `t0` (time.time() of run.sh's start; now if unknown)."""

    def __init__(self, seconds: float, t0: float | None = None):
        already = min(max(time.time() - t0, 0.0), 300.0) if t0 else 0.0
        self.end = time.monotonic() - already + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class StageContext:
    """What a stage sees: its sizes, mode, temp dir, the shared results, its time left, partial saves."""

    def __init__(self, name, limit_s, *, sizes, quick, tmp, results, write, shared, inject, log=print):
        self.name, self.quick, self.tmp, self.results = name, quick, tmp, results
        self.write, self.shared, self.inject, self.log, self._sizes = write, shared, inject, log, sizes
        self.deadline = time.monotonic() + limit_s
        self.partial: dict = {}

    @property
    def size(self) -> dict:
        """gpu_stages.FULL or QUICK: read on use, since the first stage is what imports gpu_stages."""
        return self._sizes()

    def left(self) -> float:
        """Seconds until this stage's limit."""
        return self.deadline - time.monotonic()

    def save(self, **numbers) -> None:
        """Record numbers so far: kept (and written now) if the stage dies later."""
        self.partial.update(numbers)
        self.results["stages"][self.name] = {**self.results["stages"].get(self.name, {}), **self.partial,
                                             "running": True}
        self.write()


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (wall time lies on a busy machine)."""
    import resource

    return sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
               for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def guarded(fn, ctx, limit_s: float) -> dict:
    """fn(ctx) under SIGALRM at limit_s -> its dict, or the partial numbers with "ok": False and "error"."""
    result = None

    def alarm(signum, frame):
        raise Overrun()

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(limit_s, 0.01))
            result = fn(ctx)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Overrun:
        if result is None:  # (the alarm may land between the stage's return and the disarm: its result stands)
            result = {**ctx.partial, "ok": False, "overran": True,
                      "error": f"stopped at its time limit of {limit_s:.1f} s (numbers saved before that are kept)"}
    except Exception as e:
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        result = {**ctx.partial, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                  "traceback": "".join(tb[-3:])[-1500:]}
    finally:
        signal.signal(signal.SIGALRM, previous)
    return result


def run_stages(stages, runners, needs, budget, results, write, make_ctx, *, forced_limits=None, log=log):
    """Run `stages` in order, each guarded (see the module docstring); results["stages"] gets one record each."""
    forced_limits = forced_limits or {}
    for i, name in enumerate(stages):
        need, left = needs[name], budget.left()
        if results.get("aborted"):
            results["stages"][name] = {"skipped": f"not run: {results['aborted']}"}
        elif left < need:
            results["stages"][name] = {"skipped": f"{left:.0f} s of the budget left, {need} s needed"}
        if name in results["stages"]:
            log(f"{name}: skipped ({results['stages'][name]['skipped']})")
            write()
            continue
        reserve = 0  # the planned seconds of the later stages that will still fit after this one's
        for n in stages[i + 1:]:
            reserve += needs[n] if reserve + needs[n] <= left - need else 0
        limit = forced_limits.get(name, left - reserve)
        results["stages"][name] = {"running": True, "need_s": need, "limit_s": limit}
        write()  # a call killed from outside still shows which stage it was in
        log(f"{name} (limit {limit:.1f} s, {left:.0f} s of the budget left)")
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        r = guarded(runners[name], make_ctx(name, limit), limit)
        r.update(need_s=need, limit_s=limit, stage_s=time.perf_counter() - t0, cpu_s=_cpu_seconds() - cpu0)
        results["stages"][name] = r
        log(f"{name}: {'ok' if r.get('ok') else 'FAILED ' + r.get('error', '')[:300]} in {r['stage_s']:.1f} s "
            f"({r['cpu_s']:.1f} CPU s)")
        if name == "backend" and not r.get("ok"):
            results["aborted"] = f"the backend check failed ({r.get('error', '')[:200]})"
        write()
