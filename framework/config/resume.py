"""Resuming: which run directory and checkpoint a `resume=...` run continues, and the refusal to
resume with a config that changed what the checkpoint holds. Checked before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

from framework.checkpoint import (checkpoint_config, find_resume_checkpoint, latest_checkpoint,
                                  run_dir_of_checkpoint)
from framework.config.schema import RunConfig, load_run_file
from framework.errors import UserError
from framework.registry import HARDWARE
from framework.run_dir import is_run_dir


class ResumeTarget(NamedTuple):
    run_dir: Path  # the run being continued (its config.yaml is never overwritten)
    checkpoint: Path  # the complete checkpoint-* directory to load


def fingerprint(run: RunConfig) -> Dict[str, Any]:
    """What a checkpoint's optimizer and weights depend on: changing any of it breaks resume.
    The hardware profile says what of its own must match (world size, ZeRO stage, ...)."""
    profile = HARDWARE.get(run.hardware.name, key="hardware.name")
    return {
        "peft": asdict(run.peft),
        "model.name": run.model.name,
        "model.checkpoint": run.model.checkpoint,
        "model.random_init": asdict(run.model.random_init) if run.model.random_init else None,
        "task": asdict(run.task),
        **profile.resume_fingerprint(run.hardware, run.train),
        "train.optimizer": run.train.optimizer,
        "train.grad_accum": run.train.grad_accum,
        "train.batch_size": run.train.batch_size,
    }


def resume_mismatches(saved: RunConfig, current: RunConfig) -> List[str]:
    """Differences between a checkpoint's RunConfig and the RunConfig resuming it."""
    before, after = fingerprint(saved), fingerprint(current)
    return [f"{key}: checkpoint has {before.get(key)!r}, this run has {after.get(key)!r}"
            for key in sorted(set(before) | set(after), key=list({**before, **after}).index)
            if before.get(key) != after.get(key)]


def _resumed_run_dir(run: RunConfig) -> Path:
    """resume=PATH: that checkpoint's run; resume=auto: run_dir, or the recipe's newest run with a
    complete checkpoint."""
    if run.resume != "auto":
        path = Path(run.resume).expanduser().resolve()
        return run_dir_of_checkpoint(path) if path.name.startswith("checkpoint-") else path.parent
    if run.run_dir:
        return Path(run.run_dir).expanduser().resolve()
    base = Path(run.output_root).expanduser().resolve() / run.recipe
    runs = sorted((p for p in base.glob("*") if p.is_dir() and latest_checkpoint(p)),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"resume=auto: no run of recipe '{run.recipe}' under {base} has a complete "
                        f"checkpoint. Pass run_dir=PATH, or train without resume")
    return runs[-1]


def resume_target(run: RunConfig) -> Optional[ResumeTarget]:
    """The run directory and checkpoint a run continues (None without `resume`). Refuses, before
    any model is loaded, a config that changed what the checkpoint holds: a silently reset
    optimizer or a mismatched adapter is never acceptable."""
    if run.resume is None:
        return None
    run_dir = _resumed_run_dir(run)
    if not is_run_dir(run_dir):
        raise UserError(f"resume={run.resume}: {run_dir} is not an ft run directory")
    checkpoint = find_resume_checkpoint(run.resume, run_dir)
    mismatches = resume_mismatches(load_run_file(checkpoint_config(checkpoint)), run)
    if mismatches:
        raise UserError(f"resume={run.resume}: the config changed since {checkpoint}; resuming would "
                        f"reset or corrupt its state. Start a new run, or undo these changes:",
                        mismatches)
    return ResumeTarget(run_dir, checkpoint)
