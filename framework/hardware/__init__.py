"""Hardware profiles; importing this package registers them all."""

from framework.hardware import cpu, ddp, device_map, fsdp, gpu, zero  # noqa: F401
