"""Short real runs of the GPU hardware profiles on ONE GPU, as a table: pass/fail, tokens/s and
peak GPU memory (bench/gpu_check.sh runs this). Each check is a normal `ft train` of a few dozen
steps in its own process, so a crash in one does not hide the others.

    bench/gpu_check.sh                    # all checks on sft_smollm2_lora (~3-4 min on an H100)
    bench/gpu_check.sh --recipe sft_tiny_llama_lora --steps 10
    bench/gpu_check.sh --print-commands   # what would run (no GPU needed)

Peak memory is sampled from nvidia-smi every 0.2 s (the whole device, CUDA context included), the
same way for in-process and launched (DeepSpeed) runs. tokens/s is the median of the runner's
logged `tokens_per_s` (non-padding tokens per second), first log interval excluded (warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# nvidia-smi counts physical GPUs; CUDA_VISIBLE_DEVICES (set by gpu_check.sh) picks the one used.
GPU_INDEX = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]


def checks(model_bytes: int) -> dict[str, list[str]]:
    """check name -> overrides. device_map gets a GPU budget of half the model's weights, so the
    other half really is offloaded to CPU RAM."""
    gpu_budget = max(model_bytes // 2, 1)
    return {
        "gpu": ["hardware=gpu"],
        "zero2": ["hardware=zero2", "hardware.num_processes=1"],
        "zero3_offload": ["hardware=zero3_offload", "hardware.num_processes=1"],
        "device_map": ["hardware=device_map", f"hardware.max_memory={{0:{gpu_budget},cpu:64GiB}}"],
        "qlora": ["hardware=gpu", "peft=qlora"],
    }


def common_overrides(steps: int) -> list[str]:
    return [
        f"train.max_steps={steps}",
        "train.log_every=5",
        "train.eval_before=false",
        "train.save_every=0",
        "data.max_eval_examples=16",
    ]


def prepare(recipe: str, names: list[str]) -> int:
    """One-time work kept out of the timed checks: convert/build the cached checkpoint, and
    JIT-build DeepSpeed's CPU Adam (ZeRO-Offload) once. Returns the weights' size in bytes."""
    size = model_bytes(recipe)
    if "zero3_offload" in names:
        from deepspeed.ops.op_builder import CPUAdamBuilder

        CPUAdamBuilder().load()
    return size


def model_bytes(recipe: str) -> int:
    """Size of the recipe's weights on disk (converting/building the cached checkpoint once,
    before any check is timed)."""
    from framework.config.path import load_run
    from framework.models.loading import resolve_checkpoint

    run = load_run(recipe, ["dry_run=true"])
    folder = Path(resolve_checkpoint(run.plugins.family, run.model))
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


class PeakMemory:
    """Peak `memory.used` of GPU 0 (MiB) while a check runs, from nvidia-smi."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            used = gpu_memory_used()
            if used is not None:
                self.peak = max(self.peak, used)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gpu_memory_used() -> int | None:
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-i",
                GPU_INDEX,
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def gpu_name() -> str:
    try:
        return subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total",
                "--format=csv,noheader",
                "-i",
                GPU_INDEX,
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except OSError:
        return "unknown"


def run_check(name: str, command: list[str], run_dir: Path, timeout: int) -> dict[str, object]:
    start = time.perf_counter()
    with PeakMemory() as memory:
        try:
            result = subprocess.run(
                command,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
            code, output = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as expired:
            code, output = 124, f"timed out after {timeout}s {expired.stderr or ''}"
    seconds = time.perf_counter() - start
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"]
    losses = [r["loss"] for r in train]
    ok = (
        code == 0
        and (run_dir / "summary.json").exists()
        and bool(losses)
        and all(loss == loss and abs(loss) != float("inf") for loss in losses)
    )
    speeds = [r["tokens_per_s"] for r in train[1:]] or [r["tokens_per_s"] for r in train]
    note = ""
    if not ok:
        lines = output.strip().splitlines() or ["?"]
        errors = [
            i
            for i, line in enumerate(lines)
            if line.startswith(("error:", "stopped:")) or "Error" in line
        ]
        at = errors[-1] if errors else len(lines) - 1
        note = lines[at]
        if note.endswith(":") and at + 1 < len(lines):  # "error: ... (2 problems):" + a list
            note += " " + lines[at + 1].strip()
        note = note[:140]
    elif name == "device_map" and (run_dir / "train.log").exists():
        log = (run_dir / "train.log").read_text()
        if "modules per device " in log:
            note = log.split("modules per device ")[1].split(";")[0]
    return {
        "check": name,
        "ok": ok,
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "peak_mib": memory.peak or None,
        "seconds": seconds,
        "loss": f"{losses[0]:.3f}->{losses[-1]:.3f}" if losses else "",
        "note": note,
    }


def print_table(results: list[dict[str, object]]) -> None:
    header = (
        f"{'check':<14} {'result':<6} {'tokens/s':>10} {'peak MiB':>9} {'time s':>7}  "
        f"{'loss':<14} note"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        peak = f"{r['peak_mib']}" if r["peak_mib"] else "-"
        print(
            f"{r['check']:<14} {'PASS' if r['ok'] else 'FAIL':<6} {tps:>10} {peak:>9} "
            f"{r['seconds']:>7.0f}  {r['loss']:<14} {r['note']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="sft_smollm2_lora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="run only these checks")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per check")
    parser.add_argument(
        "--print-commands", action="store_true", help="print the commands and exit (no GPU needed)"
    )
    args = parser.parse_args(argv)

    names = [k for k in checks(1) if not args.only or k in args.only]
    if not args.print_commands and gpu_memory_used() is None:
        print(
            "error: no NVIDIA GPU visible (nvidia-smi failed); this script needs one",
            file=sys.stderr,
        )
        return 1
    begin = time.perf_counter()
    size = 0 if args.print_commands else prepare(args.recipe, names)
    selected = {k: v for k, v in checks(size or 2**20).items() if k in names}
    out = Path("OUT") if args.print_commands else Path(tempfile.mkdtemp(prefix="ft-gpu-check-"))
    commands = {
        name: [
            sys.executable,
            "-m",
            "framework",
            "train",
            args.recipe,
            *common_overrides(args.steps),
            *overrides,
            f"run_dir={out / name}",
        ]
        for name, overrides in selected.items()
    }
    if args.print_commands:
        for name, command in commands.items():
            print(f"{name}: {' '.join(command[1:])}")
        return 0
    print(
        f"GPU: {gpu_name()}; recipe {args.recipe} ({size / 2**20:.0f} MiB of weights), "
        f"{args.steps} steps per check; one-time preparation {time.perf_counter() - begin:.0f}s\n"
    )
    results = []
    for name, command in commands.items():
        print(f"running {name} ...", flush=True)
        results.append(run_check(name, command, out / name, args.timeout))
    print()
    print_table(results)
    print(f"\ntotal {time.perf_counter() - begin:.0f}s")
    shutil.rmtree(out, ignore_errors=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
