"""The six tasks' own objective: the task's loss (cross-entropy over label tokens, classes or
spans; MSE for regression), unchanged. The default when a recipe names no objective."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from framework.core.registry import OBJECTIVES
from framework.objectives.base import TASK_EXAMPLES, Objective, ObjectiveContext


@OBJECTIVES.register("cross_entropy")
class CrossEntropy(Objective):
    data_kind = TASK_EXAMPLES
    summary = "the task's own loss (SFT and the six task types); the default"

    @classmethod
    def judged_by(cls, task: Any) -> tuple[str, bool]:
        return task.primary_metric, bool(task.greater_is_better)  # the task's own metric

    def count_items(self, batch: dict[str, Any]) -> Any:
        return self.task.count_items(batch)

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        total, items = self.task.loss_terms(context.model, batch)
        return total, items, {}

    def evaluate(
        self, context: ObjectiveContext, loader: Iterable, raw: Any | None = None
    ) -> dict[str, float]:
        return self.task.evaluate(context.model, loader, context.accelerator, raw=raw)
