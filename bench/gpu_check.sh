#!/usr/bin/env bash
# Short real runs on ONE GPU of the gpu, zero2, zero3_offload, device_map (max_memory below the
# model size) and qlora setups; prints pass/fail, tokens/s and peak GPU memory. ~3-4 minutes.
#   bench/gpu_check.sh [--recipe sft_smollm2_lora] [--steps 20] [--only gpu zero2] [--print-commands]
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one GPU, whatever the machine has
exec "${PYTHON:-.venv/bin/python}" bench/gpu_check.py "$@"
