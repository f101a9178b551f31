"""`ft report RUN_DIR ...` (or `ft report latest RECIPE`): what finished runs achieved.

A run's result is its kept adapter's evaluation (summary.json's `final`: with train.keep_best the
best evaluation's, not the last step's). One run: baseline vs that result, the last step's
metrics beside it when they differ, steps, time, tokens/s and the best evaluation.
Several runs, or a directory holding runs (a sweep): one table sorted by the task's primary metric
(best first, in the task's direction), with the config keys that differ between the runs as
columns (from their saved config.yaml). `--plot OUT.png` overlays the runs' curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from framework.core.errors import UserError
from framework.store.run_dir import CONFIG_FILE, SUMMARY_FILE, read_metrics, read_summary
from framework.training.curves import plot_runs

# Keys that differ between any two runs without saying anything about them.
NOT_SETTINGS = (
    "run_dir",
    "output_root",
    "resume",
    "overwrite",
    "overwrite_old_run",
    "allow_nonempty_run_dir",
)


def latest_run(recipe: str, output_root: str = "outputs") -> Path:
    """The newest finished run of a recipe under output_root."""
    runs = sorted(
        (p for p in (Path(output_root) / recipe).glob("*") if read_summary(p)),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise UserError(
            f"ft report latest {recipe}: no finished run of {recipe} under "
            f"{output_root}. Train it first, or give a run directory"
        )
    return runs[-1]


def find_runs(path: Path) -> list[Path]:
    """A finished run directory itself, or every finished run below a directory (a sweep)."""
    path = Path(path)
    if read_summary(path) is not None:
        return [path]
    if not path.is_dir():
        raise UserError(f"ft report {path}: no such directory")
    runs = sorted(p.parent for p in path.rglob(SUMMARY_FILE) if (p.parent / CONFIG_FILE).is_file())
    if not runs:
        raise UserError(
            f"ft report {path}: no finished ft run there (no {SUMMARY_FILE}); give a "
            f"run directory, a directory of runs, or: latest RECIPE"
        )
    return runs


def _num(value: Any, width: int = 10) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{'-' if value is None else value!s:>{width}}"
    if isinstance(value, int):
        return f"{value:>{width}d}"
    return f"{value:>{width}.4f}"


def run_facts(run_dir: Path) -> dict[str, Any]:
    """What the report says about one run, from summary.json and metrics.jsonl."""
    summary = read_summary(run_dir) or {}
    records = read_metrics(run_dir)
    primary = summary.get("primary_metric", "eval_loss")
    greater = bool(summary.get("greater_is_better", False))
    speeds = [
        r["tokens_per_s"]
        for r in records
        if r.get("split") == "train" and isinstance(r.get("tokens_per_s"), (int, float))
    ]
    evals = [
        (r["step"], r[primary])
        for r in records
        if r.get("split") == "eval"
        and isinstance(r.get(primary), (int, float))
        and r.get("step", 0) > 0
        and math.isfinite(r[primary])
    ]
    best = summary.get("best") or {}
    if best.get("step") is None and evals:
        step, value = (max if greater else min)(evals, key=lambda e: e[1])
        best = {"step": step, "value": value}
    return {
        "summary": summary,
        "primary": primary,
        "greater": greater,
        "final": summary.get("final", {}).get(primary),
        "final_is": summary.get("final_is", "last"),  # older summaries: the last step's
        "final_step": summary.get("final_step", summary.get("steps")),
        "steps": summary.get("steps"),
        "seconds": summary.get("train_seconds"),
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "best_step": best.get("step"),
        "best_value": best.get("value"),
        "evals": len(evals),
        "stopped_early": summary.get("stopped_early"),
    }


def report(run_dir: Path) -> str:
    """One run: a before/after table of its final metrics, then steps, time, speed, best eval."""
    facts = run_facts(run_dir)
    summary = facts["summary"]
    if not summary:
        raise UserError(f"ft report {run_dir}: no summary.json there (not a finished ft run)")
    kept_best = facts["final_is"] == "best"
    last = summary.get("last", {}) if kept_best else {}
    lines = [
        f"run: {run_dir}",
        f"{'metric':<22}{'before':>10}{'after':>10}" + (f"{'last':>10}" if kept_best else ""),
    ]
    for key, after in summary["final"].items():
        before = summary.get("baseline", {}).get(key)
        lines.append(
            f"{key:<22}{_num(before)}{_num(after)}" + (_num(last.get(key)) if kept_best else "")
        )
    if kept_best:
        lines.append(
            f"after: the kept adapter (adapter/), the best evaluation at step "
            f"{facts['final_step']}; last: step {facts['steps']} (adapter_last/)"
        )
    seconds = facts["seconds"]
    lines.append(
        f"steps: {facts['steps']}"
        + (f" in {seconds:.1f} s" if seconds else "")
        + (
            f"; {facts['tokens_per_s']:.0f} tokens/s (mean of log steps)"
            if facts["tokens_per_s"]
            else ""
        )
    )
    direction = "higher" if facts["greater"] else "lower"
    if facts["best_step"] is not None:
        lines.append(
            f"best eval: {facts['primary']}={facts['best_value']:.4f} at step "
            f"{facts['best_step']} ({direction} is better; {facts['evals']} evaluations)"
        )
    if facts["stopped_early"]:
        lines.append(f"stopped early: {facts['stopped_early']}")
    return "\n".join(lines)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def differing_settings(run_dirs: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    """Per run, the config keys whose values are not the same in every run (saved config.yaml)."""
    configs = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / CONFIG_FILE
        configs[run_dir] = _flat(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [
        k
        for k in keys
        if k.split(".")[0] not in NOT_SETTINGS
        and len({repr(c.get(k)) for c in configs.values()}) > 1
    ]
    return {run_dir: {k: c.get(k) for k in differ} for run_dir, c in configs.items()}


def comparison(run_dirs: Sequence[Path]) -> str:
    """Several runs: one table, best first by the (first run's) task's primary metric."""
    facts = {run_dir: run_facts(run_dir) for run_dir in run_dirs}
    primary = facts[run_dirs[0]]["primary"]
    greater = facts[run_dirs[0]]["greater"]

    def order(run_dir: Path) -> tuple:
        final = facts[run_dir]["summary"].get("final", {})
        value, loss = final.get(primary), final.get("eval_loss", math.inf)
        if not isinstance(value, (int, float)) or math.isnan(value):
            return (1, 0.0, loss)  # runs without the metric go last
        return (0, -value if greater else value, loss)  # ties: the lower eval loss first

    ranked = sorted(run_dirs, key=order)
    settings = differing_settings(ranked)
    columns = list(next(iter(settings.values())).keys()) if settings else []
    header = ["run", *columns, primary, "best@step", "steps", "time_s", "tok/s"]
    rows = []
    for run_dir in ranked:
        f = facts[run_dir]
        value = f["summary"].get("final", {}).get(primary)
        best = f"{f['best_value']:.4f}@{f['best_step']}" if f["best_step"] is not None else "-"
        rows.append(
            [
                Path(run_dir).name,
                *(str(settings[run_dir][c]) for c in columns),
                f"{value:.4f}" if isinstance(value, (int, float)) else "-",
                best,
                str(f["steps"]),
                f"{f['seconds']:.1f}" if f["seconds"] else "-",
                f"{f['tokens_per_s']:.0f}" if f["tokens_per_s"] else "-",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        f"{len(ranked)} runs, sorted by {primary} ({'higher' if greater else 'lower'} is "
        f"better); columns: the config keys that differ",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def print_report(runs: list[str], output_root: str = "outputs", plot: Path | None = None) -> None:
    """Print the report of one run or the comparison of several (`latest RECIPE` names a
    recipe's newest run; a directory of runs, e.g. a sweep's, counts as its runs)."""
    if runs[:1] == ["latest"]:
        if len(runs) != 2:
            raise UserError("ft report latest RECIPE: give exactly one recipe name")
        run_dirs = [latest_run(runs[1], output_root)]
    else:
        run_dirs = [found for r in runs for found in find_runs(Path(r))]
    print(report(run_dirs[0]) if len(run_dirs) == 1 else comparison(run_dirs))
    if plot is not None:
        settings = differing_settings(run_dirs)
        labels = [
            " ".join([Path(r).name, *(f"{k}={v}" for k, v in settings[r].items())])
            for r in run_dirs
        ]
        written = plot_runs(list(zip(labels, map(Path, run_dirs))), Path(plot))
        if written is not None:
            print(f"curves of {len(run_dirs)} run(s) written to {written}")
