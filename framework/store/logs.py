"""Logging for people: INFO to stderr and, while a run executes, to its train.log, with secrets
redacted on the way out. Libraries that log every file they touch are turned down to warnings."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from framework.store.redaction import redact_text
from framework.store.run_dir import TRAIN_LOG

# Loggers whose INFO lines describe library internals, not the run (Accelerate writes one line per
# file it saves in a checkpoint).
QUIET_LOGGERS = (
    "datasets",
    "httpx",
    "urllib3",
    "filelock",
    "huggingface_hub",
    "accelerate",
    "accelerate.checkpointing",
    "accelerate.accelerator",
    "torch.distributed",
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (tests and tools swap it), not the one at setup."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = ()
        return True


def _redacting(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(_Redact())
    return handler


def configure_logging() -> None:
    """INFO logs to stderr, with secrets redacted (idempotent)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_redacting(_StderrHandler()))
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # peft calls this transformers API on every run; the user cannot act on the deprecation.
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning
    )


class run_log:
    """Also log to RUN_DIR/train.log while a run executes (removed afterwards, so that later
    runs in the same process do not write into this run's log)."""

    def __init__(self, run_dir: Path):
        self.handler = _redacting(logging.FileHandler(Path(run_dir) / TRAIN_LOG))

    def __enter__(self) -> run_log:
        configure_logging()
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
