"""The typed run configuration. Group presets (model, peft, task, hardware, logger) are typed by the
``Params`` class of the registry entry their ``name`` selects; ``train`` and ``data`` are fixed here.

This is the one module that looks a run's presets up in the registries: the entries found are
carried by the RunConfig (``run.plugins``), and every other module asks them.

Nothing here imports torch: the whole config is checked before any model is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from framework.config.recipe import override_key
from framework.config.typecheck import check_dataclass
from framework.core.errors import UserError, did_you_mean
from framework.core.params import DataConfig, TrainConfig
from framework.core.plugins import load_all
from framework.core.registry import (
    DATASETS,
    HARDWARE,
    LOGGERS,
    MODELS,
    OBJECTIVES,
    PEFT_METHODS,
    TASKS,
    Registry,
)
from framework.hardware.base import HardwareParams, HardwareProfile
from framework.loggers.base import Logger, LoggerParams
from framework.models.base import ModelFamily
from framework.models.params import ModelParams
from framework.objectives.base import Objective, ObjectiveParams
from framework.peft.base import PeftMethod, PeftParams
from framework.store.run_dir import CONFIG_FILE
from framework.tasks.base import Task, TaskParams


class ConfigOrigin(Protocol):
    """Where a config mapping came from, for messages: a composed recipe (config/compose.py
    Composed) or a saved config file."""

    @property
    def overrides(self) -> tuple[str, ...]:
        """The command-line overrides, as given (none for a saved file)."""
        ...

    def origin(self, key_path: str) -> str:
        """The place a key was set (the command line, a recipe or preset file)."""
        ...

    def override_for(self, key_path: str) -> str | None:
        """The command-line override that set the key or a mapping above it."""
        ...

    def chosen_on_command_line(self, group: str) -> str | None:
        """`group=preset` when the command line chose that group's preset."""
        ...


@dataclass(frozen=True)
class SavedConfig:
    """A resolved config file (a run's or a checkpoint's config.yaml): every key was set there."""

    path: Path
    overrides: tuple[str, ...] = ()

    def origin(self, key_path: str) -> str:
        return str(self.path)

    def override_for(self, key_path: str) -> str | None:
        return None

    def chosen_on_command_line(self, group: str) -> str | None:
        return None


@dataclass(kw_only=True, frozen=True)
class RunSettings:
    """Top-level keys of a run (outside the config groups)."""

    recipe: str  # set by the CLI from the recipe's name
    seed: int = 0
    output_root: str = "outputs"
    run_dir: str | None = None  # explicit run directory; default outputs/<recipe>/<time>
    resume: str | None = None  # null, "auto" (latest complete checkpoint) or a checkpoint path
    overwrite: bool = False  # run_dir already holds an ft run: start afresh (the old one is moved)
    # what overwrite=true does with the earlier run: move it to RUN_DIR.replaced-TIME, or delete it
    overwrite_old_run: Literal["move", "delete"] = "move"
    # run_dir holds files that are not an ft run: write the run beside them (never over one)
    allow_nonempty_run_dir: bool = False
    # keys a resume may change although they alter the training (train.max_steps, data, ...)
    resume_allow_changes: list[str] = field(default_factory=list)
    # ft train: validate, print the launch plan (command, DeepSpeed config), exit
    dry_run: bool = False


@dataclass(frozen=True)
class Plugins:
    """The registry entries a run's presets name, looked up once at validation."""

    family: type[ModelFamily]  # model.name
    method: type[PeftMethod]  # peft.name
    task_class: type[Task]  # task.name (the Task class; a run builds its instance)
    profile: type[HardwareProfile]  # hardware.name
    source: Any  # data.name: a data source entry (files, hub, a built-in dataset)
    loggers: Mapping[str, type[Logger]]  # logger name -> its entry, in the order given
    objective: type[Objective]  # objective.name (cross_entropy when the recipe names none)


@dataclass(kw_only=True, frozen=True)
class RunConfig(RunSettings):
    """The whole validated run: one typed object per config group, and the registry entries they
    name (``plugins``). Frozen: what was validated is what runs (the run directory is decided
    beside it, never written into it)."""

    model: ModelParams
    peft: PeftParams
    task: TaskParams
    hardware: HardwareParams
    data: DataConfig
    train: TrainConfig
    logger: dict[str, LoggerParams]  # logger name -> its typed params, in the order given
    objective: ObjectiveParams  # what the run optimises; the task's own loss by default
    plugins: Plugins = field(repr=False)
    data_source: Any = None  # typed `data.source`, per the data source's Params
    # where the config came from: the composed recipe (recipe, overrides, chosen presets) or the
    # saved file a launched rank reads
    origin: ConfigOrigin = field(repr=False, compare=False)
    # the checkpoint's architecture as validation read it (config.json of a local, package or
    # hub-cached checkpoint, or the family's tiny model type); None when it could not be read
    # before loading: the trainer then checks task and method against it at load time
    architecture: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the mapping that runs


TOP_LEVEL_KEYS = tuple(f.name for f in dataclasses.fields(RunSettings))
GROUPS: dict[str, Registry] = {
    "model": MODELS,
    "peft": PEFT_METHODS,
    "task": TASKS,
    "hardware": HARDWARE,
    "objective": OBJECTIVES,
}  # one preset each, chosen by its `name`; `logger` may hold several (see _loggers)
ALL_GROUPS: list[str] = ["model", "peft", "task", "hardware", "data", "train", "logger"]
# Groups a recipe may leave out, with the preset that stands in: every recipe written before
# objectives existed trains the task's own loss, as it did.
OPTIONAL_GROUPS: dict[str, str] = {"objective": "cross_entropy"}


def _group(
    registry: Registry, node: Any, key: str, words: UnknownKeys, problems: list[str]
) -> tuple[Any, Any]:
    """(typed params, registry entry) of a group's preset; (None, None) with the problem noted."""
    if not isinstance(node, dict):
        problems.append(
            f"{key}: must be a preset mapping with a 'name', got {node!r}; "
            f"pick one with {key}=PRESET (`ft list {key}`)"
        )
        return None, None
    name = node.get("name")
    if name is None or name == "???":
        problems.append(f"{key}.name: missing; pick a preset with {key}=PRESET (`ft list {key}`)")
        return None, None
    try:
        entry = registry.get(name, key=f"{key}.name")
    except UserError as error:
        problems.append(str(error))
        return None, None
    return words.check(entry.Params, node, key, problems), entry


def logger_entries(node: Any) -> Any:
    """The logger group as {logger name: its keys}. Each logger preset composes under its own
    key (`# @package logger.NAME`), so `logger=[tensorboard,mlflow]` yields both; the older
    single-preset form {name: NAME, ...} (saved configs) is read as {NAME: {...}}."""
    if isinstance(node, dict) and isinstance(node.get("name"), str):
        return {node["name"]: {k: v for k, v in node.items() if k != "name"}}
    return node


def _loggers(
    node: Any, words: UnknownKeys, problems: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({logger name: typed params}, {logger name: registry entry})."""
    node = logger_entries(node)
    if not isinstance(node, dict) or not node:
        problems.append(
            f"logger: must name at least one logger, got {node!r}; pick with "
            f"logger=jsonl or logger=[tensorboard,mlflow] (`ft list logger`)"
        )
        return {}, {}
    found, entries = {}, {}
    for name, keys in node.items():
        if name not in LOGGERS:
            problems.append(
                f"logger.{name}: not a logger{did_you_mean(str(name), LOGGERS.names())}"
                f"; each logger's options sit under its name (e.g. "
                f"logger.mlflow.project=...); loggers: {', '.join(LOGGERS.names())}"
            )
            continue
        if keys is not None and not isinstance(keys, dict):
            problems.append(f"logger.{name}: must be a mapping of {name}'s options, got {keys!r}")
            continue
        entries[name] = LOGGERS.get(name)
        found[name] = words.check(
            entries[name].Params, {"name": name, **(keys or {})}, f"logger.{name}", problems
        )
    return found, entries


class UnknownKeys:
    """The problem line for a key the schema does not have, pointing at the fix: a key given on
    the command line is quoted as typed, with the closest key beside it, or the same key in
    another group (peft.lr -> train.lr); a key from a file names the file."""

    def __init__(self, node: dict[str, Any], where: ConfigOrigin):
        self.node, self.where = node, where

    def check(self, schema: type, node: dict[str, Any], path: str, problems: list[str]) -> Any:
        """check_dataclass with this wording of unknown keys."""
        return check_dataclass(schema, node, path, self.where.origin, problems, self.line)

    def line(self, path: str, key: str, fields: list[str]) -> str:
        override = self.where.override_for(path)
        if override is None or override.startswith("+"):  # a file, or an explicit addition
            return (
                f"{path}: unknown key{did_you_mean(key, fields)} (set in "
                f"{self.where.origin(path)}); valid keys: {', '.join(sorted(fields))}"
            )
        given = override_key(override)  # deeper than `path` when a parent is what is unknown
        chosen = self.where.chosen_on_command_line(path.split(".")[0]) if "." in path else None
        label = "unknown key" if given == path else f"unknown key '{path}'"
        return (
            f"{override}: {label}{f' for {chosen}' if chosen else ''}"
            f"{self.hint(path, key, fields, given)} (set on the command line); valid keys "
            f"here: {', '.join(sorted(set(fields)))}"
        )

    def hint(self, path: str, key: str, fields: list[str], given: str) -> str:
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        if given != path:  # trian.lr: the group is misspelled
            parent = path.rpartition(".")[0]
            fixed = ".".join([p for p in (parent, *close) if p] + [given[len(path) + 1 :]])
            return f" (did you mean '{fixed}'?)" if close else ""
        elsewhere = self.same_key_elsewhere(path)
        return f" (did you mean '{elsewhere[0]}'?)" if elsewhere else did_you_mean(key, fields)

    def same_key_elsewhere(self, path: str) -> list[str]:
        """Other places of the config (each group, the top level) where the last part of `path`
        is a key: the usual slip is the right key in the wrong group."""
        leaf, first = path.rsplit(".", 1)[-1], path.split(".", 1)[0]
        found = []
        for group, node in self.node.items():
            if group == first or not isinstance(node, dict):
                continue
            if leaf in set(node) | set(schema_fields(self.node, f"{group}.{leaf}") or []):
                found.append(f"{group}.{leaf}")
        if "." in path and leaf in TOP_LEVEL_KEYS:
            found.append(leaf)  # e.g. train.seed -> seed
        return found


def _top_level_problems(node: dict[str, Any], words: UnknownKeys) -> list[str]:
    """Unknown top-level keys, and groups with no preset chosen."""
    known = sorted(set(TOP_LEVEL_KEYS) | set(ALL_GROUPS) | set(OPTIONAL_GROUPS))
    found = [
        words.line(key, key, known)
        if words.where.override_for(key)
        else f"{key}: unknown top-level key{did_you_mean(key, known)} "
        f"(set in {words.where.origin(key)}); valid keys: {', '.join(known)}"
        for key in node
        if key not in known
    ]
    found += [
        f"{g}: no preset chosen; add '- {g}: PRESET' to the recipe's defaults "
        f"or pass {g}=PRESET (`ft list {g}`)"
        for g in ALL_GROUPS
        if g not in node
    ]
    return found


def build_run_config(node: dict[str, Any], where: ConfigOrigin) -> RunConfig:
    """Type-check a composed config and return the RunConfig, with the registry entry of every
    preset resolved; raise one UserError listing all problems (unknown keys with suggestions,
    wrong types, missing values, unknown presets, impossible combinations). `node` is not
    changed: the RunConfig's `raw` is the mapping that runs and is saved."""
    load_all()
    node = _checkpoint_replaces_random_init(node)
    words = UnknownKeys(node, where)
    problems = _top_level_problems(node, words)
    params: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    for key, registry in GROUPS.items():
        preset = node.get(key, {"name": OPTIONAL_GROUPS[key]} if key in OPTIONAL_GROUPS else None)
        if preset is not None:
            params[key], entries[key] = _group(registry, preset, key, words, problems)
    logger_entries_found: dict[str, Any] = {}
    if "logger" in node:
        params["logger"], logger_entries_found = _loggers(node["logger"], words, problems)
    for key, schema in (("train", TrainConfig), ("data", DataConfig)):
        if key in node:
            params[key] = words.check(schema, node.get(key) or {}, key, problems)
    data, source, data_source = params.get("data"), None, None
    if data is not None:
        try:
            source = DATASETS.get(data.name, key="data.name")
            data_source = words.check(source.Params, data.source, "data.source", problems)
        except UserError as error:
            problems.append(str(error))
    top = {k: node[k] for k in TOP_LEVEL_KEYS if k in node}
    top_checked = words.check(RunSettings, top, "", problems)
    if problems:
        raise UserError(
            f"invalid config ({len(problems)} problem{'s' * (len(problems) > 1)}):", problems
        )
    plugins = Plugins(
        family=entries["model"],
        method=entries["peft"],
        task_class=entries["task"],
        profile=entries["hardware"],
        source=source,
        loggers=logger_entries_found,
        objective=entries["objective"],
    )
    run = RunConfig(
        **params,
        plugins=plugins,
        architecture=plugins.family.checkpoint_config(params["model"]),
        data_source=data_source,
        origin=where,
        raw=node,
        **dataclasses.asdict(top_checked),
    )
    from framework.config.checks import check_combination

    check_combination(run)
    return run


def _checkpoint_replaces_random_init(node: dict[str, Any]) -> dict[str, Any]:
    """model.checkpoint set on a preset that builds a tiny random model (tiny_bert, ...): the
    checkpoint is what the user asked for, so random init is switched off (in the saved config
    too); training the random model instead would silently ignore the checkpoint. Returns the
    mapping to validate (a copy when it changed)."""
    model = node.get("model")
    if isinstance(model, dict) and model.get("checkpoint") and model.get("random_init") is not None:
        import logging

        logging.getLogger("ft").info(
            "model.checkpoint=%s is set: model.random_init switched off", model["checkpoint"]
        )
        return {**node, "model": {**model, "random_init": None}}
    return node


def _dataclass_of(tp: Any) -> Any:
    """The dataclass inside a type hint like Optional[TinySpec], or None."""
    import typing

    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def schema_fields(config: dict[str, Any], key_path: str) -> list[str] | None:
    """Keys the schema allows beside `key_path` in a composed config: None where any key goes
    (a free-form mapping such as data.columns), [] where nothing can be added. Lets
    `group.key=value` set a schema field that the preset does not spell out."""
    import typing

    load_all()
    parents = key_path.split(".")[:-1]
    if not parents:
        return sorted(set(TOP_LEVEL_KEYS) | set(ALL_GROUPS) | set(OPTIONAL_GROUPS))
    group, rest = parents[0], parents[1:]
    found = config.get(group)
    node: dict[str, Any] = found if isinstance(found, dict) else {}
    if group in OPTIONAL_GROUPS and not node:
        node = {"name": OPTIONAL_GROUPS[group]}
    cls: Any
    if group == "logger":  # logger.NAME.key: NAME's Params
        if not rest:
            return LOGGERS.names()
        if rest[0] not in LOGGERS:
            return []
        cls, rest = LOGGERS.get(rest[0]).Params, rest[1:]
    elif group in GROUPS:
        if node.get("name") not in GROUPS[group]:
            return []
        cls = GROUPS[group].get(node["name"]).Params
    elif group == "train":
        cls = TrainConfig
    elif group == "data":
        cls = DataConfig
        if rest[:1] == ["source"]:
            if node.get("name") not in DATASETS:
                return []
            cls, rest = DATASETS.get(node["name"]).Params, rest[1:]
    else:
        return []
    for part in rest:
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return []
        inner = _dataclass_of(hints[part])
        if inner is None:
            free_form = (
                hints[part] is Any
                or typing.get_origin(hints[part]) in (dict, dict)
                or any(typing.get_origin(a) in (dict, dict) for a in typing.get_args(hints[part]))
            )
            return None if free_form else []
        cls = inner
    return sorted(f.name for f in dataclasses.fields(cls))


def load_run_file(path: Path) -> RunConfig:
    """Validate a saved, resolved config file (a run's or a checkpoint's config.yaml)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path.parent}: not an ft run directory (no {path.name})")
    return build_run_config(upgrade_saved(yaml.safe_load(path.read_text())), SavedConfig(path))


def upgrade_saved(node: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an older ft, with each preset's renamed keys rewritten by its registry
    entry (`upgrade_saved(params) -> params`), so that old run directories still load."""
    load_all()
    node = dict(node)
    if "logger" in node:
        node["logger"] = logger_entries(node["logger"])
    for group, registry in GROUPS.items():
        preset = node.get(group)
        if isinstance(preset, dict) and preset.get("name") in registry:
            upgrade = getattr(registry.get(preset["name"]), "upgrade_saved", None)
            if upgrade is not None:
                node[group] = upgrade(dict(preset))
    return node


def load_saved_run(run_dir: Path, config_file: str = CONFIG_FILE) -> RunConfig:
    """The RunConfig a run directory was started with (what every launched rank reads, and what
    ft eval / predict / merge / report use). The one place a run is loaded from its directory."""
    return load_run_file(Path(run_dir) / config_file)
