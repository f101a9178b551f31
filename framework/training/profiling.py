"""train.profile=true: a torch-profiler trace of a few optimizer steps, written into the run
directory (profile/trace.json, open it in chrome://tracing or Perfetto), and the top-10 operators
by their own time printed to the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from framework.store.run_dir import PROFILE_DIR

log = logging.getLogger("ft")

WAIT, WARMUP, ACTIVE = 1, 1, 3  # optimizer steps: skipped, profiled but dropped, recorded


class StepProfiler:
    """Call step() after each optimizer step; does nothing unless enabled (main process only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.profiler: Any = None
        self.directory = Path(run_dir) / PROFILE_DIR
        if not enabled:
            return
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.cuda = torch.cuda.is_available()
        self.profiler = profile(
            activities=activities,
            record_shapes=False,
            schedule=schedule(wait=WAIT, warmup=WARMUP, active=ACTIVE, repeat=1),
            on_trace_ready=self._ready,
        )
        self.profiler.start()

    def _ready(self, prof: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        trace = self.directory / "trace.json"
        prof.export_chrome_trace(str(trace))
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=10)
        (self.directory / "top_ops.txt").write_text(table)
        log.info(
            "train.profile: %d steps traced in %s; top-10 operators by own time:\n%s",
            ACTIVE,
            trace,
            table,
        )

    def step(self) -> None:
        if self.profiler is None:
            return
        self.profiler.step()
        if self.profiler.step_num >= WAIT + WARMUP + ACTIVE:
            self.stop()

    def stop(self) -> None:
        """End profiling (early when the run has fewer steps than the schedule)."""
        if self.profiler is not None:
            self.profiler.stop()
            self.profiler = None
