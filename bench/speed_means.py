"""One-off measurement of ft's speed options, each against the same run with it off.

    python bench/speed_means.py                        # SmolLM2-135M LoRA SFT, CPU
    python bench/speed_means.py --recipe seq_cls_minilm_lora --means group_by_length

Every configuration trains the same recipe for the same steps, alternating configurations over
--rounds rounds; the table gives the median of real (non-padding) training tokens/s (from
metrics.jsonl, first log interval dropped as warm-up), wall seconds and the final eval loss.
Numbers depend on the machine and its load: docs/speed.md records the ones measured there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALL_OFF = [
    "train.packing=false",
    "train.logits_only=false",
    "train.group_by_length=false",
    "train.fused_optimizer=false",
]
MEANS: dict[str, list[str]] = {
    "all off (before)": ALL_OFF,
    "packing": ALL_OFF + ["train.packing=true"],
    "logits_only": ALL_OFF + ["train.logits_only=true"],
    "packing + logits_only": ALL_OFF + ["train.packing=true", "train.logits_only=true"],
    "fused_optimizer (no per-step sync)": ALL_OFF + ["train.fused_optimizer=true"],
    "group_by_length": ALL_OFF + ["train.group_by_length=true"],
    "defaults (after)": [],
}


def run_once(recipe: str, overrides: list[str], steps: int, log_every: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "framework",
                "train",
                recipe,
                *overrides,
                f"train.max_steps={steps}",
                f"train.log_every={log_every}",
                "train.eval_before=false",
                f"output_root={out}",
            ],
            cwd=REPO,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
        )
        wall = time.perf_counter() - start
        rows = [
            json.loads(line)
            for path in Path(out).rglob("metrics.jsonl")
            for line in path.read_text().splitlines()
        ]
    rates = [r["tokens_per_s"] for r in rows if r.get("split") == "train"][1:]
    final = [r for r in rows if r.get("split") == "eval"][-1]
    return {"tok_s": statistics.median(rates), "wall": wall, "eval_loss": final["eval_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="sft_smollm2_lora")
    parser.add_argument("--means", nargs="*", default=list(MEANS), help="rows of the table")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    names = [n for n in MEANS if n in args.means or n.split(" ")[0] in args.means]
    if "all off (before)" not in names:
        names.insert(0, "all off (before)")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(run_once(args.recipe, MEANS[name], args.steps, args.log_every))
    base = statistics.median(r["tok_s"] for r in results[names[0]])
    print(f"{args.recipe}, {args.steps} steps, median of {args.rounds} round(s)\n")
    print("| configuration | real tok/s | vs all off | wall s | final eval_loss |")
    print("|---|---|---|---|---|")
    for name in names:
        tok = statistics.median(r["tok_s"] for r in results[name])
        wall = statistics.median(r["wall"] for r in results[name])
        loss = statistics.median(r["eval_loss"] for r in results[name])
        print(f"| {name} | {tok:,.0f} | {tok / base:.2f}x | {wall:.0f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
