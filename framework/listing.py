"""`ft list`: config groups with their presets, recipes, and what each registry entry offers."""

from __future__ import annotations

from typing import Optional

from framework.config.compose import CONF_DIR, group_presets, recipe_groups, recipe_names
from framework.errors import UserError, did_you_mean
from framework.plugins import load_all
from framework.registry import DATASETS, HARDWARE, LOGGERS, MODELS, PEFT_METHODS, TASKS

REGISTRY_OF_GROUP = {"model": MODELS, "peft": PEFT_METHODS, "task": TASKS, "hardware": HARDWARE,
                     "data": DATASETS, "logger": LOGGERS}


def _preset_entry(group: str, preset: str) -> str:
    """The registry name a preset file selects (its `name` key; '' if none)."""
    import yaml

    node = yaml.safe_load((CONF_DIR / group / f"{preset}.yaml").read_text()) or {}
    return str(node.get("name", ""))


def _preset_line(group: str, preset: str) -> str:
    name = _preset_entry(group, preset)
    return f"  {preset:<22} -> {name}" if name else f"  {preset}"


def serves(family: str, task: str) -> bool:
    """Whether a model family can serve a task (families list only what they cannot)."""
    return MODELS.get(family).unsupported(task) is None


def _peft_line(name: str, entry: type, task: Optional[str]) -> Optional[str]:
    """One method: with a task, the model families it works with for that task (None if none)."""
    merge = "merges" if entry.can_merge else "no merge"
    gpu = "; CUDA only" if entry.needs_cuda else ""
    if task:
        families = [f for f in MODELS.names()
                    if serves(f, task) and entry.incompatibility(task, f) is None]
        if not families:
            return None
        return f"    {name:<16} families: {', '.join(families)}; {merge}{gpu}. {entry.summary}"
    usable = [t for t in TASKS.names() if any(
        serves(f, t) and entry.incompatibility(t, f) is None for f in MODELS.names())]
    tasks = "all" if len(usable) == len(TASKS.names()) else ", ".join(usable)
    fams = ", ".join(sorted(entry.families)) if entry.families else "all"
    holes = " (some task/family pairs excluded: see --task)" if entry.exclusions else ""
    return f"    {name:<16} tasks: {tasks}; families: {fams}{holes}; {merge}{gpu}. {entry.summary}"


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
        presets = group_presets(name)
        if name == "peft" and task:  # only the presets whose method can serve the task
            presets = [p for p in presets if _preset_entry(name, p) in PEFT_METHODS
                       and _peft_line("", PEFT_METHODS.get(_preset_entry(name, p)), task)]
            print(f"\n[{name}] presets usable with task={task} (-> registry name):")
        else:
            print(f"\n[{name}] presets (-> registry name):")
        for preset in presets:
            print(_preset_line(name, preset))
        registry = REGISTRY_OF_GROUP.get(name)
        if registry is None:
            continue
        print(f"  registered ({registry.kind}):")
        for entry_name in registry.names():
            entry = registry.get(entry_name)
            if name == "peft":
                line = _peft_line(entry_name, entry, task)
                if line:
                    print(line)
            elif name == "model":
                tasks = [t for t in TASKS.names() if serves(entry_name, t)]
                print(f"    {entry_name:<16} tasks: {', '.join(tasks)}")
            else:
                print(f"    {entry_name:<16} {getattr(entry, 'summary', '')}")
