"""One-off measurement behind ft's default for `train.group_by_length`: every padded task of the
e2e floors, trained exactly as its floor test trains it, with length grouping off and on.

    python bench/group_by_length.py                 # all five runs x 2 (~15 min on 2 idle cores)
    python bench/group_by_length.py --only qa_minilm_lora

For each run: the primary metric after training (and its floor in the test), the loop's real
(non-padding) tokens/s from metrics.jsonl (first log interval dropped as warm-up), and the loop's
seconds. Written: --out/group_by_length.json. docs/speed.md records what was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' own configurations are imported below

from tests.e2e.test_task_recipes import RECIPES, toy_ner_overrides  # noqa: E402
from tests.e2e.test_train_and_reload import MINILM_OVERRIDES  # noqa: E402
from tests.helpers import metrics, train_recipe  # noqa: E402

MINILM_FLOOR = 0.68  # test_real_minilm_seq_cls_beats_baseline: accuracy >= 0.68


def cases(work: Path) -> dict[str, tuple[str, str, float, list[str]]]:
    """The runs of the e2e floor tests that pad (causal LM packs: grouping does not apply):
    run name -> (recipe, primary metric, the floor its test asserts, overrides)."""
    found = {
        "seq_cls_minilm_lora": (
            "seq_cls_minilm_lora",
            "accuracy",
            MINILM_FLOOR,
            list(MINILM_OVERRIDES),
        )
    }
    for recipe, (metric, _gain, floor, overrides) in RECIPES.items():
        extra = toy_ner_overrides(work) if recipe.startswith("token_cls") else []
        found[recipe] = (recipe, metric, floor, [*overrides, *extra])
    return found


def measure(recipe: str, metric: str, overrides: list[str], grouped: bool, root: Path) -> dict:
    """Train once; the final metric and the loop's real tokens/s after the first interval."""
    run_dir = train_recipe(
        recipe, *overrides, f"train.group_by_length={str(grouped).lower()}", output_root=root
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    records = metrics(run_dir, "train")[1:] or metrics(run_dir, "train")
    tokens = sum(r["tokens"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    return {
        "group_by_length": grouped,
        "metric": metric,
        "value": summary["final"][metric],
        "baseline": summary["baseline"][metric],
        "real_tokens_per_s": tokens / max(seconds, 1e-9),
        "loop_seconds": seconds,
    }


def main() -> None:
    """Run the cases, print a markdown table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run names (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (recipe, metric, floor, overrides) in cases(work).items():
            if args.only and name not in args.only:
                continue
            results[name] = [
                {
                    "floor": floor,
                    **measure(recipe, metric, overrides, grouped, work / f"{name}-{grouped}"),
                }
                for grouped in (False, True)
            ]
    print("| run | metric | floor | off | on | tok/s off | tok/s on | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (off, on) in results.items():
        print(
            f"| {name} | {off['metric']} | {off['floor']} | {off['value']:.3f} | {on['value']:.3f} | "
            f"{off['real_tokens_per_s']:.0f} | {on['real_tokens_per_s']:.0f} | "
            f"{on['real_tokens_per_s'] / off['real_tokens_per_s']:.2f}x |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "group_by_length.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
