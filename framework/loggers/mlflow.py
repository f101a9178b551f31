"""MLflow: a local file store in RUN_DIR/mlruns by default (read it with `mlflow ui
--backend-store-uri RUN_DIR/mlruns`), or any tracking URI; through Accelerate's tracker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.core.registry import LOGGERS
from framework.loggers.base import Logger, LoggerParams
from framework.store.run_dir import MLFLOW_DIR


@dataclass(kw_only=True)
class MlflowParams(LoggerParams):
    tracking_uri: str | None = None  # null: file store RUN_DIR/mlruns; or http://..., sqlite:///...
    run_name: str | None = None  # default: the run directory's name


@LOGGERS.register("mlflow")
class Mlflow(Logger):
    Params = MlflowParams
    tracker = "mlflow"
    package = "mlflow"
    summary = "metrics.jsonl plus an MLflow run (file store in RUN_DIR/mlruns, or tracking_uri)"

    @classmethod
    def prepare(cls, params: Any, run_dir: Path) -> None:
        import mlflow

        if params.tracking_uri is None:
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a local,
            # dependency-free store inside the run directory is what a default run needs.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(params.tracking_uri or (run_dir / MLFLOW_DIR).resolve().as_uri())

    @classmethod
    def init_kwargs(cls, params: Any, run_dir: Path) -> dict[str, Any]:
        return {"run_name": params.run_name or run_dir.name}

    @classmethod
    def log_summary(cls, tracker: Any, summary: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_dict(summary, "summary.json")

    @classmethod
    def log_adapter(cls, tracker: Any, adapter_dir: Path, name: str) -> None:
        tracker.log_artifacts(str(adapter_dir), artifact_path=name)
