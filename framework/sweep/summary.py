"""The sweep's summary: every trial's record collected, the table printed at the end (and by
`ft sweep report DIR`), sweep_summary.json, and the sweep's exit code."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.store.run_dir import TRIAL_FILE
from framework.sweep.trials import _short, read_trial

SUMMARY_FILE = "sweep_summary.json"  # in the sweep directory, beside the trial directories


# ---- the whole sweep -----------------------------------------------------------------------------
def _trial_order(path: Path) -> tuple[float, str]:
    return (int(path.name) if path.name.isdigit() else math.inf, path.name)


def collect(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's summary from its trials' records: every trial, counts and the best trial."""
    sweep_dir = Path(sweep_dir)
    trials = []
    for trial_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=_trial_order):
        record = read_trial(trial_dir)
        if record is None:
            continue
        if record["status"] == "running":
            record["status"] = "unfinished"  # killed, or still running in another process
        trials.append(record)
    metric = next((t["primary_metric"] for t in trials if t.get("primary_metric")), None)
    greater = next(
        (t["greater_is_better"] for t in trials if t.get("greater_is_better") is not None), None
    )
    completed = [t for t in trials if t["status"] == "completed"]  # duplicates: listed, not ranked
    best = None
    if completed:
        best = (max if greater in (True, None) else min)(completed, key=lambda t: t["value"])
        best = {
            **best,
            "command": " ".join(
                ["ft", "train", shlex.quote(best["recipe"]), *map(shlex.quote, best["overrides"])]
            ),
        }
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    return {
        "sweep_dir": str(sweep_dir),
        "primary_metric": metric,
        "greater_is_better": greater,
        "counts": counts,
        "trials": trials,
        "best": best,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The table of trials (the overrides they share on one line, then what differs per trial)
    and the best trial's command, as printed at the end of a sweep."""
    metric = summary["primary_metric"] or "metric"
    better = {True: "higher is better", False: "lower is better"}.get(
        summary["greater_is_better"], ""
    )
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
    trials = summary["trials"]
    lines = [
        f"sweep {summary['sweep_dir']}: {len(trials)} trials ({counts or 'none'}); "
        f"objective {metric}{' (' + better + ')' if better else ''}"
    ]
    shared = (
        [
            o
            for o in (trials[0].get("overrides", []) if trials else [])
            if all(o in t.get("overrides", []) for t in trials)
        ]
        if len(trials) > 1
        else []
    )
    if shared:
        lines.append(f"  every trial: {' '.join(shared)}")
    width = max([len(metric), 6])
    lines.append(f"  {'trial':<6} {'status':<10} {metric:>{width}} {'time':>7}  overrides")
    for t in trials:
        value = f"{t['value']:.4f}" if isinstance(t.get("value"), (int, float)) else "-"
        own = " ".join(o for o in t.get("overrides", []) if o not in shared)
        note = (
            f"  <- exit {t.get('exit_code')}: {_short(t.get('reason'))}"
            if t["status"] == "failed"
            else f"  <- same config as {Path(t['same_as']).name}"
            if t.get("same_as")
            else ""
        )
        lines.append(
            f"  {t['trial']:<6} {t['status']:<10} {value:>{width}} "
            f"{t.get('seconds', 0):>6.1f}s  {own}{note}"
        )
    best = summary["best"]
    if best:
        lines.append(
            f"best: trial {best['trial']} ({metric}={best['value']:.4f}), "
            f"in {best['run_dir']}; to run it again:"
        )
        lines.append(f"  {best['command']}")
    else:
        lines.append("best: none (no trial completed)")
    return "\n".join(lines)


def finish_sweep(sweep_dir: Path) -> dict[str, Any]:
    """Write sweep_summary.json and print the table at the end of a sweep; return the summary."""
    summary = collect(sweep_dir)
    (Path(sweep_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    print(format_summary(summary), flush=True)
    return summary


def report(sweep_dir: Path) -> int:
    """`ft sweep report SWEEP_DIR`: print the summary again (from the trials' records, so it also
    shows a sweep that is still running or was killed)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or not any(sweep_dir.glob(f"*/{TRIAL_FILE}")):
        raise UserError(
            f"ft sweep report {sweep_dir}: not a sweep directory (no trial "
            f"directories with {TRIAL_FILE}); give the directory `ft train -m` printed"
        )
    print(format_summary(collect(sweep_dir)))
    return 0


def sweep_exit_code(summary: dict[str, Any]) -> int:
    """0 when at least one trial completed, else the first failure's exit code (or 1)."""
    if summary["counts"].get("completed"):
        return 0
    codes = [t.get("exit_code") for t in summary["trials"] if t.get("exit_code")]
    return int(codes[0]) if codes else 1
