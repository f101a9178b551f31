"""ft's own sweep settings and what a trial's config is known by: `sweep.fail_fast` and
`sweep.conditional` (never part of a run's config), conditional keys dropped where a preset lacks
them, the config hash that finds a completed trial again, and the task's objective."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from framework.core.errors import UserError

# Keys that say where or how a run is stored, not what it computes: left out of the config hash.
NOT_HASHED = (
    "run_dir",
    "overwrite",
    "overwrite_old_run",
    "allow_nonempty_run_dir",
    "output_root",
    "resume",
    "dry_run",
    "sweep",
)


SWEEP_OPTIONS = ("fail_fast", "conditional")  # sweep.<key>=value (not part of any run's config)


@dataclass
class SweepOptions:
    """ft's own sweep settings, from the command line (`sweep.fail_fast=true`) or the `sweep:`
    node of an hparams_search preset; they are not part of any run's config."""

    fail_fast: bool = False
    # Method-dependent dimensions: keys such as peft.r that a trial keeps only when its chosen
    # preset's schema has them (rank for LoRA-like methods); elsewhere the key is dropped, and
    # the trials that then coincide run once (the others are skipped by config hash).
    conditional: list[str] = field(default_factory=list)

    def merge(self, node: Any) -> None:
        """Take the settings of a preset's `sweep:` node (the command line's stay)."""
        if not isinstance(node, dict):
            return
        unknown = sorted(set(node) - set(SWEEP_OPTIONS))
        if unknown:
            raise UserError(
                f"sweep.{unknown[0]}: unknown sweep option; valid: "
                f"{', '.join('sweep.' + k for k in SWEEP_OPTIONS)}"
            )
        self.fail_fast = self.fail_fast or bool(node.get("fail_fast", False))
        self.conditional = sorted(set(self.conditional) | set(node.get("conditional") or []))


def split_sweep_options(overrides: list[str]) -> tuple[SweepOptions, list[str]]:
    """Take `sweep.<key>=value` overrides out of the command line (they configure the sweep, not
    the runs) and return (options, the other overrides)."""
    options, rest = SweepOptions(), []
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if not key.startswith("sweep."):
            rest.append(override)
            continue
        name = key[len("sweep.") :]
        if name not in SWEEP_OPTIONS:
            raise UserError(
                f"{key}: unknown sweep option; valid: "
                f"{', '.join('sweep.' + k for k in SWEEP_OPTIONS)}"
            )
        if name == "conditional":
            options.conditional = [k.strip() for k in value.strip("[]").split(",") if k.strip()]
        elif value.lower() not in ("true", "false"):
            raise UserError(f"{key}={value}: must be true or false")
        else:
            options.fail_fast = value.lower() == "true"
    return options, rest


def drop_undefined(node: dict[str, Any], keys: list[str]) -> list[str]:
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


def config_hash(node: dict[str, Any]) -> str:
    """A hash of a trial's resolved config, without the keys that only say where it is stored:
    the same trial re-run into another directory has the same hash."""
    kept = {k: v for k, v in node.items() if k not in NOT_HASHED}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def task_objective(run: Any) -> tuple[str, bool]:
    """(primary metric, greater is better) of a run: the task's, as its Task class declares them,
    unless the objective judges by its own (a preference objective's accuracy)."""
    cls = run.plugins.task_class
    judged_by = run.plugins.objective.judged_by
    try:  # some tasks pick the metric from their params (seq_cls multi_label, seq2seq)
        return judged_by(cls(run.task, run.data, None, None))
    except Exception:  # a task that needs its tokenizer to be built: the class's declaration
        return judged_by(cls)
