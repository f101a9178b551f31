"""The default logger: metrics.jsonl in the run directory and nothing else."""

from __future__ import annotations

from framework.core.registry import LOGGERS
from framework.loggers.base import Logger


@LOGGERS.register("jsonl")
class Jsonl(Logger):
    summary = "metrics.jsonl in the run directory only"
