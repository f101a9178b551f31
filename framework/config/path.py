"""The one config path, used by `ft train` (both doors), `ft validate`, `ft show`, `ft estimate`,
sweeps and their trials:

    compose (Hydra, the recipe read once) -> validate -> a run in which every preset's registry
    entry is resolved (run.plugins)

with a resume taking the run directory's saved config plus the overrides given now before it is
validated. Launched ranks read the run's saved config file (schema.load_saved_run), validated by
the same schema. Nothing here imports torch.
"""

from __future__ import annotations

from framework.config.compose import Composed, compose_recipe
from framework.config.recipe import Recipe
from framework.config.resume import continue_saved_config
from framework.config.schema import RunConfig, build_run_config


def validated_run(composed: Composed) -> RunConfig:
    """A composed config as the validated run it describes: with `resume`, the saved config of
    the run it continues, plus what the command line changes."""
    if composed.config.get("resume"):
        composed = continue_saved_config(composed)
    return build_run_config(composed.config, composed)


def load_run(recipe: str | Recipe, overrides: list[str] | None = None) -> RunConfig:
    """Compose a recipe with command-line overrides and validate it (see the module docstring)."""
    return validated_run(compose_recipe(recipe, list(overrides or [])))
