"""Hydra composition, done once in the launching process.

A recipe (from recipes/ or a user's own YAML file) is the primary config; conf/ and recipes/ are on
the search path, so a recipe's defaults list picks one preset per group and may extend a shipped
recipe. Hydra's errors are translated into one clear UserError naming the key, value and fix.

Where configs are found, first match wins:
  1. the recipe's own directory (Hydra's primary config dir): `my/model/qwen.yaml` beside
     `my/recipe.yaml` is `model: qwen`, and `my/peft/lora.yaml` replaces the shipped `lora`;
  2. the user's config dirs: `--config-dir DIR` on the command line, or `hydra.searchpath`
     (in the recipe, relative to it, or as an override), before
  3. the shipped presets and recipes: package data of the installed wheel (framework/conf and
     framework/recipes, on Hydra's `pkg://` search path), or conf/ and recipes/ of a source
     checkout (`file://`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from framework.core.errors import UserError, did_you_mean

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # framework/
# An installed wheel ships conf/ and recipes/ inside the package; a source checkout has them
# beside it.
INSTALLED = (PACKAGE_DIR / "conf").is_dir()
REPO_ROOT = PACKAGE_DIR.parent
CONF_DIR = PACKAGE_DIR / "conf" if INSTALLED else REPO_ROOT / "conf"
RECIPES_DIR = PACKAGE_DIR / "recipes" if INSTALLED else REPO_ROOT / "recipes"
SHIPPED_SEARCH_PATH = (
    ["pkg://framework.conf", "pkg://framework.recipes"]
    if INSTALLED
    else [f"file://{CONF_DIR}", f"file://{RECIPES_DIR}"]
)
HYDRA_VERSION_BASE = "1.3"


@dataclass
class Composed:
    """A composed, interpolation-resolved config plus where its pieces came from."""

    recipe_name: str
    recipe_path: Path
    config: dict[str, Any]
    overrides: list[str]
    choices: dict[str, str]  # group -> chosen preset name

    def origin(self, key_path: str) -> str:
        """Name the place a key was set: the command line, the recipe file or a preset file."""
        for override in self.overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key == key_path:
                return f"the command line ('{override}')"
        if _has_path(_read_yaml(self.recipe_path), key_path):
            return str(self.recipe_path)
        group = key_path.split(".", 1)[0]
        if group in self.choices:
            preset = CONF_DIR / group / f"{self.choices[group]}.yaml"
            if preset.exists():
                return str(preset)
        return f"{self.recipe_path} (composed)"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _has_path(node: Any, key_path: str) -> bool:
    for part in key_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def group_presets(group: str) -> list[str]:
    """The shipped presets of one config group, as `group=NAME` accepts them."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def preset_file(group: str, preset: str) -> Path:
    """The shipped YAML file of a preset."""
    return CONF_DIR / group / f"{preset}.yaml"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(recipe: str) -> Path:
    """Map a recipe argument (a shipped recipe name or a path to a YAML file) to its file."""
    looks_like_path = recipe.endswith((".yaml", ".yml")) or "/" in recipe
    path = Path(recipe).expanduser() if looks_like_path else RECIPES_DIR / f"{recipe}.yaml"
    if not path.is_file():
        hint = did_you_mean(Path(recipe).stem, recipe_names())
        raise UserError(
            f"recipe '{recipe}': no such recipe file ({path}){hint}. "
            f"Use a name from `ft list recipes` or a path to a YAML file."
        )
    return path.resolve()


def user_search_path(recipe_path: Path, overrides: list[str]) -> list[str]:
    """The user's own config dirs: the recipe's `hydra.searchpath` (relative entries are relative
    to the recipe file), then a `hydra.searchpath=[...]` override (e.g. from --config-dir)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    recipe = _read_yaml(recipe_path)
    declared = recipe.get("hydra") if isinstance(recipe, dict) else None
    entries = list(declared.get("searchpath") or []) if isinstance(declared, dict) else []
    for override in overrides:
        if override_key(override) == "hydra.searchpath":
            value = OverridesParser.create().parse_override(override).value()
            entries += value if isinstance(value, list) else [value]
    found = []
    for entry in map(str, entries):
        scheme, sep, path = entry.partition("://")
        if not sep:
            scheme, path = "file", entry
        if scheme == "file" and not Path(path).expanduser().is_absolute():
            path = str((recipe_path.parent / path).resolve())
        found.append(f"{scheme}://{Path(path).expanduser() if scheme == 'file' else path}")
    return found


def search_path(recipe_path: Path, overrides: list[str]) -> list[str]:
    """Hydra's search path after the recipe's own directory: the user's dirs, then ft's presets
    and recipes (so a user's preset of the same name wins)."""
    return [*user_search_path(recipe_path, overrides), *SHIPPED_SEARCH_PATH]


def hydra_compose(recipe_path: Path, overrides: list[str]):
    """Hydra's compose of a recipe file with ft's search path (Hydra's own config kept)."""
    from hydra import compose, initialize_config_dir

    entries = ",".join(f"'{entry}'" for entry in search_path(recipe_path, overrides))
    rest = [o for o in overrides if override_key(o) != "hydra.searchpath"]
    with initialize_config_dir(config_dir=str(recipe_path.parent), version_base=HYDRA_VERSION_BASE):
        return compose(
            config_name=recipe_path.stem,
            overrides=[f"hydra.searchpath=[{entries}]", *rest],
            return_hydra_config=True,
        )


def override_key(override: str) -> str:
    """The key an override sets: '+train.lr=1' -> 'train.lr'."""
    return override.split("=", 1)[0].lstrip("+~")


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    OmegaConf.set_struct(cfg, False)
    if "hydra" in cfg:
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=False)


def _compose_allowing_schema_keys(recipe_path: Path, overrides: list[str]):
    """Compose; an override of a key the preset omits but the schema defines (train.eval_before=
    true), or of an optional group the recipe leaves out (objective=dpo), is retried as an
    addition (+key=value). Keys outside the schema still fail."""
    from framework.config.schema import OPTIONAL_GROUPS, schema_fields

    overrides = list(overrides)
    for _ in range(len(overrides) + 1):
        try:
            return hydra_compose(recipe_path, overrides), overrides
        except Exception as error:
            match = re.search(r"Could not override '([^']+)'", str(error))
            index = next(
                (
                    i
                    for i, o in enumerate(overrides)
                    if match and not o.startswith(("+", "~")) and override_key(o) == match.group(1)
                ),
                None,
            )
            if index is None:
                raise
            if match.group(1) in OPTIONAL_GROUPS:
                overrides[index] = "+" + overrides[index]
                continue
            try:
                base = _plain(hydra_compose(recipe_path, _preset_choices(overrides)))
            except Exception:
                raise error from None
            allowed = schema_fields(base, match.group(1))
            if allowed is not None and match.group(1).split(".")[-1] not in allowed:
                raise
            overrides[index] = "+" + overrides[index]
    return hydra_compose(recipe_path, overrides), overrides


def _preset_choices(overrides: list[str]) -> list[str]:
    """The `group=preset` overrides: the schema of a group depends only on which preset is chosen."""
    return [
        o
        for o in overrides
        if "." not in override_key(o)
        and override_key(o) in recipe_groups()
        and not o.startswith(("+", "~"))
    ]


def compose_recipe(recipe: str, overrides: list[str] | None = None) -> Composed:
    """Compose a recipe with command-line overrides into a plain, resolved mapping."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    recipe_path = resolve_recipe(recipe)
    _check_yaml(recipe_path)
    try:
        cfg, overrides = _compose_allowing_schema_keys(recipe_path, overrides)
    except Exception as error:  # Hydra raises several unrelated types; translate them all
        raise _translate_hydra_error(error, recipe_path, overrides) from None
    choices = {
        k: v
        for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items()
        if not k.startswith("hydra/") and v is not None
    }
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    register_env_secrets(OmegaConf.to_container(cfg, resolve=False))
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "?"
        raise UserError(
            f"{key}: cannot resolve interpolation: {error.msg if hasattr(error, 'msg') else error}".split(
                "\n"
            )[0]
        ) from None
    container.setdefault("recipe", recipe_path.stem)
    return Composed(recipe_path.stem, recipe_path, container, overrides, choices)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last one
    silently; Hydra refuses it with a message that names neither key nor line first)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) or key == "<<":
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_yaml(path: Path) -> None:
    """Parse a YAML file up front so that a syntax error names the file and line."""
    try:
        yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).split("\n")[0]
        raise UserError(
            f"{where}: malformed YAML: {problem}. Fix the syntax at that line."
        ) from None


def _translate_hydra_error(error: Exception, recipe_path: Path, overrides: list[str]) -> UserError:
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
    missing_primary = re.search(r"Cannot find primary config '([^']+)'", message)
    if missing_primary:
        return UserError(f"recipe '{missing_primary.group(1)}' not found in {recipe_path.parent}")
    bad_override = re.search(r"Could not override '([^']+)'", message)
    if bad_override and bad_override.group(1) == "hparams_search":  # conf/hparams_search
        return UserError(
            "hparams_search: a search space runs as a sweep; use "
            f"`ft train {recipe_path.stem} -m hparams_search=NAME` "
            f"(presets: {', '.join(group_presets('hparams_search'))})"
        )
    if bad_override:
        key = bad_override.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "?")
        return UserError(
            _unknown_override_message(recipe_path, key, value, _preset_choices(overrides))
        )
    if "Could not append to config" in message or "Could not delete" in message:
        return UserError(message.splitlines()[0])
    if type(error).__name__ == "OverrideParseException":
        return UserError(
            f"cannot parse command-line override: {message.splitlines()[0]}. "
            f"Overrides look like key=value, group=preset or +new.key=value"
        )
    duplicate = re.search(r'found duplicate key (\S+)\s+in "([^"]+)", line (\d+)', message)
    if duplicate:  # a preset file composed by Hydra (the recipe itself is checked up front)
        key, where, line = duplicate.groups()
        return UserError(
            f"{where}:{line}: duplicate key '{key}'. Each key may appear once per "
            f"mapping: remove or merge one of them"
        )
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return UserError(f"cannot compose recipe {recipe_path.name}: {first}")


def _unknown_override_message(recipe_path: Path, key: str, value: str, choices: list[str]) -> str:
    """Suggest the closest existing key for a command-line override that matched nothing, among
    the keys of the presets chosen (`choices`: the group=preset overrides)."""
    from framework.config.schema import schema_fields

    try:
        base: Any = _plain(hydra_compose(recipe_path, choices))
    except Exception:  # the base itself failed; fall back to a plain message
        base = {}
    parent_path, _, leaf = key.rpartition(".")
    node = base
    walked: list[str] = []
    for part in parent_path.split(".") if parent_path else []:
        if not (isinstance(node, dict) and part in node):  # e.g. trian.lr: suggest train.lr
            allowed = schema_fields(base, ".".join(walked + [part]))  # keys beside `part`
            options = sorted(set(allowed or []) | set(node if isinstance(node, dict) else []))
            close = difflib.get_close_matches(part, options, n=1, cutoff=0.6)
            fixed = ".".join(walked + close + key.split(".")[len(walked) + 1 :]) if close else ""
            hint = f" (did you mean '{fixed}'?)" if close else ""
            return (
                f"{key}={value}: unknown key '{'.'.join(walked + [part])}'{hint} (set on the "
                f"command line); valid keys here: {', '.join(options)}"
            )
        node = node[part]
        walked.append(part)
    siblings = schema_fields(base, key) or (list(node) if isinstance(node, dict) else [])
    groups = set(recipe_groups())
    if not parent_path and leaf not in siblings and leaf not in groups:
        siblings += sorted(groups)
    valid = f"; valid keys here: {', '.join(sorted(set(siblings)))}" if siblings else ""
    chosen = next((c for c in choices if override_key(c) == key.split(".")[0]), None)
    preset = f" for {chosen}" if chosen else ""  # peft.r with peft=ia3: IA3 has no rank
    elsewhere = _same_key_elsewhere(base, key)  # peft.lr -> train.lr, before a look-alike (r)
    hint = f" (did you mean '{elsewhere[0]}'?)" if elsewhere else did_you_mean(leaf, siblings)
    return f"{key}={value}: unknown key{preset}{hint} (set on the command line){valid}"


def _same_key_elsewhere(base: dict[str, Any], key: str) -> list[str]:
    """Other places of a composed config (each group, the top level) where the last part of `key`
    is a key: the usual slip is the right key in the wrong group."""
    from framework.config.schema import schema_fields

    leaf, first = key.rsplit(".", 1)[-1], key.split(".", 1)[0]
    found = []
    for group, node in base.items():
        if group == first or not isinstance(node, dict):
            continue
        fields = set(node) | set(schema_fields(base, f"{group}.{leaf}") or [])
        if leaf in fields:
            found.append(f"{group}.{leaf}")
    if "." in key and leaf in (schema_fields(base, leaf) or []) and leaf not in recipe_groups():
        found.append(leaf)  # e.g. train.seed -> seed
    return found


def recipe_groups() -> list[str]:
    # conf/hydra holds Hydra's own groups (hydra/launcher=slurm), not an ft config group.
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
