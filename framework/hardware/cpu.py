"""CPU: fp32, one process (or several with gloo through the ddp profile)."""

from __future__ import annotations

from framework.core.registry import HARDWARE
from framework.hardware.base import HardwareProfile


@HARDWARE.register("cpu")
class Cpu(HardwareProfile):
    summary = "CPU, fp32"
