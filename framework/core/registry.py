"""Registries: the closed allowlist that maps a preset's ``name`` to the code that builds it.

YAML never names import paths for ft's own pieces; it names an entry here. Each entry is a class
with a ``Params`` dataclass (the typed schema of its preset) and the methods that build it.
Modules that register entries must not import torch at import time, so that validation stays fast.
This module imports nothing from ft but its errors: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from framework.core.errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named, closed set of entries of one kind (models, peft methods, tasks, hardware, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@PEFT_METHODS.register("lora")``. Names are unique."""

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if not hasattr(entry, "Params"):
                raise TypeError(f"{self.kind} '{name}' must define a Params dataclass")
            entry.registry_name = name  # type: ignore[attr-defined]
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str, key: str = "name") -> T:
        """Return the entry, or raise a UserError naming the key, the value and the choices."""
        if name not in self._entries:
            raise UserError(
                f"{key}: unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}. "
                f"Choose one of: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# The registries. Entries register themselves when their module is imported
# (framework.core.plugins.load_all imports every plug-in module).
MODELS: Registry = Registry("model family")
PEFT_METHODS: Registry = Registry("peft method")
TASKS: Registry = Registry("task")
HARDWARE: Registry = Registry("hardware profile")
DATASETS: Registry = Registry("built-in dataset")
LOGGERS: Registry = Registry("logger")
OBJECTIVES: Registry = Registry("objective")  # what a run optimises (framework/objectives)
