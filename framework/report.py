"""`ft report RUN_DIR ...` (or `ft report latest RECIPE`): a finished run's metrics before and
after training, read from its summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import List

from framework.errors import UserError
from framework.run_dir import read_summary


def latest_run(recipe: str, output_root: str = "outputs") -> Path:
    """The newest finished run of a recipe under output_root."""
    runs = sorted((p for p in (Path(output_root) / recipe).glob("*") if read_summary(p)),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"ft report latest {recipe}: no finished run of {recipe} under "
                        f"{output_root}. Train it first, or give a run directory")
    return runs[-1]


def report(run_dir: Path) -> str:
    """A before/after table of one run's final metrics."""
    summary = read_summary(run_dir)
    if summary is None:
        raise UserError(f"ft report {run_dir}: no summary.json there (not a finished ft run)")
    lines = [f"run: {run_dir}", f"{'metric':<22}{'before':>10}{'after':>10}"]
    for key, after in summary["final"].items():
        before = summary.get("baseline", {}).get(key)
        shown = f"{before:>10.4f}" if isinstance(before, (int, float)) else f"{'-':>10}"
        lines.append(f"{key:<22}{shown}{after:>10.4f}")
    return "\n".join(lines)


def print_report(runs: List[str], output_root: str = "outputs") -> None:
    """Print the report of each run (`latest RECIPE` names a recipe's newest run)."""
    if runs[:1] == ["latest"]:
        if len(runs) != 2:
            raise UserError("ft report latest RECIPE: give exactly one recipe name")
        run_dirs = [latest_run(runs[1], output_root)]
    else:
        run_dirs = [Path(r) for r in runs]
    print("\n\n".join(report(run_dir) for run_dir in run_dirs))
