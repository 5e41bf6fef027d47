"""experiments/gpu/run.py's outputs: the profile summary, gpu_results.json and the Markdown tables."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os

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


def _f(x, fmt="{:.3g}"):
    return "n/a" if x is None else fmt.format(x)


def _mib(x):
    return "n/a" if not x else f"{x / 2**20:,.0f} MiB"


def markdown(results: dict) -> str:
    """The Markdown summary of a run.py results dict: one table per stage that produced numbers."""
    d, st = results["device"], results["stages"]
    out = [f"# GPU script results ({results['mode']} mode)", "",
           f"{results['date']}; {d['backend']} ({d['device_kind']}, {d['n_devices']} device(s)); "
           f"jax {results['versions'].get('jax')}, flax {results['versions'].get('flax')}, "
           f"torch {results['versions'].get('torch')}; Python {results['python']}; budget {results['budget_s']:.0f} s"
           + (f", used {results['total_s']:.0f} s" if "total_s" in results else ""), "",
           "| stage | status | seconds |", "|---|---|---:|"]
    for name, r in st.items():
        if r.get("partial"):
            status = "partial: stopped inside the stage"
        elif r.get("skipped"):
            status = f"skipped: {r['skipped']}"
        else:
            status = "ok" if r.get("ok") else f"FAILED: {r.get('error', '')[:120]}"
        out.append(f"| {name} | {status} | {_f(r.get('stage_s'), '{:.1f}')} |")
    if st.get("tests", {}).get("summary"):
        out += ["", f"Tests (`{st['tests']['command']}`): {st['tests']['summary']}"]
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
        if not g.get("runs"):
            continue
        out += ["", f"## bench train, {prec} (Choi-size CRNN unless quick; seconds per step, median)", "",
                "| crop s | batch | impl | s/step | clips/s | TFLOP/s | of peak | peak memory | compile s | jax/torch |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for e in g["runs"]:
            for r in e["rows"]:
                ratio = _f(e.get("jax_speedup"), "{:.2f}x") if r["impl"] == "jax" else ""
                out.append(f"| {e['crop_s']:g} | {e['batch']} | {r['impl']} | {r['median_s']:.4f} | {r['clips_per_s']:.0f} | "
                           f"{r['tflops']:.3f} | {_f(r['peak_fraction'], '{:.1%}')} | {_mib(r.get('peak_bytes') or r.get('xla_bytes'))} | "
                           f"{_f(r.get('compile_s'), '{:.1f}')} | {ratio} |")
        for s in g.get("skipped_points", []):
            out.append(f"| {s['crop_s']:g} | {s['batch']} | skipped: {s['reason']} | | | | | | | |")
        if g.get("torch_skipped"):
            out.append(f"\ntorch: {g['torch_skipped']}")
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


def write(results: dict, out_dir: str) -> None:
    """gpu_results.json and gpu_results.md in out_dir, each replaced whole (a reader never sees half)."""
    for name, text in (("gpu_results.json", json.dumps(results, indent=1, default=str)),
                       ("gpu_results.md", markdown(results))):
        tmp = os.path.join(out_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, name))
