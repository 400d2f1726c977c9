#!/usr/bin/env bash
# Create the Flower peer's own virtual environment, .venv-flower at the repository root (ignored by git).
# Flower 1.42 pins protobuf < 7 and cryptography 50, NVFlare 2.9's .venv has protobuf 7 and cryptography 51,
# so the two do not share one environment. Usage: benchmarks/peers/flower/setup_venv.sh [PYTHON]
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
python="${1:-${PYTHON:-python3}}"
venv="$root/.venv-flower"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch first (the machine's CPU wheel of 2.13.0, as the Makefile does), then the rest.
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -r "$root/benchmarks/peers/flower/requirements.txt"
"$venv/bin/python" -c 'import flwr, monai, torch; print("flower venv:", flwr.__version__, monai.__version__, torch.__version__)'
