"""`ft validate` and `ft show`: a recipe composed and checked as `ft train` would check it (no
torch, nothing written); `--data` also reads the data with the model's tokenizer."""

from __future__ import annotations

import time

import yaml

from framework.config.path import load_run
from framework.store.redaction import redact


def validate(recipe: str, overrides: list[str], read_data: bool = False) -> str:
    """The `ok: ...` report of a valid recipe (a UserError names every problem otherwise)."""
    start = time.perf_counter()
    run = load_run(recipe, overrides)
    from framework.config.checks import validation_notes

    lines = validation_notes(run)  # what cannot be checked before a download
    if read_data:
        from framework.commands.data_check import check_data

        lines += check_data(run)
    choices = ", ".join(f"{g}={p}" for g, p in run.origin.choices.items())
    seconds = time.perf_counter() - start
    lines.append(f"ok: {run.origin.recipe_path} is valid ({choices}) in {seconds:.2f}s")
    return "\n".join(lines)


def show(recipe: str, overrides: list[str]) -> str:
    """The composed, resolved config of a recipe, secrets redacted, with where it came from."""
    run = load_run(recipe, overrides)
    return "\n".join(
        [
            f"# recipe: {run.origin.recipe_path}",
            f"# presets: {', '.join(f'{g}={p}' for g, p in run.origin.choices.items())}",
            yaml.safe_dump(redact(run.raw), sort_keys=False).rstrip("\n"),
        ]
    )
