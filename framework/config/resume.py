"""Resuming: which run directory and checkpoint a `resume=...` run continues, and the refusal to
resume with a config that changed what the checkpoint holds. Checked before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from framework.config.compose import Composed, compose_recipe, override_key
from framework.config.schema import (
    ALL_GROUPS,
    RunConfig,
    load_run_file,
    upgrade_saved,
)
from framework.core.errors import UserError
from framework.store.checkpoint import (
    base_fingerprint,
    check_base,
    checkpoint_config,
    find_resume_checkpoint,
    latest_checkpoint,
    run_dir_of_checkpoint,
)
from framework.store.redaction import REDACTED
from framework.store.run_dir import CONFIG_FILE, is_run_dir, resume_configs

# Settings that change what a resumed run computes from its checkpoint on: a change needs
# resume_allow_changes=[key, ...] (a prefix such as `data` allows everything under it).
TRAJECTORY_KEYS = (
    "seed",
    "model",
    "peft",
    "task",
    "data",
    "train.lr",
    "train.batch_size",
    "train.grad_accum",
    "train.max_steps",
    "train.epochs",
    "train.optimizer",
    "train.scheduler",
    "train.warmup_ratio",
    "train.weight_decay",
    "train.max_grad_norm",
)
_ABSENT = object()  # a key missing from one of two flattened configs
# Keys about this invocation, never taken from the run being resumed.
INVOCATION_KEYS = (
    "resume",
    "run_dir",
    "overwrite",
    "overwrite_old_run",
    "allow_nonempty_run_dir",
    "dry_run",
    "resume_allow_changes",
)


class ResumeTarget(NamedTuple):
    run_dir: Path  # the run being continued (its config.yaml is never overwritten)
    checkpoint: Path  # the complete checkpoint-* directory to load


def fingerprint(run: RunConfig) -> dict[str, Any]:
    """What a checkpoint's optimizer and weights depend on: changing any of it breaks resume.
    The hardware profile says what of its own must match (world size, ZeRO stage, ...)."""
    profile = run.plugins.profile
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


def resume_mismatches(saved: RunConfig, current: RunConfig) -> list[str]:
    """Differences between a checkpoint's RunConfig and the RunConfig resuming it."""
    before, after = fingerprint(saved), fingerprint(current)
    return [
        f"{key}: checkpoint has {before.get(key)!r}, this run has {after.get(key)!r}"
        for key in sorted(set(before) | set(after), key=list({**before, **after}).index)
        if before.get(key) != after.get(key)
    ]


def _resumed_run_dir(run: Any) -> Path:
    """resume=PATH: that checkpoint's run; resume=auto: run_dir, or the recipe's newest run with a
    complete checkpoint."""
    if run.resume is not None and run.resume != "auto":
        path = Path(run.resume).expanduser().resolve()
        return run_dir_of_checkpoint(path) if path.name.startswith("checkpoint-") else path.parent
    if run.run_dir:
        return Path(run.run_dir).expanduser().resolve()
    base = Path(run.output_root).expanduser().resolve() / run.recipe
    runs = sorted(
        (p for p in base.glob("*") if p.is_dir() and latest_checkpoint(p)),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise UserError(
            f"resume=auto: no run of recipe '{run.recipe}' under {base} has a complete "
            f"checkpoint. Pass run_dir=PATH, or train without resume"
        )
    return runs[-1]


def resume_target(run: RunConfig) -> ResumeTarget | None:
    """The run directory and checkpoint a run continues (None without `resume`). Refuses, before
    any model is loaded, a config that changed what the checkpoint holds (a silently reset
    optimizer or a mismatched adapter is never acceptable) and a base model whose files differ
    from the one the checkpoint's trained weights belong to."""
    if run.resume is None:
        return None
    run_dir = _resumed_run_dir(run)
    if not is_run_dir(run_dir):
        raise UserError(f"resume={run.resume}: {run_dir} is not an ft run directory")
    checkpoint = find_resume_checkpoint(run.resume, run_dir)
    mismatches = resume_mismatches(load_run_file(checkpoint_config(checkpoint)), run)
    if mismatches:
        raise UserError(
            f"resume={run.resume}: the config changed since {checkpoint}; resuming would "
            f"reset or corrupt its state. Start a new run, or undo these changes:",
            mismatches,
        )
    check_base(checkpoint, current_base(run), run.model.checkpoint or run.model.name)
    return ResumeTarget(run_dir, checkpoint)


def current_base(run: RunConfig) -> dict[str, Any]:
    """The fingerprint of the base this run would load (store.checkpoint.base_fingerprint)."""
    from framework.models.loading import resolve_checkpoint

    return base_fingerprint(resolve_checkpoint(run.plugins.family, run.model), run.model.revision)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.1, ...}: mappings are walked, anything else (lists too) is a leaf."""
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _matches(key: str, prefixes: Any) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def saved_config_path(run_dir: Path) -> Path:
    """The config a run last ran with: its newest resume's, else the one it started with."""
    resumes = resume_configs(run_dir)
    return resumes[-1] if resumes else run_dir / CONFIG_FILE


def continue_saved_config(composed: Composed) -> Composed:
    """A `resume=...` run continues the run directory's saved config, not the recipe's current
    defaults: only the overrides given now are applied on top. A change to a setting that alters
    the training trajectory (TRAJECTORY_KEYS) must be allowed with resume_allow_changes=[...]."""
    run = _run_settings(composed)
    run_dir = _resumed_run_dir(run)
    saved_path = saved_config_path(run_dir)
    if not saved_path.is_file():
        raise UserError(
            f"resume={run.resume}: {run_dir} is not an ft run directory (no {CONFIG_FILE})"
        )
    saved = _flatten(upgrade_saved(yaml.safe_load(saved_path.read_text()) or {}))
    now = _flatten(composed.config)
    # What the overrides given now change: the recipe composed with and without them.
    own_dirs = [o for o in composed.overrides if o.lstrip("+~").startswith("hydra.")]
    plain = _flatten(compose_recipe(composed.recipe, own_dirs).config)
    given = {k for k in set(now) | set(plain) if now.get(k, _ABSENT) != plain.get(k, _ABSENT)}
    # A key=value given now counts even where it equals the recipe's default.
    explicit = [override_key(o) for o in composed.overrides if "=" in o]
    keys_given = [e for e in explicit if "." in e or e not in ALL_GROUPS]
    given |= {k for k in now if _matches(k, keys_given)}
    merged = {k: v for k, v in saved.items() if not _matches(k, INVOCATION_KEYS)}
    for key in list(merged):  # a redacted secret (a token) comes from this invocation, or none
        if merged[key] == REDACTED:
            if key in now:
                merged[key] = now[key]
            else:
                del merged[key]
    for key in given - set(INVOCATION_KEYS):
        if key in now:
            merged[key] = now[key]
        else:
            merged.pop(key, None)
    merged.update({k: v for k, v in now.items() if _matches(k, INVOCATION_KEYS)})
    allowed = list(run.resume_allow_changes)
    changed = [
        f"{k}: {saved.get(k)!r} -> {merged.get(k)!r}"
        for k in sorted(given)
        if _matches(k, TRAJECTORY_KEYS)
        and not _matches(k, allowed)
        and saved.get(k, _ABSENT) not in (merged.get(k, _ABSENT), REDACTED)
    ]
    if changed:
        keys = ",".join(sorted({c.split(":")[0] for c in changed}))
        raise UserError(
            f"resume={run.resume}: the config changed from the run in {run_dir} "
            f"({saved_path.name}) in settings that alter its training. Leave these "
            f"overrides out to continue it as it was, or allow them with "
            f"resume_allow_changes=[{keys}]:",
            changed,
        )
    return Composed(composed.recipe, _unflatten(merged), composed.overrides, composed.choices)


def _run_settings(composed: Composed) -> Any:
    """The top-level settings (resume, run_dir, output_root, recipe, ...) of a composed config,
    typed: all that finding the run to continue needs, before the whole config is validated."""
    from framework.config.schema import TOP_LEVEL_KEYS, RunSettings
    from framework.config.typecheck import check_dataclass

    problems: list[str] = []
    top = {k: composed.config[k] for k in TOP_LEVEL_KEYS if k in composed.config}
    settings = check_dataclass(RunSettings, top, "", composed.origin, problems)
    if problems:
        raise UserError(f"invalid config ({len(problems)} problems):", problems)
    return settings
