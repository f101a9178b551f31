"""Setting a sweep up before any trial runs: its jobs validated one by one (or each swept value once)
on the path of a single run, ft's own sweep options, the sweep directory (a fixed name per
command, so that re-running it resumes), and for Optuna its direction and study."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from framework.config.compose import with_search_preset
from framework.config.recipe import Recipe, override_key
from framework.core.errors import UserError
from framework.sweep.dirs import resolve_sweep_dir
from framework.sweep.options import (
    SweepOptions,
    drop_undefined,
    split_sweep_options,
    task_objective,
)
from framework.sweep.optuna import objective_direction, optuna_overrides

# A sweep grid up to this many jobs is validated job by job before any runs (about 0.3 s each);
# a bigger one has each swept value validated once, with the other keys at their first value.
MAX_PREVALIDATED_JOBS = 32


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Concrete override lists that cover a sweep: every job of a small grid, else each swept value
    once. Interval sweeps (Optuna) contribute their two ends. Hydra's own keys are left out; a
    glob sweep (expanded by Hydra against the presets) leaves nothing to check here: []."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    mine = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if any("glob(" in o.split("=", 1)[-1] for o in mine):
        return []
    axes: list[list[str]] = []
    for override, text in zip(OverridesParser.create().parse_overrides(mine), mine):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes.append([text])
        elif override.is_interval_sweep():
            ends = (override.value().start, override.value().end)
            axes.append([f"{key}={int(v) if float(v).is_integer() else v}" for v in ends])
        else:  # choice or range
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    size = 1
    for values in axes:
        size *= len(values)
    if size <= MAX_PREVALIDATED_JOBS:
        return [list(job) for job in itertools.product(*axes)]
    firsts = [values[0] for values in axes]
    return [
        firsts[:i] + [value] + firsts[i + 1 :]
        for i, values in enumerate(axes)
        for value in values[1:]
    ] + [firsts]


def prevalidate_sweep(
    recipe: Recipe, overrides: list[str], conditional: Sequence[str] = ()
) -> tuple[list[str], list[Any]]:
    """Validate every job of a sweep before the first one runs (a bad value must not surface after
    hours of training, or on a cluster node), on the same path as a single run. Returns (one
    line per failing job, the validated runs). Conditional keys (sweep.conditional) are dropped
    where the job's preset does not define them, as trials do."""
    from framework.config.compose import compose_recipe
    from framework.config.path import validated_run

    # Jobs of a cluster launcher (hydra/launcher=slurm) run on other machines: check everything
    # but this machine's devices, as a dry run does.
    remote = any(o.lstrip("+").startswith("hydra/launcher=") for o in overrides)
    problems, runs = [], []
    for job in sweep_jobs(overrides):
        try:
            composed = compose_recipe(recipe, job + (["dry_run=true"] if remote else []))
            config = {k: v for k, v in composed.config.items() if k != "sweep"}
            drop_undefined(config, list(conditional))
            runs.append(validated_run(replace(composed, config=config)))
        except UserError as error:
            problems.append(f"sweep job [{' '.join(job)}]: {error}")
    return problems, runs


def preset_sweep(recipe: Recipe, overrides: list[str]) -> tuple[str, list[str], Any, Any]:
    """What the composed config says about the sweep (an hparams_search preset may set it):
    (the sweeper's name, its `params` as overrides, its n_trials, the `sweep:` node)."""
    from omegaconf import OmegaConf

    from framework.config.compose import hydra_compose, hydra_overrides
    from framework.config.recipe import recipe_groups

    jobs = sweep_jobs(overrides)
    hydra_keys = [
        o
        for o in overrides
        if override_key(o).startswith(("hydra.", "hydra/"))
        and "," not in o.split("=", 1)[-1]
        and "(" not in o.split("=", 1)[-1]
    ]
    # Only preset choices (group=preset) and Hydra's keys: what decides the sweep's settings.
    choices = [o for o in (jobs[0] if jobs else []) if override_key(o) in recipe_groups()]
    try:
        cfg = hydra_compose(recipe, hydra_overrides(choices + hydra_keys))
    except Exception:  # an invalid job: prevalidation names the problem
        return "", [], None, None
    sweeper = cfg.hydra.runtime.choices.get("hydra/sweeper") or ""
    node = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    given = {override_key(o) for o in overrides}
    as_overrides = [f"{k}={v}" for k, v in params.items() if override_key(str(k)) not in given]
    sweep_node = OmegaConf.to_container(cfg.sweep, resolve=True) if "sweep" in cfg else None
    return sweeper, as_overrides, cfg.hydra.sweeper.get("n_trials"), sweep_node


class SweepPlan:
    """What `plan_sweep` decided for a sweep, read by each trial (in this process)."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.options = SweepOptions()
        self.optuna = False
        self.problems: list[str] = []


def plan_sweep(plan: SweepPlan, recipe: Recipe, overrides: list[str]) -> list[str]:
    """Validate every job, then settle the sweep directory (a fixed name per command, so that
    re-running the command resumes it) and, for Optuna, its direction and persistent study.
    Returns the overrides to hand to Hydra (as given; see compose.hydra_overrides); problems go
    to plan.problems."""
    plan.options, overrides = split_sweep_options(overrides)
    overrides = with_search_preset(recipe, overrides)
    if any(override_key(o) == "resume" for o in overrides):
        # Each trial resumes itself: re-running the sweep skips completed trials and continues
        # unfinished ones from their checkpoints; a resume of one run would not fit them all.
        print(
            "[sweep] resume=...: a sweep resumes its own trials (completed ones are skipped, "
            "unfinished ones continue from their last checkpoint); the override is not passed on",
            file=sys.stderr,
        )
        overrides = [o for o in overrides if override_key(o) != "resume"]
    sweeper, preset_params, n_trials, sweep_node = preset_sweep(recipe, overrides)
    plan.options.merge(sweep_node)
    plan.problems, runs = prevalidate_sweep(
        recipe, preset_params + overrides, plan.options.conditional
    )
    if plan.problems:
        return overrides
    if any(run.run_dir for run in runs):
        raise UserError(
            "run_dir: every trial of a sweep gets its own directory under the sweep "
            "directory, so one run_dir cannot hold them; remove it (choose where the "
            "sweep goes with hydra.sweep.dir=DIR)"
        )
    output_root = runs[0].output_root if runs else "outputs"
    plan.sweep_dir = resolve_sweep_dir(overrides, output_root, recipe.name)
    overrides = [o for o in overrides if override_key(o) != "hydra.sweep.dir"]
    overrides.append(f"hydra.sweep.dir={plan.sweep_dir}")
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)  # the Optuna study lives in it from the start
    plan.optuna = sweeper == "optuna"
    if plan.optuna and runs:
        direction = objective_direction([task_objective(run) for run in runs], overrides)
        overrides = optuna_overrides(overrides, plan.sweep_dir, direction, n_trials)
    print(
        f"[sweep] directory: {plan.sweep_dir} (the same command resumes it; "
        f"`ft sweep report {plan.sweep_dir}` shows it)",
        file=sys.stderr,
        flush=True,
    )
    return overrides
