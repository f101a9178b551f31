"""Recipes and where configs are found. A recipe file is read and parsed once, here; Hydra then
composes it from memory (ConfigStore), so nothing reads it again.

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

import hashlib
from dataclasses import dataclass, field
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
# Hydra reads a config's `# @package` header from its first 512 characters.
HEADER_CHARS = 512


@dataclass(frozen=True)
class Recipe:
    """A recipe file, read and parsed once: its name, path and YAML tree."""

    name: str  # the file's stem: `recipe` in the run's config and its run directory's parent
    path: Path
    tree: dict[str, Any] = field(repr=False)  # the parsed YAML, as Hydra would load it
    package: str | None = None  # a `# @package` header, if the file has one

    @property
    def config_name(self) -> str:
        """The name the recipe is stored under in Hydra's ConfigStore (unique per file)."""
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        return f"ft_recipe_{self.name}_{digest}"

    def store(self) -> None:
        """Put the parsed recipe into Hydra's ConfigStore, where composition finds it by
        config_name (the recipe's directory stays Hydra's primary config dir)."""
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(name=self.config_name, node=self.tree, package=self.package)

    def has_key(self, key_path: str) -> bool:
        """Whether the recipe itself sets `key_path` (e.g. 'train.lr')."""
        node: Any = self.tree
        for part in key_path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def defaults_name(self, group: str) -> bool:
        """Whether the recipe's defaults list names a config group (e.g. hparams_search)."""
        for entry in self.tree.get("defaults") or []:
            keys = entry.keys() if isinstance(entry, dict) else [entry]
            if any(str(k).replace("override ", "").lstrip("+/ ") == group for k in keys):
                return True
        return False

    def declared_search_path(self) -> list[str]:
        """The recipe's own `hydra.searchpath` entries, as written."""
        declared = self.tree.get("hydra")
        return list(declared.get("searchpath") or []) if isinstance(declared, dict) else []


def group_presets(group: str) -> list[str]:
    """The shipped presets of one config group, as `group=NAME` accepts them."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def preset_file(group: str, preset: str) -> Path:
    """The shipped YAML file of a preset."""
    return CONF_DIR / group / f"{preset}.yaml"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_groups() -> list[str]:
    """The config groups (conf/<group>/); conf/hydra holds Hydra's own (hydra/launcher=...)."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")


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


def read_recipe(recipe: str | Recipe) -> Recipe:
    """Find, read and parse a recipe (once). A YAML syntax error or a key repeated in one
    mapping names the file and line."""
    if isinstance(recipe, Recipe):
        return recipe
    path = resolve_recipe(recipe)
    text = path.read_text()
    try:
        tree = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).split("\n")[0]
        raise UserError(
            f"{where}: malformed YAML: {problem}. Fix the syntax at that line."
        ) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise UserError(
            f"{path}: a recipe is a YAML mapping (defaults:, train:, ...), got {tree!r}"
        )
    from hydra.plugins.config_source import ConfigSource

    package = ConfigSource._get_header_dict(text[:HEADER_CHARS]).get("package")
    return Recipe(path.stem, path, tree, package)


def _unique_key_loader() -> Any:
    """OmegaConf's YAML loader (what Hydra reads configs with: `1e-4` is a float), refusing a key
    repeated in one mapping with the line of its first use."""
    from omegaconf._utils import get_yaml_loader

    base = get_yaml_loader()

    class UniqueKeyLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key '{key}' (first at line {seen[key]})",
                        key_node.start_mark,
                    )
                seen[key] = line
            return yaml.SafeLoader.construct_mapping(self, node, deep=deep)

    return UniqueKeyLoader


def user_search_path(recipe: Recipe, overrides: list[str]) -> list[str]:
    """The user's own config dirs: the recipe's `hydra.searchpath` (relative entries are relative
    to the recipe file), then a `hydra.searchpath=[...]` override (e.g. from --config-dir)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entries = recipe.declared_search_path()
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
            path = str((recipe.path.parent / path).resolve())
        found.append(f"{scheme}://{Path(path).expanduser() if scheme == 'file' else path}")
    return found


def search_path_override(recipe: Recipe, overrides: list[str]) -> str:
    """The one `hydra.searchpath=[...]` override: the user's dirs, then ft's presets and recipes
    (so a user's preset of the same name wins)."""
    entries = [*user_search_path(recipe, overrides), *SHIPPED_SEARCH_PATH]
    return "hydra.searchpath=[" + ",".join(f"'{entry}'" for entry in entries) + "]"


def override_key(override: str) -> str:
    """The key an override sets: '+train.lr=1' -> 'train.lr'."""
    return override.split("=", 1)[0].lstrip("+~")
