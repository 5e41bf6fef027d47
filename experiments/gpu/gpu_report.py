"""experiments/gpu/run.py's outputs: the profile summary, gpu_results.json and the Markdown tables."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

# Issue 5's GPU targets, checked against the stages that measure them.
TARGETS = {"epoch_gtzan": 2.0, "epoch_recipe": 10.0, "torch_ratio": 2.0}


def summarise_trace(trace_dir: str, top: int = 15) -> dict:
    """The newest *.trace.json.gz (perfetto) under trace_dir -> {"trace_source", "op_total_ms", "top": [{"op",
    "ms", "count", "share"}]}: complete events of the device's streams ("/device:..." processes) where the
    trace has them (GPU kernels), else the host's XLA thunks (events naming an hlo_op: the CPU backend),
    grouped by their HLO op name, longest total first. Python frames and runtime bookkeeping are left out."""
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(paths[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device = {pid for pid, n in names.items() if n.startswith("/device:")}
    complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if device and any(e["pid"] in device for e in complete):
        chosen, source = [e for e in complete if e["pid"] in device], "device"
    else:
        chosen, source = [e for e in complete if "hlo_op" in e.get("args", {})], "host thunks"
    total = collections.Counter()
    count = collections.Counter()
    for e in chosen:
        op = e.get("args", {}).get("hlo_op") or e["name"]
        total[op] += float(e["dur"])  # microseconds
        count[op] += 1
    all_us = sum(total.values())
    rows = [{"op": op, "ms": us / 1e3, "count": count[op], "share": us / all_us if all_us else 0.0}
            for op, us in total.most_common(top)]
    return {"trace_source": source, "processes": sorted(set(names.values())), "op_total_ms": all_us / 1e3, "top": rows}


def judge_pytest(text: str, returncode, backend: str) -> dict:
    """pytest -v -rs output (returncode None: killed at its timeout) -> {"counts", "summary", "skip_reasons",
    "failed_tests", "problems", "ok"}. On a GPU run a skip for want of a GPU is a failure: the tests fell
    back to the CPU."""
    outcomes = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text, re.M)
    lines = text.strip().splitlines()
    summary = next((l.strip("= ") for l in reversed(lines) if re.search(r"\d+ (passed|failed|skipped|error)", l)), "")
    skip_reasons = [l for l in lines if l.startswith("SKIPPED")][:5]
    problems = []
    if returncode is None:
        problems.append("killed at its time limit")
    elif returncode != 0:
        problems.append(f"pytest exited with {returncode}")
    if not outcomes:
        problems.append("no test ran")
    if backend == "gpu" and any("no GPU" in l for l in skip_reasons):
        problems.append("tests skipped for want of a GPU on a GPU run: JAX fell back to the CPU")
    return {"counts": dict(collections.Counter(o.lower() for _, o in outcomes)), "summary": summary,
            "skip_reasons": skip_reasons, "failed_tests": [n for n, o in outcomes if o in ("FAILED", "ERROR")][:10],
            "problems": problems, "ok": not problems}


def _f(x, fmt="{:.3g}"):
    return "n/a" if x is None else fmt.format(x)


def _mib(x):
    return "n/a" if not x else f"{x / 2**20:,.0f} MiB"


def _status(r: dict) -> str:
    if r.get("running"):
        return "running (the call ended inside this stage)"
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    if r.get("ok"):
        return "ok"
    return ("OVERRAN: " if r.get("overran") else "FAILED: ") + r.get("error", "")[:160].replace("\n", " ")


def markdown(results: dict) -> str:
    """The Markdown summary of a run.py results dict: one table per stage that produced numbers."""
    d, st, v = results.get("device") or {}, results["stages"], results.get("versions") or {}
    out = [f"# GPU script results ({results['mode']} mode, {results.get('status', '')})", "",
           f"{results['date']}; {d.get('backend', 'backend unknown')} ({d.get('device_kind', '?')}, "
           f"{d.get('n_devices', '?')} device(s)); " + ", ".join(f"{k} {x}" for k, x in v.items() if x)
           + f"; Python {results['python']}; budget {results['budget_s']:.0f} s"
           + (f", used {results['total_s']:.0f} s" if "total_s" in results else ""), "",
           "| stage | status | limit s | seconds |", "|---|---|---:|---:|"]
    for name, r in st.items():
        out.append(f"| {name} | {_status(r)} | {_f(r.get('limit_s'))} | {_f(r.get('stage_s'), '{:.1f}')} |")
    c = results.get("cache") or {}
    if c:
        out += ["", f"Compilation caches: XLA {c.get('xla')} ({c.get('xla_files_at_start')} files at the start), "
                f"inductor {c.get('inductor')} ({c.get('inductor_files_at_start')}): compile times below are "
                + ("first compiles." if not c.get("xla_files_at_start") else "partly cache hits.")]
    b = st.get("backend", {})
    if b.get("devices"):
        out += ["", f"Devices: {', '.join(b['devices'])}"]
    t = st.get("tests", {})
    if "command" in t:
        out += ["", f"Tests (`{t['command']}`{', a sanity check of the stage only' if t.get('sanity_only') else ''}): "
                f"{t.get('summary') or 'no summary'}" + "".join(f"; {p}" for p in t.get("problems", []))]
    m = st.get("mel", {})
    if "clips_per_s" in m:
        out += ["", "## mel", "", "| clips x s | seconds | clips/s | GB/s (XLA bytes) | GB/s (floor bytes) | of peak |",
                "|---|---:|---:|---:|---:|---:|",
                f"| {m['clips']} x {m['clip_seconds']:g} | {m['seconds']:.3f} | {m['clips_per_s']:.0f} | "
                f"{m['bytes_per_s'] / 1e9:.1f} | {m['min_bytes_per_s'] / 1e9:.1f} | {_f(m['bandwidth_fraction'], '{:.1%}')} |"]
    epochs = [(n, st[n]) for n in ("epoch_gtzan", "epoch_recipe") if "epoch_s" in st.get(n, {})]
    if epochs:
        out += ["", "## one epoch through train.train (resident data, one call per epoch; second epoch timed)", "",
                "| run | clips | crop s | batch | steps | epoch s | target | clips/s | first epoch s (compile) | data build s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n, r in epochs:
            mark = "met" if r["epoch_s"] < TARGETS[n] else "NOT met"
            out.append(f"| {r['preset']} | {r['clips']} | {r['crop_s']:g} | {r['batch']} | {r['steps_per_epoch']} | "
                       f"{r['epoch_s']:.3f} | < {TARGETS[n]:g} s: {mark} | {r['clips_per_s']:.0f} | "
                       f"{r['first_epoch_s']:.1f} | {r['data_build_s']:.1f} |")
    for prec in ("fp32", "bf16"):
        g = st.get(f"train_{prec}", {})
        if not (g.get("runs") or g.get("failed_points")):
            continue
        out += ["", f"## bench train, {prec} (Choi-size CRNN unless quick; seconds per step, median)", "",
                "| crop s | batch | impl | s/step | clips/s | TFLOP/s | of peak | peak memory | compile s | jax/torch |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for e in g["runs"]:
            for r in e["rows"]:
                if "error" in r:
                    out.append(f"| {e['crop_s']:g} | {e['batch']} | {r['impl']} | failed: {r['error'][:150]} | | | | | | |")
                    continue
                ratio = _f(e.get("jax_speedup"), "{:.2f}x") if r["impl"] == "jax" else ""
                out.append(f"| {e['crop_s']:g} | {e['batch']} | {r['impl']} | {r['median_s']:.4f} | {r['clips_per_s']:.0f} | "
                           f"{r['tflops']:.3f} | {_f(r['peak_fraction'], '{:.1%}')} | {_mib(r.get('peak_bytes') or r.get('xla_bytes'))} | "
                           f"{_f(r.get('compile_s'), '{:.1f}')} | {ratio} |")
            if e.get("torch_skipped"):
                out.append(f"| {e['crop_s']:g} | {e['batch']} | torch | not run: {e['torch_skipped'][:150]} | | | | | | |")
        for s in g.get("skipped_points", []):
            out.append(f"| {s['crop_s']:g} | {s['batch']} | skipped: {s['reason']} | | | | | | | |")
        for s in g.get("failed_points", []):
            out.append(f"| {s['crop_s']:g} | {s['batch']} | jax | failed: {s['error'][:150]} | | | | | | |")
        out += [f"\ntorch.compile failed at crop {e['crop_s']:g} s, batch {e['batch']} (timed eager instead): "
                f"{r['compile_error'][:300]}" for e in g["runs"] for r in e["rows"] if r.get("compile_error")]
    t = st.get("train_default", {})
    if "wall_s" in t:
        tta = t.get("time_to_accuracy") or {}
        out += ["", "## `python -m crnn_jax.train` (no arguments)", "",
                "| command | wall s | training s | steps | 90 % validation at | test accuracy |", "|---|---:|---:|---:|---|---:|",
                f"| `{t['command']}` | {t['wall_s']:.1f} | {t['train_seconds']:.1f} | {t['steps']} | "
                f"{_f(tta.get('seconds'), '{:.1f} s')} (step {tta.get('step')}) | {t['test_accuracy']:.3f} |"]
    p = st.get("profile", {})
    if p.get("top"):
        out += ["", f"## profile: {p['steps']} training steps, crop {p['crop_s']:g} s, batch {p['batch']} "
                f"({p['trace_source']}; {p['op_total_ms']:.1f} ms of ops, {p['median_step_s'] * 1e3:.1f} ms a step)", "",
                "| op | ms | count | share |", "|---|---:|---:|---:|"]
        out += [f"| `{r['op'][:60]}` | {r['ms']:.2f} | {r['count']} | {r['share']:.1%} |" for r in p["top"]]
    det = st.get("deterministic", {})
    if "slowdown" in det:
        out += ["", f"`--xla_gpu_deterministic_ops=true`: {det['median_s']['deterministic']:.4f} s/step vs "
                f"{det['median_s']['default']:.4f} s ({det['slowdown']:.2f}x), crop {det['crop_s']:g} s, batch {det['batch']}"]
    return "\n".join(out) + "\n"


def _replace(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # a reader never sees half a file


def write(results: dict, out_dir: str) -> None:
    """gpu_results.json, then gpu_results.md, in out_dir, each replaced whole. The JSON does not wait on the
    Markdown: a rendering error leaves the JSON written and the error in the .md."""
    _replace(os.path.join(out_dir, "gpu_results.json"), json.dumps(results, indent=1, default=str))
    try:
        text = markdown(results)
    except Exception as e:
        text = f"# GPU script results\n\nthe Markdown could not be rendered ({type(e).__name__}: {e}); see gpu_results.json\n"
    _replace(os.path.join(out_dir, "gpu_results.md"), text)
