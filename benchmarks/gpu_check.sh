#!/usr/bin/env bash
# GPU path check (issue #8): on a CUDA machine, the `spleen` profile's training speed with AMP and its peak GPU
# memory, then one simulated FedAvg round of two sites. Writes benchmarks/results/gpu_check.json.
# Usage: benchmarks/gpu_check.sh [--steps 20] [--profile spleen]   (needs .venv: `make venv`)
# A CUDA build of torch is needed on the GPU machine (the CPU wheel pinned for CI has no CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m dose3d_fl.bench.gpu_check "$@"
