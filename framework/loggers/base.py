"""Loggers: metrics.jsonl is always written; a logger preset may add an Accelerate tracker."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional

from framework.params import GroupParams


@dataclass(kw_only=True)
class LoggerParams(GroupParams):
    project: Optional[str] = None  # tracker project name (default: the recipe)


class Logger:
    """Base class of a registered logger."""

    Params: ClassVar[type] = LoggerParams
    tracker: ClassVar[Optional[str]] = None  # accelerate `log_with` name
    package: ClassVar[Optional[str]] = None  # import name the tracker needs
    summary: ClassVar[str] = ""

    @classmethod
    def problems(cls, params: Any) -> List[str]:
        if cls.package and importlib.util.find_spec(cls.package) is None:
            return [f"logger={cls.registry_name}: needs the '{cls.package}' package "  # type: ignore
                    f"(pip install {cls.package}), or use logger=jsonl"]
        return []
