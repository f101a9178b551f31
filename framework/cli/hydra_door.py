"""Hydra's own command line for `ft train` when Hydra flags are given (-m sweeps, --cfg, --info,
shell completion). Each job is validated and trained exactly like `ft train`; the objective
returned to a sweeper (e.g. Optuna) is the task's primary metric on the validation split."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

from framework.core.errors import UserError, exit_code_for
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


def run_hydra_app(argv: list[str]) -> int:
    """Run `ft train RECIPE [hydra flags] [overrides]` through hydra.main."""
    import hydra
    from omegaconf import DictConfig

    from framework.config.compose import (
        HYDRA_VERSION_BASE,
        override_key,
        resolve_recipe,
        search_path,
    )
    from framework.core.errors import LaunchFailed, TrainingInterrupted

    if not argv or argv[0].startswith("-"):
        print("error: usage: ft train RECIPE [-m] [overrides]", file=sys.stderr)
        return 2
    try:
        recipe_path = resolve_recipe(argv[0])
    except UserError as error:
        return exit_code_for(error)
    rest = argv[1:]

    sweep = SweepPlan()
    sweep_dirs: set = set()  # filled by the jobs; every job's Hydra files are redacted at the end
    run_job = job_runner(argv[0], recipe_path, sweep, sweep_dirs)

    @hydra.main(
        config_path=str(recipe_path.parent),
        config_name=recipe_path.stem,
        version_base=HYDRA_VERSION_BASE,
    )
    def job(cfg: DictConfig) -> float:
        # Hydra prints a traceback for any exception it sees; a user error must be one line.
        try:
            return run_job(cfg)
        except (UserError, TrainingInterrupted, LaunchFailed) as error:
            raise SystemExit(exit_code_for(error)) from None

    # hydra.main reads sys.argv: flags first, then overrides (argparse can't interleave them).
    flags, overrides = split_flags(rest)
    printing_only = any(
        f in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--hydra-help")
        for f in flags
    )
    if any(f in ("-m", "--multirun") for f in flags) and not printing_only:
        try:
            overrides = plan_sweep(sweep, str(recipe_path), overrides)
        except UserError as error:
            return exit_code_for(error)
        if sweep.problems:
            problems = sweep.problems
            shown = problems[:10] + (
                [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
            )
            print(
                "error: the sweep has invalid jobs; nothing was run:\n  " + "\n  ".join(shown),
                file=sys.stderr,
            )
            return 2
    # One search path: the user's config dirs (the recipe's own, --config-dir) before ft's presets.
    searched = ",".join(f"'{entry}'" for entry in search_path(recipe_path, overrides))
    overrides = [o for o in overrides if override_key(o) != "hydra.searchpath"]
    sys.argv = [
        f"ft train {recipe_path.stem}",
        *flags,
        f"hydra.searchpath=[{searched}]",
        "hydra.job.chdir=false",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
        *overrides,
    ]
    code = 0
    if sweep.optuna:  # let the sweeper's errors reach us instead of Hydra printing them
        os.environ["HYDRA_FULL_ERROR"] = "1"
    # Hydra prints --cfg / --info itself: catch it to redact a model.token given on the line.
    printed = (
        io.StringIO()
        if printing_only and "--shell-completion" not in flags and "-sc" not in flags
        else None
    )
    try:
        with contextlib.redirect_stdout(printed) if printed else contextlib.nullcontext():
            job()
    except UserError as error:
        code = exit_code_for(error)
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
            redact_hydra_files(folder, jobs=True)
        if printed is not None:
            sys.stdout.write(redact_printed(printed.getvalue()))
    if sweep.sweep_dir is None or not sweep.sweep_dir.is_dir():
        return code
    from framework.sweep.summary import finish_sweep, sweep_exit_code

    summary = finish_sweep(sweep.sweep_dir)
    # Failed trials do not fail the sweep; no completed trial (or fail_fast's stop) does.
    return code or sweep_exit_code(summary)


def job_runner(recipe_arg: str, recipe_path: Path, sweep: SweepPlan, sweep_dirs: set) -> Any:
    """The body of each Hydra job: one ft run (or one sweep trial) of the composed config; returns
    its objective, the task's primary metric as the run recorded it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from framework.config.compose import Composed, register_env_secrets
    from framework.config.schema import build_run_config
    from framework.run.execute import execute
    from framework.sweep.trials import run_trial

    def run_job(cfg: DictConfig) -> float:
        hydra_cfg = HydraConfig.get()
        register_env_secrets(OmegaConf.to_container(cfg, resolve=False))
        redact_hydra_files(hydra_cfg.runtime.output_dir)  # Hydra wrote them before this job ran
        if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
            sweep_dirs.add(hydra_cfg.sweep.dir)
            redact_hydra_files(hydra_cfg.sweep.dir)  # multirun.yaml
        overrides = list(hydra_cfg.overrides.task)
        choices = {
            k: v
            for k, v in hydra_cfg.runtime.choices.items()
            if not k.startswith("hydra/") and v is not None
        }
        node = OmegaConf.to_container(cfg, resolve=True)
        node.setdefault("recipe", recipe_path.stem)
        if sweep.sweep_dir is not None:
            return run_trial(
                node,
                recipe_arg,
                recipe_path,
                overrides,
                choices,
                Path(hydra_cfg.runtime.output_dir),
                sweep.sweep_dir,
                sweep.options,
                sweep.optuna,
            )
        composed = Composed(recipe_path.stem, recipe_path, node, overrides, choices)
        finished = execute(composed, build_run_config(node, composed.origin))
        # The objective is the task's primary metric, as the run itself recorded it.
        summary = read_summary(finished.run_dir) if finished.run_dir else None
        if summary is None:
            return float("nan")
        return float(summary["final"].get(summary["primary_metric"], float("nan")))

    return run_job
