"""`ft list`: config groups with their presets, recipes, and what each registry entry offers."""

from __future__ import annotations

from typing import Optional

from framework.config.compose import CONF_DIR, group_presets, recipe_groups, recipe_names
from framework.errors import UserError, did_you_mean
from framework.registry import DATASETS, HARDWARE, LOGGERS, MODELS, PEFT_METHODS, TASKS, load_all

REGISTRY_OF_GROUP = {"model": MODELS, "peft": PEFT_METHODS, "task": TASKS, "hardware": HARDWARE,
                     "data": DATASETS, "logger": LOGGERS}


def _preset_line(group: str, preset: str) -> str:
    import yaml

    node = yaml.safe_load((CONF_DIR / group / f"{preset}.yaml").read_text()) or {}
    name = node.get("name", "")
    return f"  {preset:<22} -> {name}" if name else f"  {preset}"


def print_listing(group: Optional[str], task: Optional[str] = None) -> None:
    """Print every group (or one) with presets and registry entries."""
    load_all()
    groups = recipe_groups()
    if group in (None, "recipes"):
        print("recipes: " + ", ".join(recipe_names()))
        if group == "recipes":
            return
    if group is not None and group not in groups:
        raise UserError(f"ft list {group}: unknown group{did_you_mean(group, groups + ['recipes'])}"
                        f"; groups: {', '.join(groups)}, recipes")
    if task is not None and task not in TASKS:
        raise UserError(f"--task {task}: unknown task{did_you_mean(task, TASKS.names())}; "
                        f"tasks: {', '.join(TASKS.names())}")
    for name in [group] if group else groups:
        print(f"\n[{name}] presets (-> registry name):")
        for preset in group_presets(name):
            print(_preset_line(name, preset))
        registry = REGISTRY_OF_GROUP.get(name)
        if registry is None:
            continue
        print(f"  registered {registry.kind}s:")
        for entry_name in registry.names():
            entry = registry.get(entry_name)
            if name == "peft":
                if task and entry.incompatibility(task, "llama") and entry.incompatibility(task, "bert"):
                    continue
                tasks = ", ".join(sorted(entry.tasks))
                fams = ", ".join(sorted(entry.families)) if entry.families else "all"
                merge = "merges" if entry.can_merge else "no merge"
                print(f"    {entry_name:<16} tasks: {tasks}; families: {fams}; {merge}. "
                      f"{entry.summary}")
            elif name == "model":
                print(f"    {entry_name:<16} tasks: {', '.join(sorted(entry.tasks))}")
            else:
                print(f"    {entry_name:<16} {getattr(entry, 'summary', '')}")
