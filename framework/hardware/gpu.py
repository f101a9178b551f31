"""One GPU: bf16 where supported, else fp16 with a loss scaler."""

from __future__ import annotations

from typing import Any

from framework.core.registry import HARDWARE
from framework.hardware.base import HardwareProfile


@HARDWARE.register("gpu")
class Gpu(HardwareProfile):
    uses_gpu = True
    summary = "one GPU, bf16 (fp16 + scaler where bf16 is missing)"

    @classmethod
    def problems(cls, params: Any, run: Any) -> list[str]:
        found = super().problems(params, run)
        if params.num_processes != 1:
            found.append(
                f"hardware.num_processes={params.num_processes}: the gpu profile is one "
                f"device; use hardware=ddp for several"
            )
        return found
