#!/usr/bin/env bash
# One GPU check (under 5 minutes on one GPU): prints ONE JSON object on stdout (see bench/gpu_check.py).
# Trainer vs bare loop samples/s on the GPU with AMP on, GPU utilisation sampled with nvidia-smi,
# a torchrun run over all visible GPUs through the service's runner, peak GPU memory.
# Without a GPU: {"bench": "gpu_check", "error": "no GPU visible"} and exit 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m bench.gpu_check "$@"
