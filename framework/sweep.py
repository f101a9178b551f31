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

import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from framework.errors import LaunchFailed, TrainingInterrupted, UserError, exit_code_for
from framework.run_dir import METRICS_FILE, TRIAL_FILE, read_summary, redact_text

SUMMARY_FILE = "sweep_summary.json"  # in the sweep directory, beside the trial directories
OPTUNA_DB = "optuna.db"  # the persistent Optuna study (SQLite) in the sweep directory
OPTUNA_STUDY = "ft"  # the study's name inside OPTUNA_DB
HYDRA_DIR = ".hydra"  # Hydra writes each job's config here before the job runs
# Keys that say where or how a run is stored, not what it computes: left out of the config hash.
NOT_HASHED = ("run_dir", "overwrite", "output_root", "resume", "dry_run", "sweep")
SWEEP_OPTIONS = ("fail_fast", "conditional")  # sweep.<key>=value (not part of any run's config)


@dataclass
class SweepOptions:
    """ft's own sweep settings, from the command line (`sweep.fail_fast=true`) or the `sweep:`
    node of an hparams_search preset; they are not part of any run's config."""

    fail_fast: bool = False
    # Method-dependent dimensions: keys such as peft.r that a trial keeps only when its chosen
    # preset's schema has them (rank for LoRA-like methods); elsewhere the key is dropped, and
    # the trials that then coincide run once (the others are skipped by config hash).
    conditional: List[str] = field(default_factory=list)

    def merge(self, node: Any) -> None:
        """Take the settings of a preset's `sweep:` node (the command line's stay)."""
        if not isinstance(node, dict):
            return
        unknown = sorted(set(node) - set(SWEEP_OPTIONS))
        if unknown:
            raise UserError(f"sweep.{unknown[0]}: unknown sweep option; valid: "
                            f"{', '.join('sweep.' + k for k in SWEEP_OPTIONS)}")
        self.fail_fast = self.fail_fast or bool(node.get("fail_fast", False))
        self.conditional = sorted(set(self.conditional) | set(node.get("conditional") or []))


class TrialFailed(Exception):
    """A trial failed; raised to an Optuna sweeper so that the study records it as failed."""


def split_sweep_options(overrides: List[str]) -> Tuple[SweepOptions, List[str]]:
    """Take `sweep.<key>=value` overrides out of the command line (they configure the sweep, not
    the runs) and return (options, the other overrides)."""
    options, rest = SweepOptions(), []
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if not key.startswith("sweep."):
            rest.append(override)
            continue
        name = key[len("sweep."):]
        if name not in SWEEP_OPTIONS:
            raise UserError(f"{key}: unknown sweep option; valid: "
                            f"{', '.join('sweep.' + k for k in SWEEP_OPTIONS)}")
        if name == "conditional":
            options.conditional = [k.strip() for k in value.strip("[]").split(",") if k.strip()]
        elif value.lower() not in ("true", "false"):
            raise UserError(f"{key}={value}: must be true or false")
        else:
            options.fail_fast = value.lower() == "true"
    return options, rest


def drop_undefined(node: Dict[str, Any], keys: List[str]) -> List[str]:
    """Remove each conditional key (e.g. peft.r) whose preset's schema does not define it (IA3
    has no rank); return the keys removed."""
    from framework.config.schema import schema_fields

    dropped = []
    for key in keys:
        *parents, leaf = key.split(".")
        parent: Any = node
        for part in parents:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or leaf not in parent:
            continue
        allowed = schema_fields(node, key)
        if allowed is not None and leaf not in allowed:
            del parent[leaf]
            dropped.append(key)
    return dropped


def config_hash(node: Dict[str, Any]) -> str:
    """A hash of a trial's resolved config, without the keys that only say where it is stored:
    the same trial re-run into another directory has the same hash."""
    kept = {k: v for k, v in node.items() if k not in NOT_HASHED}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_objective(run: Any) -> Tuple[str, bool]:
    """(primary metric, greater is better) of a run's task, as its Task class declares them."""
    from framework.registry import TASKS

    cls = TASKS.get(run.task.name)
    try:  # some tasks pick the metric from their params (seq_cls multi_label, seq2seq)
        task = cls(run.task, run.data, None, None)
        return task.primary_metric, bool(task.greater_is_better)
    except Exception:  # a task that needs its tokenizer to be built: the class's declaration
        return cls.primary_metric, bool(cls.greater_is_better)


# ---- one trial ---------------------------------------------------------------------------------
def read_trial(trial_dir: Path) -> Optional[Dict[str, Any]]:
    path = Path(trial_dir) / TRIAL_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_trial(trial_dir: Path, record: Dict[str, Any]) -> None:
    """Write trial.json atomically (a killed sweep never leaves half a record)."""
    path = Path(trial_dir) / TRIAL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def completed_trial(sweep_dir: Path, digest: str) -> Optional[Path]:
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
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def shown_overrides(overrides: List[str]) -> List[str]:
    """A trial's overrides as a user would type them to `ft train` (no Hydra keys, no search
    space preset: its values are among the trial's own; `++key`, which ft adds for schema keys a
    preset omits, is plain `key` there)."""
    out = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(("hydra.", "hydra/")) or key in ("run_dir", "overwrite", "hparams_search"):
            continue
        # Secrets never reach trial.json, the summary or the console (model.token=hf_...).
        out.append(redact_text(override[2:] if override.startswith("++") else override))
    return out


def trial_line(record: Dict[str, Any]) -> str:
    """The one console line of a finished trial."""
    metric = record.get("primary_metric") or "metric"
    value = record.get("value")
    shown = f"{metric}={value:.4f}" if isinstance(value, (int, float)) else f"{metric}=-"
    status = record["status"]
    if status == "failed":
        status = f"failed (exit {record.get('exit_code')}: {_short(record.get('reason'))})"
    return (f"[sweep] trial {record['trial']}: {status}; {shown}; "
            f"{record.get('seconds', 0):.1f}s; {' '.join(record.get('overrides', [])) or '(no overrides)'}")


def run_trial(node: Dict[str, Any], recipe: str, recipe_path: Path, overrides: List[str],
              choices: Dict[str, str], trial_dir: Path, sweep_dir: Path,
              options: SweepOptions, optuna: bool) -> float:
    """Run one trial of a sweep in trial_dir and return its objective (the task's primary
    metric). A failure is recorded and returned as NaN (or raised as TrialFailed to Optuna, or
    as SystemExit under sweep.fail_fast); a signal (Ctrl-C, SIGTERM) stops the whole sweep."""
    from framework.config.compose import override_key

    # Hydra's logging setup (even `disabled`) switches off every logger that existed before it,
    # ft's own among them: switch them back on, so that each trial's train.log is written.
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False
    node = dict(node)
    node.pop("sweep", None)
    node.setdefault("recipe", recipe_path.stem)
    dropped = drop_undefined(node, options.conditional)
    digest = config_hash(node)
    record: Dict[str, Any] = {
        "trial": trial_dir.name, "recipe": recipe, "dropped": dropped, "hash": digest,
        "overrides": [o for o in shown_overrides(overrides) if override_key(o) not in dropped],
        "status": "running", "run_dir": str(trial_dir), "reason": None, "exit_code": None,
        "value": None, "primary_metric": None, "greater_is_better": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": 0.0}
    value = finished_value(trial_dir, sweep_dir, digest)
    if value is not None:
        return value
    node["run_dir"] = str(trial_dir)
    node["overwrite"] = True  # Hydra made this trial's directory for it
    record.update(prepare_trial_dir(trial_dir, digest, node))
    start = time.perf_counter()
    signalled = execute_trial(node, recipe_path, overrides, choices, trial_dir, record)
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


def finished_value(trial_dir: Path, sweep_dir: Path, digest: str) -> Optional[float]:
    """The objective of a trial that already completed (a restart of the sweep: never retrain
    it), or None. The same config in another trial directory counts too (it is then recorded
    here as a duplicate)."""
    done = completed_trial(sweep_dir, digest)
    if done is not None:
        previous = read_trial(done) or {}
        if done != trial_dir:
            write_trial(trial_dir, {**previous, "trial": trial_dir.name, "status": "duplicate",
                                    "seconds": 0.0, "same_as": str(done), "run_dir": str(done)})
        print(f"[sweep] trial {trial_dir.name}: already completed in {done}; skipped",
              flush=True)
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


def _readable_summary(trial_dir: Path) -> Optional[Dict[str, Any]]:
    """summary.json, or None when absent or cut short (a kill while it was being written)."""
    try:
        return read_summary(trial_dir)
    except ValueError:
        return None


def prepare_trial_dir(trial_dir: Path, digest: str, node: Dict[str, Any]) -> Dict[str, Any]:
    """An unfinished trial of the same config continues from its last complete checkpoint
    (metrics after it are dropped); anything else left in the directory is removed, so that a
    restart never appends to old metrics. Returns what to add to the trial's record."""
    from framework.checkpoint import latest_checkpoint

    old = read_trial(trial_dir)
    checkpoint = latest_checkpoint(trial_dir)
    if old is not None and old.get("hash") == digest and checkpoint is not None:
        node["resume"] = "auto"
        trim_metrics(trial_dir, checkpoint)
        return {"resumed_from": str(checkpoint)}
    if any(p.name != HYDRA_DIR for p in trial_dir.iterdir()):
        clear_trial_dir(trial_dir)
    return {}


def execute_trial(node: Dict[str, Any], recipe_path: Path, overrides: List[str],
                  choices: Dict[str, str], trial_dir: Path, record: Dict[str, Any]) -> bool:
    """Validate and train the trial, filling in its record (status, value or reason and exit
    code). Returns True when a signal stopped it (the sweep must stop too)."""
    from framework.config.compose import Composed
    from framework.config.schema import build_run_config
    from framework.session import execute

    try:
        composed = Composed(recipe_path.stem, recipe_path, node, overrides, choices)
        run = build_run_config(node, composed.origin)
        record["primary_metric"], record["greater_is_better"] = task_objective(run)
        write_trial(trial_dir, record)
        execute(composed, run)
        summary = read_summary(trial_dir) or {}
        value = (summary.get("final") or {}).get(record["primary_metric"])
        if value is None or not math.isfinite(float(value)):
            record.update(status="failed", exit_code=1,
                          reason=f"no finite {record['primary_metric']} in summary.json")
        else:
            record.update(status="completed", value=float(value))
    except (UserError, TrainingInterrupted, LaunchFailed) as error:
        code = exit_code_for(error)
        signalled = isinstance(error, TrainingInterrupted) and (code or 0) >= 128
        # A signal leaves the trial unfinished (its checkpoint resumes it); anything else failed.
        record.update(status="interrupted" if signalled else "failed", exit_code=code,
                      reason=str(error).splitlines()[0])
        return signalled
    except Exception as error:  # out of memory, a library error: recorded, the sweep goes on
        traceback.print_exc()
        first = str(error).splitlines()[0] if str(error) else ""
        record.update(status="failed", exit_code=1, reason=f"{type(error).__name__}: {first}")
    return False


# ---- the whole sweep -----------------------------------------------------------------------------
def _trial_order(path: Path) -> Tuple[float, str]:
    return (int(path.name) if path.name.isdigit() else math.inf, path.name)


def collect(sweep_dir: Path) -> Dict[str, Any]:
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
    greater = next((t["greater_is_better"] for t in trials
                    if t.get("greater_is_better") is not None), None)
    completed = [t for t in trials if t["status"] == "completed"]  # duplicates: listed, not ranked
    best = None
    if completed:
        best = (max if greater in (True, None) else min)(completed, key=lambda t: t["value"])
        best = {**best, "command": " ".join(
            ["ft", "train", shlex.quote(best["recipe"]), *map(shlex.quote, best["overrides"])])}
    counts: Dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    return {"sweep_dir": str(sweep_dir), "primary_metric": metric, "greater_is_better": greater,
            "counts": counts, "trials": trials, "best": best}


def _short(text: Any, limit: int = 90) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def format_summary(summary: Dict[str, Any]) -> str:
    """The table of trials (the overrides they share on one line, then what differs per trial)
    and the best trial's command, as printed at the end of a sweep."""
    metric = summary["primary_metric"] or "metric"
    better = {True: "higher is better", False: "lower is better"}.get(summary["greater_is_better"], "")
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
    trials = summary["trials"]
    lines = [f"sweep {summary['sweep_dir']}: {len(trials)} trials ({counts or 'none'}); "
             f"objective {metric}{' (' + better + ')' if better else ''}"]
    shared = [o for o in (trials[0].get("overrides", []) if trials else [])
              if all(o in t.get("overrides", []) for t in trials)] if len(trials) > 1 else []
    if shared:
        lines.append(f"  every trial: {' '.join(shared)}")
    width = max([len(metric), 6])
    lines.append(f"  {'trial':<6} {'status':<10} {metric:>{width}} {'time':>7}  overrides")
    for t in trials:
        value = f"{t['value']:.4f}" if isinstance(t.get("value"), (int, float)) else "-"
        own = " ".join(o for o in t.get("overrides", []) if o not in shared)
        note = (f"  <- exit {t.get('exit_code')}: {_short(t.get('reason'))}"
                if t["status"] == "failed" else
                f"  <- same config as {Path(t['same_as']).name}" if t.get("same_as") else "")
        lines.append(f"  {t['trial']:<6} {t['status']:<10} {value:>{width}} "
                     f"{t.get('seconds', 0):>6.1f}s  {own}{note}")
    best = summary["best"]
    if best:
        lines.append(f"best: trial {best['trial']} ({metric}={best['value']:.4f}), "
                     f"in {best['run_dir']}; to run it again:")
        lines.append(f"  {best['command']}")
    else:
        lines.append("best: none (no trial completed)")
    return "\n".join(lines)


def finish_sweep(sweep_dir: Path) -> Dict[str, Any]:
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
        raise UserError(f"ft sweep report {sweep_dir}: not a sweep directory (no trial "
                        f"directories with {TRIAL_FILE}); give the directory `ft train -m` printed")
    print(format_summary(collect(sweep_dir)))
    return 0


def sweep_exit_code(summary: Dict[str, Any]) -> int:
    """0 when at least one trial completed, else the first failure's exit code (or 1)."""
    if summary["counts"].get("completed"):
        return 0
    codes = [t.get("exit_code") for t in summary["trials"] if t.get("exit_code")]
    return int(codes[0]) if codes else 1


# ---- setting the sweep up -------------------------------------------------------------------------
def default_sweep_dir(output_root: str, recipe: str, overrides: List[str]) -> Path:
    """OUTPUT_ROOT/sweeps/RECIPE-HASH, HASH from the command's overrides: re-running the same
    command finds the same directory (and resumes it); another command gets its own. The
    number of Optuna trials is left out, so raising it continues the same study."""
    kept = sorted(o for o in overrides
                  if o.lstrip("+").split("=", 1)[0] not in ("hydra.sweeper.n_trials",
                                                            "hydra.sweep.dir"))
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:8]
    return (Path(output_root).expanduser() / "sweeps" / f"{recipe}-{digest}").resolve()


def override_value(overrides: List[str], key: str) -> Optional[str]:
    for override in overrides:
        if override.lstrip("+").split("=", 1)[0] == key:
            return override.split("=", 1)[1]
    return None


def resolve_sweep_dir(overrides: List[str], output_root: str, recipe: str) -> Path:
    """The sweep directory: hydra.sweep.dir as given (resolved once, so that a `${now:...}`
    in it names one directory), else ft's default."""
    given = override_value(overrides, "hydra.sweep.dir")
    if given is None:
        return default_sweep_dir(output_root, recipe, overrides)
    if "${" in given:
        from omegaconf import OmegaConf
        import hydra.core.utils  # noqa: F401  (registers the `now` resolver)

        try:
            given = str(OmegaConf.create({"d": given}).d)
        except Exception:
            raise UserError(f"hydra.sweep.dir={given}: only ${{now:...}} can be resolved before "
                            f"the sweep starts; give a plain path") from None
    return Path(given).expanduser().resolve()


def objective_direction(objectives: List[Tuple[str, bool]], overrides: List[str]) -> str:
    """Optuna's direction from the task's primary metric; an explicit hydra.sweeper.direction
    that contradicts it, or trials with different objectives, are user errors."""
    distinct = sorted(set(objectives))
    if len(distinct) > 1:
        raise UserError(f"hydra/sweeper=optuna: the trials of this sweep optimise different "
                        f"metrics {distinct}; sweep one task setting at a time")
    metric, greater = distinct[0]
    direction = "maximize" if greater else "minimize"
    given = override_value(overrides, "hydra.sweeper.direction")
    if given is not None and given.strip("'\"") != direction:
        raise UserError(f"hydra.sweeper.direction={given}: the task's primary metric {metric} is "
                        f"{'higher' if greater else 'lower'}-is-better, so the direction is "
                        f"{direction}. Remove the override (ft sets it from the task)")
    return direction


def optuna_overrides(overrides: List[str], sweep_dir: Path, direction: str,
                     configured_trials: Optional[int] = None) -> List[str]:
    """Hydra overrides for a persistent, failure-tolerant Optuna study in the sweep directory.
    A re-run of the same command continues the study: only the trials still missing run (a
    trial left running by a killed sweep is run again), in new trial directories."""
    # optuna 2.10's SQLite storage runs on SQLAlchemy 1.4, which warns about 2.0 on import.
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    import optuna

    added = [f"hydra.sweeper.direction={direction}"]
    storage = override_value(overrides, "hydra.sweeper.storage")
    study_name = override_value(overrides, "hydra.sweeper.study_name") or OPTUNA_STUDY
    if storage is None:
        storage = f"sqlite:///{sweep_dir / OPTUNA_DB}"
        added.append(f"hydra.sweeper.storage='{storage}'")
    if override_value(overrides, "hydra.sweeper.study_name") is None:
        added.append(f"hydra.sweeper.study_name={study_name}")
    if override_value(overrides, "hydra.sweeper.max_failure_rate") is None:
        added.append("hydra.sweeper.max_failure_rate=1.0")  # failed trials never stop the study
    n_trials = int(override_value(overrides, "hydra.sweeper.n_trials") or configured_trials or 20)
    done = 0
    if (sweep_dir / OPTUNA_DB).exists() or not storage.startswith("sqlite:///"):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # no such study yet
            study = None
        if study is not None:
            for trial in study.get_trials(deepcopy=False):
                if trial.state == optuna.trial.TrialState.RUNNING:  # its sweep was killed
                    study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
                    study.enqueue_trial(trial.params)
                elif trial.state != optuna.trial.TrialState.WAITING:
                    done += 1
    remaining = max(0, n_trials - done)
    existing = sum(1 for p in sweep_dir.glob("*") if p.is_dir()) if sweep_dir.is_dir() else 0
    added.append(f"hydra.sweeper.n_trials={remaining}")
    if existing:  # continue the numbering of the trial directories after the earlier ones
        added.append(f"hydra.sweep.subdir=r{existing}_${{hydra.job.num}}")
    kept = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "hydra.sweeper.n_trials"]
    return kept + added
