"""Print a run's before/after metrics: `python -m framework.report latest RECIPE [OUTPUT_ROOT]`
or `python -m framework.report RUN_DIR`. Used by `make demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def latest_run(recipe: str, output_root: str = "outputs") -> Path:
    runs = sorted((p for p in (Path(output_root) / recipe).glob("*") if (p / "summary.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"error: no finished run of {recipe} under {output_root}")
    return runs[-1]


def report(run_dir: Path) -> str:
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = [f"run: {run_dir}", f"{'metric':<22}{'before':>10}{'after':>10}"]
    for key, after in summary["final"].items():
        before = summary.get("baseline", {}).get(key)
        shown = f"{before:>10.4f}" if isinstance(before, (int, float)) else f"{'-':>10}"
        lines.append(f"{key:<22}{shown}{after:>10.4f}")
    return "\n".join(lines)


def main(argv: list) -> int:
    if argv[:1] == ["latest"] and len(argv) >= 2:
        run_dir = latest_run(argv[1], argv[2] if len(argv) > 2 else "outputs")
    elif len(argv) == 1:
        run_dir = Path(argv[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(report(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
