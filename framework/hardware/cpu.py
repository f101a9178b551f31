"""CPU: fp32, one process (or several with gloo through the ddp profile)."""

from __future__ import annotations

from framework.hardware.base import HardwareProfile
from framework.core.registry import HARDWARE


@HARDWARE.register("cpu")
class Cpu(HardwareProfile):
    summary = "CPU, fp32"
