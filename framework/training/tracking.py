"""The run's experiment trackers (the `logger` group's TensorBoard / MLflow / W&B entries), driven
through Accelerate's tracker integrations: started with the flattened, redacted config as
parameters; sent train and eval metrics with their step; closed with the summary and the adapter.
All of it happens on the main process only (Accelerate's trackers are main-process objects)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from framework.store.redaction import redact
from framework.store.run_dir import TENSORBOARD_DIR

log = logging.getLogger("ft")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}; lists and None become strings (what
    every tracker accepts as a parameter value)."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    value = node if isinstance(node, (bool, int, float, str)) else str(node)
    return {prefix[:-1]: value}


def tracker_names(run: Any) -> list[str]:
    """Accelerate `log_with` names of the run's loggers (empty: metrics.jsonl only)."""
    return [entry.tracker for entry in run.plugins.loggers.values() if entry.tracker]


def logging_dir(run_dir: Path) -> Path:
    """Accelerate's logging dir: TensorBoard writes RUN_DIR/tensorboard/<project>/."""
    return Path(run_dir) / TENSORBOARD_DIR


class Trackers:
    """The active trackers of one run (a no-op when the run has none)."""

    def __init__(self, run: Any, run_dir: Path, accelerator: Any):
        self.accelerator = accelerator
        self.run_dir = Path(run_dir)
        self.entries: list[tuple[Any, Any]] = [
            (run.plugins.loggers[name], params)
            for name, params in run.logger.items()
            if run.plugins.loggers[name].tracker
        ]
        self.project = next((p.project for _, p in self.entries if p.project), run.recipe)
        self.config = flatten(redact(run.raw))

    @property
    def active(self) -> bool:
        return bool(self.entries)

    def start(self) -> None:
        """init_trackers with the redacted, flattened config as the run's parameters."""
        if not self.active:
            return
        init_kwargs = {}
        for entry, params in self.entries:
            if self.accelerator.is_main_process:
                entry.prepare(params, self.run_dir)
                init_kwargs[entry.tracker] = entry.init_kwargs(params, self.run_dir)
        self.accelerator.init_trackers(self.project, config=self.config, init_kwargs=init_kwargs)

    def log(self, split: str, record: dict[str, Any], step: int) -> None:
        """Numeric values of a metrics record as `split/key` at this optimizer step."""
        if not self.active:
            return
        values = {
            f"{split}/{k}": v
            for k, v in record.items()
            if k not in ("step", "split")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        self.accelerator.log(values, step=step)

    def finish(self, summary: dict[str, Any], adapters: dict[str, Path], step: int) -> None:
        """The final metrics and summary, the adapter(s) as artifacts, then close every tracker
        (Accelerate's end_training, which the caller makes)."""
        if not self.active or not self.accelerator.is_main_process:
            return
        self.log("final", summary.get("final", {}), step)
        for entry, _ in self.entries:
            tracker = self.accelerator.get_tracker(entry.tracker, unwrap=False)
            entry.log_summary(tracker, summary)
            for name, path in adapters.items():
                if path.is_dir():
                    entry.log_adapter(tracker, path, name)
        log.info("trackers: %s", ", ".join(f"{e.registry_name}" for e, _ in self.entries))
