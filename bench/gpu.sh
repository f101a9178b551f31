#!/usr/bin/env bash
# Issue 21's GPU workload (1.1B Llama shape, LoRA r16 on all projections, micro-batch 8 of lengths
# in [128, 1024]) for HF Trainer + PEFT, TRL padding-free (and with Liger), ft and ft compiled,
# then the GPU checks (QLoRA, bf16, device_map, ZeRO-3 offload, FSDP2), one table; at most
# 9 minutes on an H100/H200. Runs on a bare GPU machine with the image's own python3: the
# packages it lacks travel as wheels in bench/wheels (bench/gpu_wheels.sh fills it, here, where
# pip reaches the registry) and are installed below into a folder outside the checkout.
#   bench/gpu.sh [--steps 30] [--warmup 5] [--only ft trl] [--peak-tflops 989]
#   bench/gpu.sh --smoke        # the same script on a tiny model on CPU (make test; no GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one card, whatever the machine has
PY="${PYTHON:-python3}"
SITE="${FT_GPU_SITE:-/tmp/ft-gpu-site}"
if compgen -G "bench/wheels/*.whl" >/dev/null && [[ " $* " != *" --smoke "* ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" bench/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
exec "$PY" bench/gpu_bench.py "$@"
