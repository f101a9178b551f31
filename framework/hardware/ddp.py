"""DDP: N processes per machine, each with a full copy of the model; gradients are all-reduced.
NCCL between GPUs, gloo between CPU processes (hardware.device=cpu)."""

from __future__ import annotations

from typing import Any

from framework.core.registry import HARDWARE
from framework.hardware.base import DistributedParams, HardwareProfile, MemoryLayout


@HARDWARE.register("ddp")
class Ddp(HardwareProfile):
    Params = DistributedParams
    uses_gpu = True
    summary = "N processes (DistributedDataParallel): NCCL on GPUs, gloo with device=cpu"

    @classmethod
    def problems(cls, params: Any, run: Any) -> list[str]:
        return super().problems(params, run) + cls.device_count_problems(params, run)

    @classmethod
    def memory_layout(cls, params: Any, train: Any) -> MemoryLayout:
        # DDP's reducer copies gradients into its all-reduce buckets: one more gradient-sized buffer.
        return MemoryLayout(gradient_copies=1 if cls.world_size(params) > 1 else 0)
