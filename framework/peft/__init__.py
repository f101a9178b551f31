"""PEFT methods; importing this package registers them all."""

from framework.peft import lora  # noqa: F401
