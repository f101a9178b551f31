"""Load the plug-ins: import every module of the plug-in packages so that their entries register
themselves. A new model family, PEFT method, task, hardware profile, data source, logger or objective is a
module dropped into its package (plus a preset YAML); nothing here lists them by name.

Modules are found with pkgutil on each package's __path__ (one level; a sub-package would hold
helpers, not entries). No plug-in module imports torch at import time.
"""

from __future__ import annotations

import importlib
import pkgutil

PLUGIN_PACKAGES = (
    "framework.models",
    "framework.peft",
    "framework.tasks",
    "framework.hardware",
    "framework.data",
    "framework.loggers",
    "framework.objectives",
)


def load_all() -> None:
    """Import every plug-in module (already imported ones cost a sys.modules lookup)."""
    for package_name in PLUGIN_PACKAGES:
        package = importlib.import_module(package_name)
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.ispkg:
                importlib.import_module(f"{package_name}.{module.name}")
