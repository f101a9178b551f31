"""TensorBoard event files in RUN_DIR/tensorboard/<project>/, through Accelerate's tracker."""

from __future__ import annotations

import json
from typing import Any

from framework.core.registry import LOGGERS
from framework.loggers.base import Logger


@LOGGERS.register("tensorboard")
class Tensorboard(Logger):
    tracker = "tensorboard"
    package = "tensorboard"
    summary = "metrics.jsonl plus TensorBoard event files in RUN_DIR/tensorboard"

    @classmethod
    def log_summary(cls, tracker: Any, summary: dict[str, Any]) -> None:
        """The summary as a text entry (TensorBoard has no artifacts)."""
        tracker.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```")
        tracker.writer.flush()
