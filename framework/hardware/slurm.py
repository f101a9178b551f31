"""Multi-node runs under SLURM: one `accelerate launch` per node, each told its node rank and the
address of node 0 by SLURM itself.

The job is submitted by Hydra's submitit launcher (`ft train RECIPE -m hydra/launcher=slurm`,
conf/hydra/launcher/slurm.yaml) with one task per node; each task runs ft's usual launch, whose
`--machine_rank` and `--main_process_ip` come from here. Nothing in this module imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from framework.core.errors import UserError


def in_slurm_job(env: Mapping[str, str] | None = None) -> bool:
    """True inside a SLURM allocation's task (srun sets SLURM_NODEID and SLURM_JOB_NODELIST)."""
    env = os.environ if env is None else env
    return bool(
        env.get("SLURM_JOB_ID")
        and env.get("SLURM_NODEID") is not None
        and env.get("SLURM_JOB_NODELIST")
    )


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list ('gpu[07-08],cpu3') as host names, in SLURM's order."""
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(nodelist)


def machine_settings(params: Any, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(machine_rank, main_process_ip) for this node. Inside a multi-node SLURM job they come
    from SLURM (SLURM_NODEID, first host of SLURM_JOB_NODELIST), so one config serves every
    node; elsewhere from hardware.machine_rank / hardware.main_process_ip."""
    env = os.environ if env is None else env
    if params.num_machines <= 1 or not in_slurm_job(env):
        return params.machine_rank, params.main_process_ip
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    if nodes != params.num_machines:
        raise UserError(
            f"hardware.num_machines={params.num_machines}, but this SLURM job has "
            f"{nodes} node(s); set hardware.num_machines={nodes} (the slurm launcher "
            f"preset asks for hardware.num_machines nodes)"
        )
    if int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1) != 1:
        raise UserError(
            "hydra.launcher.tasks_per_node must be 1: each node runs one "
            "`accelerate launch`, which starts hardware.num_processes ranks itself"
        )
    return int(env["SLURM_NODEID"]), expand_nodelist(env["SLURM_JOB_NODELIST"])[0]


def sbatch_parameters(launcher: Mapping[str, Any]) -> dict[str, Any]:
    """The submitit executor parameters Hydra's submitit launcher derives from a resolved
    `hydra.launcher` mapping (same key mapping as hydra_submitit_launcher)."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"_target_", "submitit_folder", "max_num_timeout"}
    return {
        key if key in base else f"slurm_{key}": value
        for key, value in launcher.items()
        if key not in skip
    }


def sbatch_script(launcher: Mapping[str, Any], folder: str) -> str:
    """The sbatch file submitit would submit for these launcher settings (for dry runs and tests;
    nothing is submitted). The job command is submitit's own `python -m submitit.core._submit`."""
    import shlex
    import sys

    from submitit.slurm import slurm

    generic = sbatch_parameters(launcher)
    # submitit's AutoExecutor renames generic keys (timeout_min -> time, ...) and drops the
    # slurm_ prefix; do the same here without needing `srun` on this machine.
    params: dict[str, Any] = {}
    equivalence = slurm.SlurmExecutor._equivalence_dict()
    for key, value in generic.items():
        if key.startswith("slurm_"):
            params[key[len("slurm_") :]] = value
        elif key in equivalence:
            params[equivalence[key]] = value
        else:
            params[key] = value
    if "mem" in params and params["mem"] is not None:
        params["mem"] = slurm._convert_mem(params["mem"])
    params = {
        k: v for k, v in params.items() if k in slurm._get_default_parameters() and v is not None
    }
    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(folder)]
    )
    return slurm._make_sbatch_string(command=command, folder=folder, **params)
