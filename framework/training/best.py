"""Best checkpoint and early stopping, judged on the task's primary metric after each evaluation.

`train.keep_best: true` keeps the adapter of the best evaluation in `adapter/` (the last one goes to
`adapter_last/`), and the run reports that evaluation as its result (summary.json's `final`, as
HF Trainer's load_best_model_at_end does); `train.early_stopping_patience: N` stops the run after N evaluations in a row
without an improvement greater than `train.early_stopping_delta` (in the metric's own units).
The state (best value and step, evaluations without improvement) is saved in every checkpoint,
so a resumed run keeps judging against the same best.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("ft")


@dataclass
class BestState:
    """What a checkpoint must carry for keep_best / early stopping to continue after a resume."""

    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None  # the whole evaluation of best_step
    evals_without_improvement: int = 0
    stopped: str | None = None  # why the run stopped early, once it did


class BestKeeper:
    """Judges each evaluation against the best so far; saves the best adapter and decides when to
    stop. Disabled (every method a no-op) unless keep_best or early_stopping_patience is set."""

    def __init__(self, train: Any, metric: str, greater_is_better: bool):
        self.keep = bool(getattr(train, "keep_best", False))
        self.patience = getattr(train, "early_stopping_patience", None)
        self.delta = float(getattr(train, "early_stopping_delta", 0.0))
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.state = BestState()
        self.last_eval: tuple | None = None  # (step, metrics) of the latest evaluation

    @property
    def enabled(self) -> bool:
        return self.keep or self.patience is not None

    def improves(self, value: float) -> bool:
        """Whether `value` beats the best so far by more than early_stopping_delta."""
        if self.state.best_value is None:
            return True
        gain = value - self.state.best_value
        return (gain if self.greater_is_better else -gain) > self.delta

    def observe(self, step: int, metrics: dict[str, float], save_best: Callable[[], None]) -> bool:
        """Judge the evaluation of `step`; call `save_best()` (on every rank) when keep_best and it
        is the new best. Returns True when early stopping says: stop now. An evaluation of a step
        already judged (the final one after an early stop) is not counted twice."""
        if self.last_eval is not None and self.last_eval[0] == step:
            return False
        self.last_eval = (step, dict(metrics))
        if not self.enabled:
            return False
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            # Missing or NaN never counts as an improvement (but still uses up patience).
            value = None
        if value is not None and self.improves(value):
            self.state.best_value, self.state.best_step = float(value), step
            self.state.best_metrics = dict(metrics)
            self.state.evals_without_improvement = 0
            if self.keep:
                save_best()
                log.info("new best %s=%.4f at step %d: adapter saved", self.metric, value, step)
            return False
        self.state.evals_without_improvement += 1
        if self.patience is not None and self.state.evals_without_improvement >= self.patience:
            best = self.state.best_value
            self.state.stopped = (
                f"early stopping at step {step}: {self.metric} did not improve by more than "
                f"{self.delta:g} for {self.patience} evaluation(s) (best "
                f"{'n/a' if best is None else f'{best:.4f}'} at step {self.state.best_step})"
            )
            log.info("%s", self.state.stopped)
            return True
        return False

    def metrics_at(self, step: int) -> dict[str, float] | None:
        """The metrics of an evaluation already made at `step` (so finish() need not repeat it)."""
        if self.last_eval is not None and self.last_eval[0] == step:
            return dict(self.last_eval[1])
        return None

    def reported(self, last_step: int, last: dict[str, float]) -> tuple[str, int, dict[str, float]]:
        """The run's result: the evaluation of the adapter it keeps in adapter/. With keep_best
        and a best evaluation: ("best", its step, its metrics); else ("last", the last step,
        its metrics)."""
        if self.keep and self.state.best_step is not None and self.state.best_metrics is not None:
            return "best", self.state.best_step, dict(self.state.best_metrics)
        return "last", last_step, dict(last)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(
        self, saved: dict[str, Any] | None, evaluations: dict[int, dict[str, float]] | None = None
    ) -> None:
        """Continue from a checkpoint's state; a checkpoint of an older ft holds no best_metrics,
        which are then taken from the run's own evaluations ({step: metrics}) when given."""
        if saved:
            self.state = BestState(**saved)
        step = self.state.best_step
        if self.state.best_metrics is None and step is not None and step in (evaluations or {}):
            self.state.best_metrics = dict((evaluations or {})[step])

    def summary(self) -> dict[str, Any]:
        """summary.json entries: the winning evaluation and why the run stopped early (if it did)."""
        if not self.enabled:
            return {}
        return {
            "best": {
                "metric": self.metric,
                "greater_is_better": self.greater_is_better,
                "step": self.state.best_step,
                "value": self.state.best_value,
            },
            "stopped_early": self.state.stopped,
        }
