"""`ft estimate` against measured memory: each configuration trains a few steps in a fresh
subprocess on CPU, which records its RSS once the model and data are loaded (the baseline) and
its peak RSS during the training steps (the kernel's high-water mark, reset just before the
first step); with --gpu, hardware=gpu and torch.cuda.max_memory_allocated over memory_allocated. The estimate's training-time part (everything but the weights, which the baseline
already holds) is compared with peak - baseline. Prints a Markdown table, writes JSON.

    .venv/bin/python bench/estimate_accuracy.py                 # all configurations
    .venv/bin/python bench/estimate_accuracy.py --only minilm   # those whose name contains it
    .venv/bin/python bench/estimate_accuracy.py --json out.json
    .venv/bin/python bench/estimate_accuracy.py --timing        # what ft train pays for it

The child sets MALLOC_MMAP_THRESHOLD_ (glibc) to 128 KiB so that every tensor buffer is its own
mmap and freed memory goes back to the kernel at once: RSS then follows live tensors instead of
what malloc keeps cached from loading. One thread, so that the numbers do not depend on the
per-thread scratch buffers of the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (recipe, overrides). Data that fills data.max_length, so every micro-batch is padded to
# the length the estimate assumes (the estimate is for the longest batch a run can see).
CONFIGS: dict[str, list[Any]] = {
    "minilm_seq_cls_b32_s48": [
        "seq_cls_minilm_lora",
        ["train.batch_size=32", "data.max_length=48"],
    ],
    "smollm2_sft_b4_s64": [
        "sft_smollm2_chat_lora",
        ["train.batch_size=4", "data.max_length=64", "task.generate_eval=false"],
    ],
    "smollm2_sft_b4_s128": [
        "sft_smollm2_chat_lora",
        [
            "train.batch_size=4",
            "data.max_length=128",
            "data.source.exchanges=4",
            "task.generate_eval=false",
        ],
    ],
    "smollm2_sft_b4_s128_gc": [
        "sft_smollm2_chat_lora",
        [
            "train.batch_size=4",
            "data.max_length=128",
            "data.source.exchanges=4",
            "train.gradient_checkpointing=true",
            "task.generate_eval=false",
        ],
    ],
    # Eager attention: the heads x seq x seq softmax is kept for backward (SDPA keeps none).
    "smollm2_sft_b4_s128_eager": [
        "sft_smollm2_chat_lora",
        [
            "train.batch_size=4",
            "data.max_length=128",
            "data.source.exchanges=4",
            "model.attn_implementation=eager",
            "task.generate_eval=false",
        ],
    ],
    # LoRA without dropout: q/k/v and gate/up share their saved input instead of one copy each.
    "smollm2_sft_b8_s64_lora_dropout0": [
        "sft_smollm2_chat_lora",
        ["train.batch_size=8", "data.max_length=64", "peft.dropout=0", "task.generate_eval=false"],
    ],
}
COMMON = [
    "train.eval_before=false",
    "train.log_every=0",
    "train.eval_every=0",
    "train.save_every=0",
]
CHILD_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def rss_bytes() -> int:
    """Resident set size of this process now (bytes)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The kernel's high-water mark of RSS (VmHWM) since the last reset (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(recipe: str, overrides: list[str], steps: int, output: Path) -> None:
    """Train `steps` steps of one configuration and write the measurement as JSON."""
    import gc

    import torch

    from framework.config.path import load_run
    from framework.run.execute import prepare_run_dir
    from framework.training.signals import StopSignals
    from framework.training.trainer import Position, run_steps, set_up

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        words = overrides + COMMON + [f"train.max_steps={steps}", f"run_dir={tmp}/run"]
        run = load_run(recipe, words)
        prepared = prepare_run_dir(run)
        setup = set_up(run, prepared.run_dir)
        widths: list[int] = []
        model = setup.accelerator.unwrap_model(setup.model)
        model.register_forward_pre_hook(
            lambda _m, _a, kwargs: widths.append(int(kwargs["input_ids"].shape[-1])),
            with_kwargs=True,
        )
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        with torch.no_grad():  # page in weights memory-mapped from safetensors: part of loading
            for param in model.parameters():
                param.sum()
        gc.collect()
        cuda = setup.accelerator.device.type == "cuda"
        if cuda:  # on a GPU: torch's own count of the tensors it allocated there
            torch.cuda.synchronize()
            baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            baseline = rss_bytes()
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        with StopSignals() as signals:
            run_steps(setup, Position(), signals, None)
        peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
    output.write_text(
        json.dumps(
            {
                "baseline": baseline,
                "peak": peak,
                "measured": peak - baseline,
                "weights_in_memory": weights,
                "batch_widths": widths,
                "measure": "cuda max_memory_allocated" if cuda else "RSS",
            }
        )
    )


def measure(recipe: str, overrides: list[str], steps: int) -> dict[str, Any]:
    """Run child() in a fresh interpreter (clean allocator state) and return its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "measured.json"
        env = dict(os.environ, PYTHONPATH=str(REPO), **CHILD_ENV)
        code = (
            f"import sys; sys.path.insert(0, {str(REPO)!r}); import json, pathlib; "
            f"from bench.estimate_accuracy import child; "
            f"child({recipe!r}, {overrides!r}, {steps}, pathlib.Path({str(out)!r}))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"{recipe} {overrides}: child failed:\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())


def estimate(recipe: str, overrides: list[str]) -> Any:
    """ft estimate's numbers for the same configuration (meta device)."""
    from framework.config.path import load_run
    from framework.training.memory import estimate_run

    run = load_run(recipe, overrides + COMMON)
    return estimate_run(run)


def compare(name: str, recipe: str, overrides: list[str], steps: int) -> dict[str, Any]:
    """One row: the estimate's training-time bytes vs measured peak RSS over the baseline."""
    found = estimate(recipe, overrides)
    measured = measure(recipe, overrides, steps)
    predicted = found.training_bytes
    return {
        "name": name,
        "recipe": recipe,
        "overrides": overrides,
        "steps": steps,
        "estimate_total": found.total,
        "estimate_training": predicted,
        "estimate_weights": found.components["weights"],
        **measured,
        "error_pct": 100.0 * (predicted - measured["measured"]) / measured["measured"],
        "components": found.components,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: estimate vs measured per configuration."""
    mib = 2**20
    measure = rows[0]["measure"] if rows else "RSS"
    lines = [
        "| configuration | batch x seq (widths seen) | estimate, total | estimate, training part "
        f"(total - weights - runtime) | measured peak {measure} - baseline | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        widths = sorted(set(r["batch_widths"]))
        lines.append(
            f"| {r['name']} | {r['overrides'][0].split('=')[1]} x "
            f"{r['overrides'][1].split('=')[1]} ({', '.join(map(str, widths))}) | "
            f"{r['estimate_total'] / mib:.0f} MiB | {r['estimate_training'] / mib:.0f} MiB | "
            f"{r['measured'] / mib:.0f} MiB | {r['error_pct']:+.1f}% |"
        )
    return "\n".join(lines)


def timing(recipes: list[str]) -> None:
    """What `ft train` pays for its estimate: warn_if_too_big per recipe, once torch and
    transformers are imported (the trainer imports them right after) and the checkpoint is
    resolved (the second call: the trainer resolves it anyway)."""
    import time

    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from framework.config.path import load_run
    from framework.training.memory import warn_if_too_big

    for recipe in recipes:
        run = load_run(recipe, [])
        warn_if_too_big(run)
        start = time.perf_counter()
        warn_if_too_big(run)
        print(f"{recipe}: the estimate before training takes {time.perf_counter() - start:.2f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the same configurations with hardware=gpu (bf16), measured with "
        "torch.cuda.max_memory_allocated",
    )
    parser.add_argument(
        "--timing",
        action="store_true",
        help="only time the estimate ft train makes first (3 recipes)",
    )
    parser.add_argument("--only", help="run the configurations whose name contains this")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration")
    parser.add_argument("--json", type=Path, default=Path("estimate_accuracy.json"))
    args = parser.parse_args(argv)
    if args.timing:
        timing(["seq_cls_tiny_bert_lora", "seq_cls_minilm_lora", "sft_smollm2_chat_lora"])
        return 0
    gpu = ["hardware=gpu"] if args.gpu else []
    rows = [
        compare(name + ("_gpu" if gpu else ""), recipe, overrides + gpu, args.steps)
        for name, (recipe, overrides) in CONFIGS.items()
        if not args.only or args.only in name
    ]
    print(table(rows))
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
