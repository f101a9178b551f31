"""TensorBoard event files in the run directory, through Accelerate's tracker."""

from __future__ import annotations

from framework.loggers.base import Logger
from framework.registry import LOGGERS


@LOGGERS.register("tensorboard")
class Tensorboard(Logger):
    tracker = "tensorboard"
    package = "tensorboard"
    summary = "metrics.jsonl plus TensorBoard event files in the run directory"
