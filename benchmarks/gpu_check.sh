#!/usr/bin/env bash
# The GPU check (issues 13 and 27), one script for one NVIDIA GPU, under 9 minutes:
#   (a) the GPU tests: every strategy's CUDA path one device exercises (NCCL at world size 1),
#       ZeRO-3 releasing CUDA storage, bf16 autocast;
#   (b) GPT-2 124M, bf16, --compile, the largest micro-batch that fits: tokens/s and MFU next to
#       the torch-ddp reference; (c) calibrate on the GPU: fraction of peak vs the 45% preset and
#       the cost model's step time vs the measured one (benchmarks/gpu_check.py prints the table);
#   (d) with --out-dir DIR: two steps of (b) profiled, their timeline (PNG and table), the CUDA
#       trace and the table written to DIR.
#
#   bash benchmarks/gpu_check.sh [--out-dir DIR] [--micro-batch N]   # PY=path/to/python for another interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device visible')" || exit 2
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
echo "## (a) GPU tests"
timeout 180 "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tail -30
echo
echo "## (b), (c), (d)"
timeout 420 "$PY" benchmarks/gpu_check.py "$@"
