"""The Optuna sweeper's settings: the direction from the task's primary metric and a persistent,
failure-tolerant study in the sweep directory (a re-run continues it)."""

from __future__ import annotations

import os
from pathlib import Path

from framework.core.errors import UserError

OPTUNA_DB = "optuna.db"  # the persistent Optuna study (SQLite) in the sweep directory


OPTUNA_STUDY = "ft"  # the study's name inside OPTUNA_DB


def objective_direction(objectives: list[tuple[str, bool]], overrides: list[str]) -> str:
    """Optuna's direction from the task's primary metric; an explicit hydra.sweeper.direction
    that contradicts it, or trials with different objectives, are user errors."""
    distinct = sorted(set(objectives))
    if len(distinct) > 1:
        raise UserError(
            f"hydra/sweeper=optuna: the trials of this sweep optimise different "
            f"metrics {distinct}; sweep one task setting at a time"
        )
    metric, greater = distinct[0]
    direction = "maximize" if greater else "minimize"
    given = override_value(overrides, "hydra.sweeper.direction")
    if given is not None and given.strip("'\"") != direction:
        raise UserError(
            f"hydra.sweeper.direction={given}: the task's primary metric {metric} is "
            f"{'higher' if greater else 'lower'}-is-better, so the direction is "
            f"{direction}. Remove the override (ft sets it from the task)"
        )
    return direction


def optuna_overrides(
    overrides: list[str], sweep_dir: Path, direction: str, configured_trials: int | None = None
) -> list[str]:
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


def override_value(overrides: list[str], key: str) -> str | None:
    for override in overrides:
        if override.lstrip("+").split("=", 1)[0] == key:
            return override.split("=", 1)[1]
    return None
