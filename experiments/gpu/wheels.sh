#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (it has no network), for experiments/gpu/run.sh to install from .whl/.
#
#   bash experiments/gpu/wheels.sh [--librosa]      # here, where pip reaches PyPI; .whl/ is git-ignored
#
# The machine (Python 3.12, x86-64) already has jax 0.11 + CUDA 13, flax, optax, orbax, torch 2.11, scipy,
# matplotlib, tqdm, pytest, hypothesis, scikit-learn, numba, joblib, msgpack (see the device tool's KINDS.md).
# The GPU script itself needs none of the wheels below: soundfile (with cffi, pycparser) is carried so that
# crnn_jax.data.loaders imports there; --librosa adds librosa and the dependencies the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
names=(soundfile==0.13.1 cffi==2.0.0 pycparser==2.23)
if [[ "${1:-}" == "--librosa" ]]; then
    names+=(librosa==0.11.0 audioread==3.0.1 decorator==5.2.1 pooch==1.8.2 platformdirs==4.5.0 soxr==1.0.0)
fi
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${names[@]}"
ls -l .whl
du -sh .whl
