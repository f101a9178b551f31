"""Weights & Biases, offline by default: the run is written to RUN_DIR/wandb/offline-run-*/ and
uploaded later with `wandb sync` (mode: online sends it at once). Through Accelerate's tracker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from framework.core.registry import LOGGERS
from framework.loggers.base import Logger, LoggerParams
from framework.store.run_dir import WANDB_DIR

# Where W&B stages artifact files (for `wandb sync` of an offline run): inside the run directory,
# unless the user chose a place before ft started.
_USER_DATA_DIR = "WANDB_DATA_DIR" in os.environ


@dataclass(kw_only=True)
class WandbParams(LoggerParams):
    mode: Literal["offline", "online", "disabled"] = "offline"
    entity: str | None = None  # W&B team or user (online mode)
    run_name: str | None = None  # default: the run directory's name


@LOGGERS.register("wandb")
class Wandb(Logger):
    Params = WandbParams
    tracker = "wandb"
    package = "wandb"
    summary = "metrics.jsonl plus a W&B run (offline in RUN_DIR/wandb unless mode=online)"

    @classmethod
    def prepare(cls, params: Any, run_dir: Path) -> None:
        if not _USER_DATA_DIR:
            os.environ["WANDB_DATA_DIR"] = str(run_dir / WANDB_DIR)

    @classmethod
    def init_kwargs(cls, params: Any, run_dir: Path) -> dict[str, Any]:
        import wandb

        # No command line, environment, git state, code or machine details: the command line
        # may hold a token, and the config logged instead is the redacted one.
        settings = wandb.Settings(
            disable_code=True,
            save_code=False,
            disable_git=True,
            x_disable_meta=True,
            x_disable_stats=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
            console="off",
            silent=True,
        )
        # W&B writes into dir/wandb (= RUN_DIR/WANDB_DIR).
        return {
            "mode": params.mode,
            "entity": params.entity,
            "dir": str(run_dir),
            "name": params.run_name or run_dir.name,
            "settings": settings,
        }

    @classmethod
    def log_summary(cls, tracker: Any, summary: dict[str, Any]) -> None:
        tracker.run.summary.update({"ft_summary": summary})

    @classmethod
    def log_adapter(cls, tracker: Any, adapter_dir: Path, name: str) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="model")
        artifact.add_dir(str(adapter_dir))
        tracker.run.log_artifact(artifact)
