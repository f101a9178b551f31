"""`ft list`: config groups with their presets, recipes, and what each registry entry offers; and
the words shell completion offers (`ft --completion bash`)."""

from __future__ import annotations

from framework.config.recipe import group_presets, preset_file, recipe_groups, recipe_names
from framework.core.errors import UserError, did_you_mean
from framework.core.plugins import load_all
from framework.core.registry import DATASETS, HARDWARE, LOGGERS, MODELS, PEFT_METHODS, TASKS

REGISTRY_OF_GROUP = {
    "model": MODELS,
    "peft": PEFT_METHODS,
    "task": TASKS,
    "hardware": HARDWARE,
    "data": DATASETS,
    "logger": LOGGERS,
}
# One architecture per model kind stands for its kind in `ft list peft --task` (a listing only:
# validation judges the actual checkpoint).
KIND_EXAMPLES = {"decoder": "llama", "encoder": "bert", "seq2seq": "t5"}


def _preset_node(group: str, preset: str) -> dict:
    import re

    import yaml

    text = preset_file(group, preset).read_text()
    node = yaml.safe_load(text) or {}
    # Logger presets compose under their own key (`# @package logger.NAME`): NAME is the entry.
    package = re.match(rf"# @package {group}\.(\w+)\n", text)
    return {"name": package.group(1), **node} if package else node


def _preset_line(group: str, preset: str) -> str:
    node = _preset_node(group, preset)
    name = str(node.get("name", ""))
    line = f"  {preset:<22} -> {name}" if name else f"  {preset}"
    if group == "model":
        spec = node.get("random_init")
        where = (
            f"tiny random {spec.get('model_type') or MODELS.get(name).model_type}"
            if isinstance(spec, dict) and name in MODELS
            else node.get("checkpoint")
        )
        line += f"  ({where})" if where else ""
    if group == "peft" and name in PEFT_METHODS and PEFT_METHODS.get(name).unavailable():
        line += f"  [unavailable: {PEFT_METHODS.get(name).unavailable()}]"
    return line


def usable_models(entry: type, task: str) -> list[str]:
    """The model kinds (or, for a method limited to some model types, those types) a PEFT method
    serves a task on."""
    auto = MODELS.get("auto")
    candidates = sorted(entry.model_types) if entry.model_types else list(KIND_EXAMPLES)
    found = []
    for candidate in candidates:
        model_type = KIND_EXAMPLES.get(candidate, candidate)
        traits = auto.traits({"model_type": model_type})
        if candidate in KIND_EXAMPLES:
            traits = frozenset({candidate})  # judge the kind, not the example's own type
        if (
            auto.unsupported(task, {"model_type": model_type}) is None
            and entry.incompatibility(task, traits) is None
        ):
            found.append(candidate)
    return found


def _peft_line(name: str, entry: type, task: str | None) -> str | None:
    """One method: with a task, the models it works with for that task (None if none)."""
    merge = "merges" if entry.can_merge else "no merge"
    gpu = "; CUDA only" if entry.needs_cuda else ""
    missing = entry.unavailable()
    unavailable = f" [unavailable: {missing}]" if missing else ""
    if task:
        models = usable_models(entry, task)
        if not models:
            return None
        return (
            f"    {name:<16} models: {', '.join(models)}; {merge}{gpu}.{unavailable} "
            f"{entry.summary}"
        )
    usable = [t for t in TASKS.names() if usable_models(entry, t)]
    tasks = "all" if len(usable) == len(TASKS.names()) else ", ".join(usable)
    types = ", ".join(sorted(entry.model_types)) if entry.model_types else "all"
    holes = " (some task/model pairs excluded: see --task)" if entry.exclusions else ""
    return (
        f"    {name:<16} tasks: {tasks}; model types: {types}{holes}; {merge}{gpu}."
        f"{unavailable} {entry.summary}"
    )


def _model_line(name: str, entry: type) -> str:
    tasks = (
        f"; tasks: {', '.join(entry.served_tasks())}"
        if entry.describe(None)
        else "; tasks: whatever the checkpoint's architecture serves"
    )
    return f"    {name:<16} {entry.summary}{tasks}"


def print_listing(group: str | None, task: str | None = None) -> None:
    """Print every group (or one) with presets and registry entries."""
    load_all()
    groups = recipe_groups()
    if group in (None, "recipes"):
        print("recipes: " + ", ".join(recipe_names()))
        if group == "recipes":
            return
    if group is not None and group not in groups:
        raise UserError(
            f"ft list {group}: unknown group{did_you_mean(group, groups + ['recipes'])}"
            f"; groups: {', '.join(groups)}, recipes"
        )
    if task is not None and task not in TASKS:
        raise UserError(
            f"--task {task}: unknown task{did_you_mean(task, TASKS.names())}; "
            f"tasks: {', '.join(TASKS.names())}"
        )
    for name in [group] if group else groups:
        presets = group_presets(name)
        if name == "peft" and task:  # only the presets whose method can serve the task
            presets = [
                p
                for p in presets
                if _preset_node(name, p).get("name") in PEFT_METHODS
                and _peft_line("", PEFT_METHODS.get(_preset_node(name, p)["name"]), task)
            ]
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
                print(_model_line(entry_name, entry))
            else:
                print(f"    {entry_name:<16} {getattr(entry, 'summary', '')}")


# ---- shell completion -------------------------------------------------------------------------
COMMANDS = ("train", "validate", "show", "estimate", "list", "eval", "predict", "merge", "report")
RECIPE_COMMANDS = ("train", "validate", "show", "estimate")

BASH_SCRIPT = """\
# ft tab completion for bash. Load it with:  eval "$(ft --completion bash)"
_ft_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" "${COMP_WORDS[0]}" -sc query=bash 2>/dev/null))
}
complete -o nospace -F _ft_complete ft
"""


def completions(line: str) -> list[str]:
    """Words that complete the last word of a partial `ft ...` command line: sub-commands, then
    recipe names, then group=preset overrides (a trailing space when the word is complete)."""
    load_all()
    words = line.split()
    current = "" if line.endswith(" ") or not words else words[-1]
    before = words[1:] if current == "" else words[1:-1]
    if not before:
        options = [f"{c} " for c in COMMANDS]
    elif before[0] in RECIPE_COMMANDS and len(before) == 1:
        options = [f"{r} " for r in recipe_names()]
    elif before[0] in RECIPE_COMMANDS:
        groups = recipe_groups()
        group = current.split("=", 1)[0]
        if "=" in current and group in groups:
            options = [f"{group}={p} " for p in group_presets(group)]
        else:
            options = [f"{g}=" for g in groups]
    elif before[0] == "list" and len(before) == 1:
        options = [f"{g} " for g in recipe_groups() + ["recipes"]]
    else:
        options = []
    return sorted(o for o in options if o.startswith(current))
