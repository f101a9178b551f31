"""`ft train RECIPE ... dry_run=true`: show what a run would start, without starting it.

Prints the profile's settings (DeepSpeed config, FSDP plugin, device_map load arguments), the
global batch, and the exact `accelerate launch` command with its extra environment, or says that
the run trains in-process. Nothing is created and torch is not imported (safe on a login node).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from framework.config.compose import hydra_compose, hydra_overrides
from framework.config.recipe import override_key, read_recipe
from framework.hardware.base import launch_command
from framework.hardware.slurm import sbatch_script
from framework.store.run_dir import CONFIG_FILE

RUN_DIR_PLACEHOLDER = "RUN_DIR"


def dry_run_plan(run: Any) -> dict[str, Any]:
    """The launch plan of a validated run, as plain data."""
    profile = run.plugins.profile
    params = run.hardware
    world = profile.world_size(params)
    plan: dict[str, Any] = {
        "recipe": run.recipe,
        "hardware": profile.plan(params, run.train),
        "global_batch": {
            "processes": world,
            "batch_size": run.train.batch_size,
            "grad_accum": run.train.grad_accum,
            "examples_per_step": world * run.train.batch_size * run.train.grad_accum,
        },
        "run_dir": run.run_dir or str(Path(run.output_root) / run.recipe / "<timestamp>"),
    }
    if world > 1 or profile.always_launch:
        plan["command"] = launch_command(profile, params, Path(RUN_DIR_PLACEHOLDER), CONFIG_FILE)
        plan["env"] = {"PYTHONUNBUFFERED": "1", **profile.launch_env(params)}
        if params.num_machines > 1:
            plan["nodes"] = (
                f"run the same `ft train` on each of the {params.num_machines} "
                f"machines with hardware.machine_rank=0..{params.num_machines - 1} "
                f"(under SLURM ranks and the main address come from SLURM)"
            )
    else:
        plan["command"] = None
    return plan


def print_dry_run(run: Any) -> None:
    """Print dry_run_plan(run) for a person to read; with a `hydra/launcher=...` override (e.g.
    hydra/launcher=slurm) also the job script that `-m` would submit."""
    plan = dry_run_plan(run)
    print(f"dry run of {plan['recipe']} (nothing is created or started)")
    print(f"hardware: {json.dumps(plan['hardware'], indent=2, default=str)}")
    batch = plan["global_batch"]
    print(
        f"global batch: {batch['processes']} processes x batch_size {batch['batch_size']} x "
        f"grad_accum {batch['grad_accum']} = {batch['examples_per_step']} examples per step"
    )
    print(f"run directory: {plan['run_dir']}")
    if plan["command"] is None:
        print("launch: in-process (one process), no launcher")
        return
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan["env"].items())
    print(f"launch ({RUN_DIR_PLACEHOLDER} = the run directory, which holds config.yaml):")
    print(f"  {env} {shlex.join(plan['command'])}")
    if "nodes" in plan:
        print(f"multi-node: {plan['nodes']}")
    launcher = next(
        (o.split("=", 1)[1] for o in run.origin.overrides if o.startswith("hydra/launcher=")),
        None,
    )
    if launcher:
        print(
            f"\nwith -m, hydra/launcher={launcher} would submit (one task per node, each "
            f"running the launch above):"
        )
        print(submission_script(run.origin.recipe, list(run.origin.overrides)))


def submission_script(recipe: Any, overrides: list[str]) -> str:
    """The job script `ft train RECIPE -m hydra/launcher=slurm OVERRIDES` would submit (the
    launcher preset resolved against this run's config: nodes and GPUs follow `hardware`)."""
    from omegaconf import OmegaConf

    kept = [o for o in overrides if override_key(o) != "dry_run"]
    cfg = hydra_compose(read_recipe(recipe), hydra_overrides(kept))
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
        return f"(hydra/launcher is {launcher.get('_target_')}: no job script to show)"
    folder = Path(str(launcher["submitit_folder"])).expanduser().absolute()  # as submitit does
    return sbatch_script(launcher, str(folder))
