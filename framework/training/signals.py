"""SIGTERM/SIGINT during training: ask for a checkpoint at the next step boundary."""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger("ft")


class StopSignals:
    """SIGTERM/SIGINT ask for a checkpoint at the next step boundary; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.requested = signum
        log.warning(
            "%s received: saving a checkpoint at the next step boundary "
            "(Ctrl-C again to abort at once)",
            signal.Signals(signum).name,
        )

    def exit_code(self) -> int:
        """The conventional exit code of a process stopped by the requested signal."""
        return 128 + (self.requested or signal.SIGTERM)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
