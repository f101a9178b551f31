"""Hydra's own command line for `ft train` when Hydra flags are given (-m sweeps, --cfg, --info,
shell completion). Each job is the composed config of one run, and goes the way of `ft train`:
validated on the same path (framework/config/path.py: a resume continues the saved config),
then run by framework/run/; the objective returned to a sweeper (e.g. Optuna) is the task's
primary metric on the validation split, as the run recorded it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from framework.config.compose import Composed, hydra_overrides, selected_presets
from framework.config.path import load_run
from framework.config.recipe import (
    HYDRA_VERSION_BASE,
    Recipe,
    override_key,
    read_recipe,
    search_path_override,
)
from framework.core.errors import LaunchFailed, TrainingInterrupted, UserError, exit_code_for
from framework.store.redaction import redact_printed
from framework.store.run_dir import read_summary, redact_hydra_files
from framework.sweep.planning import SweepPlan, plan_sweep

VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--config-dir",
    "-cd",
    "--shell-completion",
    "-sc",
    "--experimental-rerun",
}
PRINTING_FLAGS = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--hydra-help")
COMPLETION_FLAGS = ("--shell-completion", "-sc")
MAX_PROBLEMS_SHOWN = 10


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags (with their values) from key=value overrides."""
    flags, overrides = [], []
    index = 0
    while index < len(args):
        token = args[index]
        if token.startswith("-"):
            flags.append(token)
            nxt = args[index + 1] if index + 1 < len(args) else None
            if (
                token in VALUE_FLAGS
                and nxt is not None
                and "=" not in nxt
                and not nxt.startswith("-")
            ):
                flags.append(nxt)
                index += 1
        else:
            overrides.append(token)
        index += 1
    return flags, overrides


def as_given(job_overrides: list[str], given: list[str]) -> tuple[str, ...]:
    """A job's overrides as the user typed them: without the `++` that ft adds for Hydra."""
    typed = {override_key(o) for o in given if o.startswith("++")}
    return tuple(
        o[2:] if o.startswith("++") and override_key(o) not in typed else o for o in job_overrides
    )


def run_hydra_app(argv: list[str]) -> int:
    """Run `ft train RECIPE [hydra flags] [overrides]` through hydra.main."""
    if not argv or argv[0].startswith("-"):
        print("error: usage: ft train RECIPE [-m] [overrides]", file=sys.stderr)
        return 2
    try:
        recipe = read_recipe(argv[0])
    except UserError as error:
        return exit_code_for(error) or 2
    flags, overrides = split_flags(argv[1:])
    printing_only = any(f in PRINTING_FLAGS for f in flags)
    sweep = SweepPlan()
    scratch = None  # Hydra's output folder for a single run through this door (see below)
    if any(f in ("-m", "--multirun") for f in flags) and not printing_only:
        try:
            if is_single_run(overrides):
                # One job that continues or names its run directory: a run, not a trial of a
                # sweep (as `ft train` without the flag). Hydra's own files of the job go to a
                # folder ft makes and removes; the run writes only its run directory.
                load_run(recipe, overrides)  # refuses here, before Hydra starts, one line
                scratch = tempfile.mkdtemp(prefix="ft-hydra-")
                overrides = [*overrides, f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null"]
            else:
                overrides = plan_sweep(sweep, recipe, overrides)
        except UserError as error:
            return exit_code_for(error) or 2
        if sweep.problems:
            shown = sweep.problems[:MAX_PROBLEMS_SHOWN]
            if len(sweep.problems) > MAX_PROBLEMS_SHOWN:
                shown.append(f"... and {len(sweep.problems) - MAX_PROBLEMS_SHOWN} more")
            print(
                "error: the sweep has invalid jobs; nothing was run:\n  " + "\n  ".join(shown),
                file=sys.stderr,
            )
            return 2
    hydra_argv = [
        f"ft train {recipe.name}",
        *flags,
        search_path_override(recipe, overrides),
        "hydra.job.chdir=false",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
        *hydra_overrides([o for o in overrides if override_key(o) != "hydra.searchpath"]),
    ]
    sweep_dirs: set[str] = set()  # filled by the jobs; their Hydra files are redacted at the end
    job = hydra_job(recipe, argv[0], overrides, sweep, sweep_dirs)
    # Hydra prints --cfg / --info itself: catch it to redact a model.token given on the line.
    capture = printing_only and not any(f in COMPLETION_FLAGS for f in flags)
    try:
        code = run_jobs(job, hydra_argv, sweep, sweep_dirs, capture)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if sweep.sweep_dir is None or not sweep.sweep_dir.is_dir():
        return code
    from framework.sweep.summary import finish_sweep, sweep_exit_code

    summary = finish_sweep(sweep.sweep_dir)
    # Failed trials do not fail the sweep; no completed trial (or fail_fast's stop) does.
    return code or sweep_exit_code(summary)


def is_single_run(overrides: list[str]) -> bool:
    """`-m` with nothing swept and a `resume` or `run_dir`: one run, resumed or placed by the
    user, not a sweep of one trial (a trial's directory is the sweep's to choose)."""
    from framework.sweep.planning import sweep_jobs

    named = {override_key(o) for o in overrides} & {"resume", "run_dir"}
    return bool(named) and len(sweep_jobs(overrides)) == 1


def hydra_job(
    recipe: Recipe, recipe_arg: str, given: list[str], sweep: SweepPlan, sweep_dirs: set[str]
) -> Any:
    """hydra.main's task function: each job's composed config becomes one ft run (or one trial
    of the sweep), validated and run as `ft train` does. A user error is one line, not Hydra's
    traceback."""
    import hydra
    from omegaconf import DictConfig

    recipe.store()

    @hydra.main(
        config_path=str(recipe.path.parent),
        config_name=recipe.config_name,
        version_base=HYDRA_VERSION_BASE,
    )
    def job(cfg: DictConfig) -> float:
        try:
            return run_job(composed_job(cfg, recipe, given, sweep_dirs), recipe_arg, sweep)
        except (UserError, TrainingInterrupted, LaunchFailed) as error:
            raise SystemExit(exit_code_for(error)) from None

    return job


def composed_job(cfg: Any, recipe: Recipe, given: list[str], sweep_dirs: set[str]) -> Composed:
    """Hydra's config of the running job as a Composed (what compose_recipe would have made)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from framework.config.compose import register_env_secrets

    hydra_cfg = HydraConfig.get()
    register_env_secrets(OmegaConf.to_container(cfg, resolve=False))
    redact_hydra_files(hydra_cfg.runtime.output_dir)  # Hydra wrote them before this job ran
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        sweep_dirs.add(hydra_cfg.sweep.dir)
        redact_hydra_files(hydra_cfg.sweep.dir)  # multirun.yaml
    node = OmegaConf.to_container(cfg, resolve=True)
    node.setdefault("recipe", recipe.name)
    overrides = as_given(list(hydra_cfg.overrides.task), given)
    return Composed(recipe, node, overrides, selected_presets(hydra_cfg.runtime.choices))


def run_job(composed: Composed, recipe_arg: str, sweep: SweepPlan) -> float:
    """One job: a sweep's trial, or a single run; returns its objective."""
    from hydra.core.hydra_config import HydraConfig

    from framework.config.path import validated_run
    from framework.run.execute import execute
    from framework.sweep.trials import run_trial

    _enable_loggers()  # Hydra's logging setup switched them off: the job logs, to train.log too
    if sweep.sweep_dir is not None:
        trial_dir = Path(HydraConfig.get().runtime.output_dir)
        return run_trial(
            composed, recipe_arg, trial_dir, sweep.sweep_dir, sweep.options, sweep.optuna
        )
    finished = execute(validated_run(composed))
    summary = read_summary(finished.run_dir) if finished.run_dir else None
    if summary is None:
        return float("nan")
    return float(summary["final"].get(summary["primary_metric"], float("nan")))


def run_jobs(
    job: Any, argv: list[str], sweep: SweepPlan, sweep_dirs: set[str], capture: bool
) -> int:
    """Call hydra.main's job with `argv` as its command line; returns the exit code."""
    printed = io.StringIO() if capture else None
    code = 0
    try:
        with (
            _loggers_left_on(),
            _command_line(argv),
            _root_logger_as_it_was(),
            _full_hydra_errors(sweep.optuna),
            contextlib.redirect_stdout(printed) if printed else contextlib.nullcontext(),
        ):
            job()
    except UserError as error:
        code = exit_code_for(error) or 2
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    except ValueError:
        # The Optuna sweeper asks its study for the best trial at the end, which raises when
        # every trial failed; the table below says so. Anything else is a bug: show it.
        from framework.sweep.summary import collect

        if not (
            sweep.optuna
            and sweep.sweep_dir
            and not collect(sweep.sweep_dir)["counts"].get("completed")
        ):
            raise
        code = 1
    finally:
        for folder in sweep_dirs:
            redact_hydra_files(Path(folder), jobs=True)
        if printed is not None:
            sys.stdout.write(redact_printed(printed.getvalue()))
    return code


def _enable_loggers(names: set[str] | None = None) -> None:
    """Switch loggers back on (those named, else all). Hydra's logging setup, even `disabled`,
    switches off every logger that existed before it, ft's own among them."""
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and (names is None or name in names):
            logger.disabled = False


@contextlib.contextmanager
def _loggers_left_on() -> Iterator[None]:
    """The loggers that were on before Hydra ran are on after it (later runs in this process,
    e.g. a test suite's, still log)."""
    on = {
        name
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and not logger.disabled
    }
    try:
        yield
    finally:
        _enable_loggers(on)


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """hydra.main reads sys.argv (flags first, then overrides): set it for the call only."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _root_logger_as_it_was() -> Iterator[None]:
    """Hydra's logging setup also resets the root logger's level and handlers: put them back
    after the call (a caller in the same process keeps its own logging, e.g. pytest's capture)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@contextlib.contextmanager
def _full_hydra_errors(wanted: bool) -> Iterator[None]:
    """HYDRA_FULL_ERROR=1 for the call only: the Optuna sweeper's errors then reach us instead of
    Hydra printing them."""
    if not wanted:
        yield
        return
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
