"""ft's shipped recipes. Installed as the package framework.recipes, so that Hydra finds
them on its pkg:// search path."""
