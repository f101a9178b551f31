"""Hardware profiles; importing this package registers them all."""

from framework.hardware import cpu, gpu  # noqa: F401
