#!/usr/bin/env bash
# Issue 13's GPU measurements in one command (experiments/gpu/run.py; experiments/BENCHMARKS.md, "GPU script").
#
#   bash experiments/gpu/run.sh [--budget-s 480] [--stages a,b] [--quick] [--plan]   # results in $OUT (default gpu-out)
#
# Installs the wheels experiments/gpu/wheels.sh left in .whl/ (if any) into /tmp/site, puts this checkout first
# on PYTHONPATH (no install needed), records nvidia-smi, and runs the driver, which writes
# $OUT/gpu_results.json and $OUT/gpu_results.md before its first stage and after every stage; the whole log
# goes to $OUT/run.log. The driver's budget counts from this script's start (CRNN_GPU_T0).
set -uo pipefail
export CRNN_GPU_T0=${CRNN_GPU_T0:-$(date +%s.%N)}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
if ! compgen -G ".whl/*.whl" >/dev/null; then
    :
elif ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "run.sh: not installing .whl/: its wheels are for the GPU machine's Python 3.12"
else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} \
        || echo "run.sh: warning: installing the carried wheels in .whl/ failed (the measurements need none of them)" >&2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if command -v nvidia-smi >/dev/null; then  # (a wedged driver can hang it: bounded)
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem \
        --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || echo "run.sh: warning: nvidia-smi failed: $(tail -1 "$OUT/nvidia-smi.csv")"
fi
"$PY" experiments/gpu/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/run.log"
