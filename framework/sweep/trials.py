"""Sweeps (`ft train RECIPE -m ...`): each trial is a normal ft run in its own directory under the
sweep directory, wrapped so that the sweep survives failures and restarts.

- A failed trial (user error, non-finite loss stop, out of memory, a crashed rank) is recorded in
  its `trial.json` with the reason and exit code, and the sweep goes on (`sweep.fail_fast=true`
  stops it instead). `ft train -m` exits non-zero only when no trial completed.
- Re-running the same sweep command into the same sweep directory skips every trial whose
  resolved config (hashed) already completed there; an unfinished trial resumes from its last
  complete checkpoint, or restarts in an emptied directory (never appending to old metrics).
- Optuna: the direction comes from the task's primary metric, the study persists in
  `optuna.db` (SQLite) in the sweep directory, and a failed trial is told to the study as failed.
- Every finished trial prints one line; the end of the sweep prints a table and the best trial as
  a ready-to-run `ft train` command, also written to `sweep_summary.json` (`ft sweep report DIR`
  prints it again).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from framework.config.compose import Composed
from framework.config.recipe import override_key
from framework.core.errors import LaunchFailed, TrainingInterrupted, UserError, exit_code_for
from framework.store.redaction import redact_text
from framework.store.run_dir import METRICS_FILE, TRIAL_FILE, read_summary
from framework.sweep.options import SweepOptions, config_hash, drop_undefined, task_objective

HYDRA_DIR = ".hydra"  # Hydra writes each job's config here before the job runs


class TrialFailed(Exception):
    """A trial failed; raised to an Optuna sweeper so that the study records it as failed."""


# ---- one trial ---------------------------------------------------------------------------------
def read_trial(trial_dir: Path) -> dict[str, Any] | None:
    path = Path(trial_dir) / TRIAL_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_trial(trial_dir: Path, record: dict[str, Any]) -> None:
    """Write trial.json atomically (a killed sweep never leaves half a record)."""
    path = Path(trial_dir) / TRIAL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def completed_trial(sweep_dir: Path, digest: str) -> Path | None:
    """The directory of a completed trial with this config hash in the sweep directory."""
    for record_file in sorted(Path(sweep_dir).glob(f"*/{TRIAL_FILE}")):
        record = read_trial(record_file.parent)
        if record and record.get("hash") == digest and record.get("status") == "completed":
            return record_file.parent
    return None


def clear_trial_dir(trial_dir: Path) -> None:
    """Empty an unfinished trial's directory for a clean restart (Hydra's own .hydra stays)."""
    for entry in Path(trial_dir).iterdir():
        if entry.name == HYDRA_DIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def trim_metrics(trial_dir: Path, checkpoint: Path) -> None:
    """Keep only the metrics records up to the checkpoint a trial resumes from: the steps after
    it are trained again and must not appear twice."""
    path = Path(trial_dir) / METRICS_FILE
    if not path.is_file():
        return
    step = int(checkpoint.name.rsplit("-", 1)[-1])
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def shown_overrides(overrides: list[str]) -> list[str]:
    """A trial's overrides as a user would type them to `ft train` (no Hydra keys, no search
    space preset: its values are among the trial's own; `++key`, which ft adds for schema keys a
    preset omits, is plain `key` there)."""
    out = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(("hydra.", "hydra/")) or key in (
            "run_dir",
            "overwrite",
            "overwrite_old_run",
            "allow_nonempty_run_dir",
            "hparams_search",
        ):
            continue
        # Secrets never reach trial.json, the summary or the console (model.token=hf_...).
        out.append(redact_text(override[2:] if override.startswith("++") else override))
    return out


def trial_line(record: dict[str, Any]) -> str:
    """The one console line of a finished trial."""
    metric = record.get("primary_metric") or "metric"
    value = record.get("value")
    shown = f"{metric}={value:.4f}" if isinstance(value, (int, float)) else f"{metric}=-"
    status = record["status"]
    if status == "failed":
        status = f"failed (exit {record.get('exit_code')}: {_short(record.get('reason'))})"
    return (
        f"[sweep] trial {record['trial']}: {status}; {shown}; "
        f"{record.get('seconds', 0):.1f}s; {' '.join(record.get('overrides', [])) or '(no overrides)'}"
    )


def run_trial(
    composed: Composed,
    recipe: str,
    trial_dir: Path,
    sweep_dir: Path,
    options: SweepOptions,
    optuna: bool,
) -> float:
    """Run one trial of a sweep (Hydra's composed job config; `recipe` as the user gave it) in
    trial_dir and return its objective (the task's primary metric). A failure is recorded and
    returned as NaN (or raised as TrialFailed to Optuna, or as SystemExit under
    sweep.fail_fast); a signal (Ctrl-C, SIGTERM) stops the whole sweep."""
    overrides = list(composed.overrides)

    node = {k: v for k, v in composed.config.items() if k != "sweep"}
    dropped = drop_undefined(node, options.conditional)
    digest = config_hash(node)
    record: dict[str, Any] = {
        "trial": trial_dir.name,
        "recipe": recipe,
        "dropped": dropped,
        "hash": digest,
        "overrides": [o for o in shown_overrides(overrides) if override_key(o) not in dropped],
        "status": "running",
        "run_dir": str(trial_dir),
        "reason": None,
        "exit_code": None,
        "value": None,
        "primary_metric": None,
        "greater_is_better": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": 0.0,
    }
    value = finished_value(trial_dir, sweep_dir, digest)
    if value is not None:
        return value
    node["run_dir"] = str(trial_dir)
    # Hydra made this trial's directory for it and wrote its .hydra/ there first.
    node["allow_nonempty_run_dir"] = True
    record.update(prepare_trial_dir(trial_dir, digest, node))
    start = time.perf_counter()
    signalled = execute_trial(replace(composed, config=node), trial_dir, record)
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_trial(trial_dir, record)
    print(trial_line(record), flush=True)
    if record["status"] == "completed":
        return record["value"]
    if signalled or options.fail_fast:
        raise SystemExit(record["exit_code"] or 1)
    if optuna:
        raise TrialFailed(record["reason"])
    return float("nan")


def finished_value(trial_dir: Path, sweep_dir: Path, digest: str) -> float | None:
    """The objective of a trial that already completed (a restart of the sweep: never retrain
    it), or None. The same config in another trial directory counts too (it is then recorded
    here as a duplicate)."""
    done = completed_trial(sweep_dir, digest)
    if done is not None:
        previous = read_trial(done) or {}
        if done != trial_dir:
            write_trial(
                trial_dir,
                {
                    **previous,
                    "trial": trial_dir.name,
                    "status": "duplicate",
                    "seconds": 0.0,
                    "same_as": str(done),
                    "run_dir": str(done),
                },
            )
        print(f"[sweep] trial {trial_dir.name}: already completed in {done}; skipped", flush=True)
        return float(previous.get("value", float("nan")))
    old = read_trial(trial_dir)
    summary = _readable_summary(trial_dir) if old and old.get("hash") == digest else None
    if summary and old.get("status") == "running" and old.get("primary_metric"):
        # Killed between the run's last write (summary.json) and its record: it did finish.
        value = (summary.get("final") or {}).get(old["primary_metric"])
        if value is not None and math.isfinite(float(value)):
            write_trial(trial_dir, {**old, "status": "completed", "value": float(value)})
            print(f"[sweep] trial {trial_dir.name}: already completed; skipped", flush=True)
            return float(value)
    return None


def _readable_summary(trial_dir: Path) -> dict[str, Any] | None:
    """summary.json, or None when absent or cut short (a kill while it was being written)."""
    try:
        return read_summary(trial_dir)
    except ValueError:
        return None


def prepare_trial_dir(trial_dir: Path, digest: str, node: dict[str, Any]) -> dict[str, Any]:
    """An unfinished trial of the same config continues from its last complete checkpoint
    (metrics after it are dropped); anything else left in the directory is removed, so that a
    restart never appends to old metrics. Returns what to add to the trial's record."""
    from framework.store.checkpoint import latest_checkpoint

    old = read_trial(trial_dir)
    checkpoint = latest_checkpoint(trial_dir)
    if old is not None and old.get("hash") == digest and checkpoint is not None:
        node["resume"] = "auto"
        trim_metrics(trial_dir, checkpoint)
        return {"resumed_from": str(checkpoint)}
    if any(p.name != HYDRA_DIR for p in trial_dir.iterdir()):
        clear_trial_dir(trial_dir)
    return {}


def execute_trial(composed: Composed, trial_dir: Path, record: dict[str, Any]) -> bool:
    """Validate and train the trial, filling in its record (status, value or reason and exit
    code). Returns True when a signal stopped it (the sweep must stop too)."""
    from framework.config.path import validated_run
    from framework.run.execute import execute

    try:
        run = validated_run(composed)
        record["primary_metric"], record["greater_is_better"] = task_objective(run)
        write_trial(trial_dir, record)
        execute(run)
        summary = read_summary(trial_dir) or {}
        value = (summary.get("final") or {}).get(record["primary_metric"])
        if value is None or not math.isfinite(float(value)):
            record.update(
                status="failed",
                exit_code=1,
                reason=f"no finite {record['primary_metric']} in summary.json",
            )
        else:
            record.update(status="completed", value=float(value))
    except (UserError, TrainingInterrupted, LaunchFailed) as error:
        code = exit_code_for(error)
        signalled = isinstance(error, TrainingInterrupted) and (code or 0) >= 128
        # A signal leaves the trial unfinished (its checkpoint resumes it); anything else failed.
        record.update(
            status="interrupted" if signalled else "failed",
            exit_code=code,
            reason=str(error).splitlines()[0],
        )
        return signalled
    except Exception as error:  # out of memory, a library error: recorded, the sweep goes on
        traceback.print_exc()
        first = str(error).splitlines()[0] if str(error) else ""
        record.update(status="failed", exit_code=1, reason=f"{type(error).__name__}: {first}")
    return False


def _short(text: Any, limit: int = 90) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
