#!/usr/bin/env bash
# The GPU check (issue 30; docs/benchmarks.md, "GPU check"): one table of ganlab's CUDA path on this machine's
# GPU, its step counts sized to take under 8 minutes on one GPU (not yet timed on one): the default run and
# loss=wgan_gp remedy=unrolled against the bare loop, replicas=64 against sequential runs, DCGAN on Stacked under
# each speed switch, the FID Inception's images/s, peak GPU memory, and `pytest -m cuda`. Without CUDA every CUDA
# row says "skipped: no CUDA" and it exits 0. The parts are in scripts/gpu_check.py (a shell script would make
# them awkward); its options pass through (--loop-steps, --image-steps, ...).
#
#   scripts/gpu_check.sh                  # from the checkout, with its .venv (or $PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" scripts/gpu_check.py "$@"
