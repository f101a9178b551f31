#!/usr/bin/env bash
# Issue 14's GPU workload (1.1B Llama-shape, LoRA r16 on all projections, micro-batch 8 of
# lengths in [128, 1024]) with HF Trainer + PEFT and then ft, on one card; prints tok/s, peak GiB,
# MFU and the ratio. Under 5 minutes on an H100/H200.
#   bench/gpu.sh [--steps 30] [--warmup 5] [--peak-tflops 989]
#   bench/gpu.sh --smoke        # both routes on a tiny model on CPU (runs in make test; no GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one card, whatever the machine has
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-.venv/bin/python}" bench/gpu_bench.py "$@"
