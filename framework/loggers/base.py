"""Loggers: metrics.jsonl is always written; each logger preset may add an experiment tracker
(TensorBoard, MLflow, W&B) through Accelerate's tracker integrations. Several can be active at
once: `logger=[tensorboard,mlflow]` composes both presets, each under its own key
(`logger.mlflow.tracking_uri=...`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from framework.core.params import GroupParams

TRACKERS_EXTRA = "trackers"  # the ft-peft extra that installs every tracker library


@dataclass(kw_only=True)
class LoggerParams(GroupParams):
    project: str | None = None  # tracker project / experiment name (default: the recipe)


class Logger:
    """Base class of a registered logger. A tracker logger names its Accelerate tracker
    (`tracker`), the module it needs (`package`), and may add per-tracker hooks below."""

    Params: ClassVar[type] = LoggerParams
    tracker: ClassVar[str | None] = None  # accelerate `log_with` name
    package: ClassVar[str | None] = None  # import name the tracker needs
    summary: ClassVar[str] = ""

    @classmethod
    def problems(cls, params: LoggerParams) -> list[str]:
        """A missing tracker library is reported at validation, before any model is loaded."""
        if cls.package and importlib.util.find_spec(cls.package) is None:
            name = cls.registry_name  # type: ignore[attr-defined]
            return [
                f"logger={name}: the '{cls.package}' library is not installed; install the "
                f"trackers extra (pip install 'ft-peft[{TRACKERS_EXTRA}]'), or drop "
                f"{name} from logger="
            ]
        return []

    @classmethod
    def prepare(cls, params: LoggerParams, run_dir: Path) -> None:
        """Process-level set-up before the tracker starts (e.g. MLflow's tracking URI)."""

    @classmethod
    def init_kwargs(cls, params: LoggerParams, run_dir: Path) -> dict[str, Any]:
        """Keyword arguments of Accelerate's tracker class (its `init_kwargs` entry)."""
        return {}

    @classmethod
    def log_summary(cls, tracker: Any, summary: dict[str, Any]) -> None:
        """Record the run's final summary.json in the tracker's own summary form."""

    @classmethod
    def log_adapter(cls, tracker: Any, adapter_dir: Path, name: str) -> None:
        """Upload the adapter directory as an artifact, where the tracker has artifacts."""
