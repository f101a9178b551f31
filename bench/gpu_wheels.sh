#!/usr/bin/env bash
# Download, into bench/wheels/ (git-ignored), exactly the wheels that bench/gpu.sh needs on a bare
# GPU machine with no network: the packages ft, the peers and the GPU checks import that the GPU
# image lacks (or has at another version than ft is tested with here), for its Python 3.12 on
# x86-64 Linux. Versions are this checkout's .venv's, so the GPU runs what the CPU tests ran.
# The image already holds torch, triton, numpy, pandas, pyarrow, safetensors, tokenizers,
# huggingface-hub, pyyaml, tqdm, requests, aiohttp, fsspec, xxhash, psutil, ninja, msgpack,
# py-cpuinfo, nvidia-ml-py and jinja2 (/work/.library/device/KINDS.md lists them).
#   bench/gpu_wheels.sh                 # then: bench/gpu.sh on the GPU machine (it installs them)
#   bench/gpu_wheels.sh --no-qlora      # leave bitsandbytes out (its wheel is the largest)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY="${VENV_PY:-.venv/bin/python}"
DEST=bench/wheels
mkdir -p "$DEST"
version() { "$VENV_PY" -c "from importlib.metadata import version; print(version('$1'))"; }

# ft's own dependencies missing there, and the libraries whose version must match this checkout's.
PINNED=(transformers peft accelerate datasets trl hydra-core omegaconf antlr4-python3-runtime
        dill multiprocess deepspeed hjson pydantic pydantic-core annotated-types typing-inspection)
# Not installed here (CPU): the GPU-only extras, at the versions ft's pyproject allows.
GPU_ONLY=("liger-kernel==${LIGER_VERSION:-0.8.5}")
if [[ "${1:-}" != "--no-qlora" ]]; then
  GPU_ONLY+=("bitsandbytes==${BNB_VERSION:-0.50.2}")
fi

specs=()
for name in "${PINNED[@]}"; do specs+=("$name==$(version "$name")"); done
specs+=("${GPU_ONLY[@]}")

platforms=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
           manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
for spec in "${specs[@]}"; do
  name="${spec%%==*}"
  if [[ "$name" == "deepspeed" || "$name" == "antlr4-python3-runtime" ]]; then
    # Source distributions only on PyPI, pure Python: their wheels are built here (DeepSpeed's
    # ops are JIT-built on first use, with the image's ninja and nvcc).
    ls "$DEST"/"${name//-/_}"-"${spec#*==}"-*.whl >/dev/null 2>&1 || \
      DS_BUILD_OPS=0 "$VENV_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$spec"
    continue
  fi
  "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$DEST" "$spec"
done
# bitsandbytes ships one library per CUDA release (129 MiB unpacked); the GPU image's torch is
# built for CUDA ${BNB_CUDA:-13}.x, so the wheel keeps only those (and the CPU one): 43 -> ~6 MiB,
# inside the 64 MiB a device call may carry. RECORD loses the removed files' lines.
"$VENV_PY" - "$DEST" "${BNB_CUDA:-13}" <<'EOF'
import pathlib, re, sys, zipfile
for wheel in pathlib.Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    keep = re.compile(rf"libbitsandbytes_(cpu|cuda{sys.argv[2]}\d)\.so$")
    def drop(name):
        return "libbitsandbytes_" in name and not keep.search(name)
    with zipfile.ZipFile(wheel) as source:
        if not any(drop(n) for n in source.namelist()):
            continue
        slim = wheel.with_suffix(".slim")
        with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if drop(item.filename):
                    continue
                data = source.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(l for l in lines if not drop(l.split(",")[0])).encode()
                target.writestr(item, data)
    slim.replace(wheel)
EOF
# One version of each package (two would stop the install there).
"$VENV_PY" - "$DEST" <<'EOF'
import collections, pathlib, sys
wheels = collections.defaultdict(list)
for path in pathlib.Path(sys.argv[1]).glob("*.whl"):
    wheels[path.name.split("-")[0].lower()].append(path.name)
twice = {k: v for k, v in wheels.items() if len(v) > 1}
if twice:
    sys.exit(f"two versions of {sorted(twice)} in {sys.argv[1]}: {twice}")
total = sum(p.stat().st_size for p in pathlib.Path(sys.argv[1]).glob("*.whl"))
print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {sys.argv[1]}")
EOF
