"""Hydra composition, done once in the launching process.

A recipe (from recipes/ or a user's own YAML file, read once by config/recipe.py) is the primary
config; conf/ and recipes/ are on the search path (see recipe.py), so a recipe's defaults list
picks one preset per group and may extend a shipped recipe.

Overrides of keys are handed to Hydra as `++key=value` (add or override): Hydra's struct mode
would refuse a key the chosen preset does not spell out (train.eval_before=true), although the
schema defines it. Whether a key exists is the schema's to say (config/schema.py), with the
command-line override named in its message. Hydra's own errors are translated into one clear
UserError naming the key, value and fix.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from framework.config.recipe import (
    CONF_DIR,
    HYDRA_VERSION_BASE,
    Recipe,
    group_presets,
    override_key,
    read_recipe,
    recipe_groups,
    search_path_override,
)
from framework.core.errors import UserError, did_you_mean

# Overrides that pick presets or configure Hydra itself, never turned into `++key=value`.
SELECTING_PREFIXES = ("hydra.", "hydra/")
SEARCH_GROUPS = ("hparams_search",)  # a group that recipes do not list in their defaults


@dataclass(frozen=True)
class Composed:
    """A composed, interpolation-resolved config plus where its pieces came from."""

    recipe: Recipe
    config: dict[str, Any] = field(repr=False)
    overrides: tuple[str, ...]  # as the user gave them (before `++` was added)
    choices: dict[str, str]  # group -> chosen preset name

    @property
    def recipe_name(self) -> str:
        return self.recipe.name

    @property
    def recipe_path(self) -> Path:
        return self.recipe.path

    def override_for(self, key_path: str) -> str | None:
        """The command-line override that set `key_path`: the key itself, a key under it (which
        made the mapping: `trian.lr=1` made `trian`), or a mapping above it (not a preset choice
        such as `peft=ia3`, which sets the whole group from a file)."""
        keys = [(override_key(o), o) for o in self.overrides if "=" in o]
        for key, override in keys:
            if key == key_path:
                return override
        for key, override in keys:
            if key.startswith(key_path + "."):
                return override
        for key, override in keys:
            if key_path.startswith(key + ".") and key not in self.choices:
                return override
        return None

    def origin(self, key_path: str) -> str:
        """Name the place a key was set: the command line, the recipe file or a preset file."""
        override = self.override_for(key_path)
        if override is not None:
            return f"the command line ('{override}')"
        if self.recipe.has_key(key_path):
            return str(self.recipe.path)
        group = key_path.split(".", 1)[0]
        if group in self.choices:
            preset = CONF_DIR / group / f"{self.choices[group]}.yaml"
            if preset.exists():
                return str(preset)
        return f"{self.recipe.path} (composed)"

    def chosen_on_command_line(self, group: str) -> str | None:
        """`group=preset` when the command line chose the group's preset, else None."""
        return next((o for o in self.overrides if "=" in o and override_key(o) == group), None)


def hydra_overrides(overrides: list[str], groups: list[str] | None = None) -> list[str]:
    """The overrides as Hydra gets them: `key=value` of a key becomes `++key=value`; preset
    choices (group=preset), Hydra's own keys and explicit `+`/`~` forms stay as given."""
    groups = groups if groups is not None else recipe_groups()
    out = []
    for override in overrides:
        key = override.split("=", 1)[0]
        selecting = key in groups or "/" in key or key.startswith(SELECTING_PREFIXES)
        if "=" not in override or key.startswith(("+", "~")) or selecting:
            out.append(override)
        else:
            out.append("++" + override)
    return out


def hydra_compose(recipe: Recipe, overrides: list[str]) -> Any:
    """Hydra's compose of a recipe with ft's search path (Hydra's own config kept). `overrides`
    are given as Hydra takes them (see hydra_overrides)."""
    from hydra import compose, initialize_config_dir

    recipe.store()
    rest = [o for o in overrides if override_key(o) != "hydra.searchpath"]
    with (
        _beside_running_hydra(),
        initialize_config_dir(config_dir=str(recipe.path.parent), version_base=HYDRA_VERSION_BASE),
    ):
        return compose(
            config_name=recipe.config_name,
            overrides=[search_path_override(recipe, overrides), *rest],
            return_hydra_config=True,
        )


@contextlib.contextmanager
def _beside_running_hydra() -> Iterator[None]:
    """Inside a job of Hydra's own command line (a resume or a sweep trial composes its recipe
    again), Hydra's global state holds that app: set it aside for this compose, then back."""
    from hydra.core.global_hydra import GlobalHydra

    state = GlobalHydra.instance()
    running = state.hydra
    state.clear()
    try:
        yield
    finally:
        state.clear()
        if running is not None:
            state.initialize(running)


def with_search_preset(recipe: Recipe, overrides: list[str]) -> list[str]:
    """`hparams_search=NAME` -> `+hparams_search=NAME`: recipes do not list the group in their
    defaults (one that does takes the plain form)."""
    return [
        f"+{o}"
        if override_key(o) in SEARCH_GROUPS
        and not o.startswith("+")
        and not recipe.defaults_name(override_key(o))
        else o
        for o in overrides
    ]


def with_optional_groups(recipe: Recipe, overrides: list[str]) -> list[str]:
    """`objective=dpo` -> `+objective=dpo` on a recipe whose defaults (and those of the recipes it
    extends) do not name the optional group: every recipe written before objectives existed."""
    from framework.config.schema import OPTIONAL_GROUPS

    return [
        f"+{o}"
        if override_key(o) in OPTIONAL_GROUPS
        and not o.startswith(("+", "~"))
        and not lists_group(recipe, override_key(o))
        else o
        for o in overrides
    ]


def lists_group(recipe: Recipe, group: str, depth: int = 0) -> bool:
    """Whether the recipe's defaults, or those of a recipe it extends (a plain name in its
    defaults, found beside it or among the shipped recipes), name the config group."""
    if recipe.defaults_name(group):
        return True
    if depth > 8:  # a defaults chain this deep is a loop; Hydra reports it
        return False
    for entry in recipe.tree.get("defaults") or []:
        if not isinstance(entry, str) or entry == "_self_":
            continue
        beside = recipe.path.parent / f"{entry}.yaml"
        try:
            parent = read_recipe(str(beside) if beside.is_file() else entry)
        except UserError:
            continue  # not a recipe (Hydra says what it is)
        if lists_group(parent, group, depth + 1):
            return True
    return False


def compose_recipe(recipe: str | Recipe, overrides: list[str] | None = None) -> Composed:
    """Compose a recipe with command-line overrides into a plain, resolved mapping."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    given = list(overrides or [])
    recipe = read_recipe(recipe)
    try:
        cfg = hydra_compose(recipe, hydra_overrides(with_optional_groups(recipe, given)))
    except Exception as error:  # Hydra raises several unrelated types; translate them all
        raise translate_hydra_error(error, recipe, given) from None
    choices = selected_presets(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    register_env_secrets(OmegaConf.to_container(cfg, resolve=False))
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "?"
        message = getattr(error, "msg", None) or str(error)
        raise UserError(f"{key}: cannot resolve interpolation: {message}".split("\n")[0]) from None
    container.setdefault("recipe", recipe.name)
    return Composed(recipe, container, tuple(given), choices)


def selected_presets(choices: Any) -> dict[str, str]:
    """Hydra's runtime choices without its own groups: {group: preset}."""
    return {k: v for k, v in dict(choices).items() if not k.startswith("hydra/") and v is not None}


def register_env_secrets(node: Any) -> None:
    """Every value an `${oc.env:NAME}` lookup of a secret-looking NAME (HF_TOKEN, ...) brings into
    the config is a secret, whatever key it lands in: redact it everywhere ft writes."""
    from framework.store.redaction import is_secret_key, register_secret

    if isinstance(node, dict):
        for value in node.values():
            register_env_secrets(value)
    elif isinstance(node, list):
        for value in node:
            register_env_secrets(value)
    elif isinstance(node, str):
        for name in re.findall(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", node):
            if is_secret_key(name):
                register_secret(os.environ.get(name))


def translate_hydra_error(error: Exception, recipe: Recipe, overrides: list[str]) -> UserError:
    """One line for an error Hydra raised while composing (several unrelated types)."""
    message = str(error)
    cause = error.__cause__ or error.__context__
    if (
        isinstance(cause, yaml.YAMLError)
        or "while scanning" in message
        or "while parsing" in message
    ):
        bad = re.search(r"'([^']+\.yaml)'", message)
        return UserError(
            f"malformed YAML{' in ' + bad.group(1) if bad else ''}: {message.splitlines()[0]}"
        )
    # "Could not load": a preset inside a list of presets (logger=[tensorboard,mlflw]).
    missing = re.search(r"Could not (?:find|load) '([^'/]+)/([^']+)'", message)
    if missing:
        group, name = missing.groups()
        presets = group_presets(group)
        return UserError(
            f"{group}={name}: unknown {group} preset{did_you_mean(name, presets)}. "
            f"Available: {', '.join(presets) or '(none)'}"
        )
    bad_override = re.search(r"Could not override '([^']+)'", message)
    if bad_override and bad_override.group(1) in SEARCH_GROUPS:  # conf/hparams_search
        return UserError(
            "hparams_search: a search space runs as a sweep; use "
            f"`ft train {recipe.name} -m hparams_search=NAME` "
            f"(presets: {', '.join(group_presets('hparams_search'))})"
        )
    if bad_override:  # a preset choice of a group the recipe's defaults do not list
        group = bad_override.group(1)
        return UserError(
            f"{group}: the recipe's defaults list has no {group} group to override; add "
            f"'- {group}: PRESET' to its defaults, or pass +{group}=PRESET"
        )
    if "Could not append to config" in message or "Could not delete" in message:
        return UserError(message.splitlines()[0])
    if type(error).__name__ == "OverrideParseException":
        return UserError(
            f"cannot parse command-line override: {message.splitlines()[0]}. "
            f"Overrides look like key=value, group=preset or +new.key=value"
        )
    duplicate = re.search(r'found duplicate key (\S+)\s+in "([^"]+)", line (\d+)', message)
    if duplicate:  # a preset file composed by Hydra (the recipe itself is checked when read)
        key, where, line = duplicate.groups()
        return UserError(
            f"{where}:{line}: duplicate key '{key}'. Each key may appear once per "
            f"mapping: remove or merge one of them"
        )
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return UserError(f"cannot compose recipe {recipe.path.name}: {first}")
