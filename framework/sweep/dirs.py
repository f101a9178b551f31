"""Where a sweep lives: hydra.sweep.dir as given, else OUTPUT_ROOT/sweeps/RECIPE-HASH of the
command (re-running it finds the same directory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from framework.core.errors import UserError
from framework.sweep.optuna import override_value


# ---- setting the sweep up -------------------------------------------------------------------------
def default_sweep_dir(output_root: str, recipe: str, overrides: list[str]) -> Path:
    """OUTPUT_ROOT/sweeps/RECIPE-HASH, HASH from the command's overrides: re-running the same
    command finds the same directory (and resumes it); another command gets its own. The
    number of Optuna trials is left out, so raising it continues the same study."""
    kept = sorted(
        o
        for o in overrides
        if o.lstrip("+").split("=", 1)[0] not in ("hydra.sweeper.n_trials", "hydra.sweep.dir")
    )
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:8]
    return (Path(output_root).expanduser() / "sweeps" / f"{recipe}-{digest}").resolve()


def resolve_sweep_dir(overrides: list[str], output_root: str, recipe: str) -> Path:
    """The sweep directory: hydra.sweep.dir as given (resolved once, so that a `${now:...}`
    in it names one directory), else ft's default."""
    given = override_value(overrides, "hydra.sweep.dir")
    if given is None:
        return default_sweep_dir(output_root, recipe, overrides)
    if "${" in given:
        import hydra.core.utils  # noqa: F401  (registers the `now` resolver)
        from omegaconf import OmegaConf

        try:
            given = str(OmegaConf.create({"d": given}).d)
        except Exception:
            raise UserError(
                f"hydra.sweep.dir={given}: only ${{now:...}} can be resolved before "
                f"the sweep starts; give a plain path"
            ) from None
    return Path(given).expanduser().resolve()
