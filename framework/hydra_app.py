"""Hydra's own command line for `ft train` when Hydra flags are given (-m sweeps, --cfg, --info,
shell completion). Each job is validated and trained exactly like `ft train`; the objective
returned to a sweeper (e.g. Optuna) is the task's primary metric on the validation split."""

from __future__ import annotations

import contextlib
import io
import sys
from typing import List, Tuple

from framework.errors import UserError, exit_code_for
from framework.run_dir import read_summary, redact_hydra_files, redact_printed


# A sweep grid up to this many jobs is validated job by job before any runs (about 0.3 s each);
# a bigger one has each swept value validated once, with the other keys at their first value.
MAX_PREVALIDATED_JOBS = 32

VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-dir", "-cd",
               "--shell-completion", "-sc", "--experimental-rerun"}


def split_flags(args: List[str]) -> Tuple[List[str], List[str]]:
    """Separate Hydra's flags (with their values) from key=value overrides."""
    flags, overrides = [], []
    index = 0
    while index < len(args):
        token = args[index]
        if token.startswith("-"):
            flags.append(token)
            nxt = args[index + 1] if index + 1 < len(args) else None
            if token in VALUE_FLAGS and nxt is not None and "=" not in nxt and not nxt.startswith("-"):
                flags.append(nxt)
                index += 1
        else:
            overrides.append(token)
        index += 1
    return flags, overrides


def sweep_jobs(overrides: List[str]) -> List[List[str]]:
    """Concrete override lists that cover a sweep: every job of a small grid, else each swept value
    once. Interval sweeps (Optuna) contribute their two ends. Hydra's own keys are left out; a
    glob sweep (expanded by Hydra against the presets) leaves nothing to check here: []."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    mine = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if any("glob(" in o.split("=", 1)[-1] for o in mine):
        return []
    axes: List[List[str]] = []
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
    return [firsts[:i] + [value] + firsts[i + 1:]
            for i, values in enumerate(axes) for value in values[1:]] + [firsts]


def prevalidate_sweep(recipe: str, overrides: List[str]) -> List[str]:
    """Validate every job of a sweep before the first one runs (a bad value must not surface after
    hours of training, or on a cluster node): one line per failing job, [] if all are valid."""
    from framework.session import compose_and_validate

    # Jobs of a cluster launcher (hydra/launcher=slurm) run on other machines: check everything
    # but this machine's devices, as a dry run does.
    remote = any(o.lstrip("+").startswith("hydra/launcher=") for o in overrides)
    problems = []
    for job in sweep_jobs(overrides):
        try:
            compose_and_validate(recipe, job + (["dry_run=true"] if remote else []))
        except UserError as error:
            problems.append(f"sweep job [{' '.join(job)}]: {error}")
    return problems


def run_hydra_app(argv: List[str]) -> int:
    """Run `ft train RECIPE [hydra flags] [overrides]` through hydra.main."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from framework.config.compose import (CONF_DIR, HYDRA_VERSION_BASE, RECIPES_DIR, Composed,
                                          register_env_secrets, resolve_recipe)
    from framework.config.schema import build_run_config
    from framework.errors import LaunchFailed, TrainingInterrupted
    from framework.session import execute

    if not argv or argv[0].startswith("-"):
        print("error: usage: ft train RECIPE [-m] [overrides]", file=sys.stderr)
        return 2
    try:
        recipe_path = resolve_recipe(argv[0])
    except UserError as error:
        return exit_code_for(error)
    rest = argv[1:]

    @hydra.main(config_path=str(recipe_path.parent), config_name=recipe_path.stem,
                version_base=HYDRA_VERSION_BASE)
    def job(cfg: DictConfig) -> float:
        # Hydra prints a traceback for any exception it sees; a user error must be one line.
        try:
            return run_job(cfg)
        except (UserError, TrainingInterrupted, LaunchFailed) as error:
            raise SystemExit(exit_code_for(error)) from None

    def run_job(cfg: DictConfig) -> float:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        register_env_secrets(OmegaConf.to_container(cfg, resolve=False))
        redact_hydra_files(hydra_cfg.runtime.output_dir)  # Hydra wrote them before this job ran
        if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
            sweep_dirs.add(hydra_cfg.sweep.dir)
            redact_hydra_files(hydra_cfg.sweep.dir)  # multirun.yaml
        overrides = list(hydra_cfg.overrides.task)
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items()
                   if not k.startswith("hydra/") and v is not None}
        node = OmegaConf.to_container(cfg, resolve=True)
        node.setdefault("recipe", recipe_path.stem)
        if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN" and not node.get("run_dir"):
            node["run_dir"] = str(hydra_cfg.runtime.output_dir)
            node["overwrite"] = True  # Hydra made this job's directory for it
        composed = Composed(recipe_path.stem, recipe_path, node, overrides, choices)
        finished = execute(composed, build_run_config(node, composed.origin))
        # The objective is the task's primary metric, as the run itself recorded it.
        summary = read_summary(finished.run_dir) if finished.run_dir else None
        if summary is None:
            return float("nan")
        return float(summary["final"].get(summary["primary_metric"], float("nan")))

    # hydra.main reads sys.argv: flags first, then overrides (argparse can't interleave them).
    flags, overrides = split_flags(rest)
    printing_only = any(f in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                              "--hydra-help") for f in flags)
    if any(f in ("-m", "--multirun") for f in flags) and not printing_only:
        problems = prevalidate_sweep(str(recipe_path), overrides)
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
            print("error: the sweep has invalid jobs; nothing was run:\n  " + "\n  ".join(shown),
                  file=sys.stderr)
            return 2
    sys.argv = [f"ft train {recipe_path.stem}", *flags,
                f"hydra.searchpath=[file://{CONF_DIR},file://{RECIPES_DIR}]",
                "hydra.job.chdir=false", "hydra/job_logging=disabled",
                "hydra/hydra_logging=disabled", *overrides]
    sweep_dirs: set = set()  # filled by the jobs; every job's Hydra files are redacted at the end
    # Hydra prints --cfg / --info itself: catch it to redact a model.token given on the line.
    printed = io.StringIO() if printing_only and "--shell-completion" not in flags \
        and "-sc" not in flags else None
    try:
        with contextlib.redirect_stdout(printed) if printed else contextlib.nullcontext():
            job()
    except UserError as error:
        return exit_code_for(error)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        for folder in sweep_dirs:
            redact_hydra_files(folder, jobs=True)
        if printed is not None:
            sys.stdout.write(redact_printed(printed.getvalue()))
    return 0
