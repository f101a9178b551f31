"""The run directory: created once by the launching process, never shared between runs, holding
the resolved config (secrets redacted), the overrides, provenance, the metrics log, checkpoints,
the adapter and the summary. Every file name inside a run directory is defined here, and only here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from framework.core.errors import UserError
from framework.store.redaction import redact, redact_text, redact_yaml_file

CONFIG_FILE = "config.yaml"  # the resolved config the run started with (also in each checkpoint)
RESUME_CONFIG_GLOB = "config.resume-*.yaml"  # the config of each later resume, numbered from 1
OVERRIDES_FILE = "overrides.yaml"
PROVENANCE_FILE = "provenance.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"  # final and baseline metrics, written when the run finishes
TRIAL_FILE = "trial.json"  # a sweep trial's record: status, reason, exit code, config hash
TRAIN_LOG = "train.log"
ADAPTER_DIR = "adapter"  # save_pretrained adapter + tokenizer + TASK_FILE
# the last step's adapter when train.keep_best puts the best in adapter/
ADAPTER_LAST_DIR = "adapter_last"
CURVES_FILE = "curves.png"  # train/eval loss and the primary metric vs step (needs matplotlib)
MLFLOW_DIR = "mlruns"  # logger=mlflow's default local file store
# logger=wandb: the folder W&B creates in RUN_DIR (offline runs, staged artifacts)
WANDB_DIR = "wandb"
TENSORBOARD_DIR = "tensorboard"  # logger=tensorboard's event files
TASK_FILE = "ft_task.json"  # the task's label maps, beside the adapter
CHECKPOINTS_DIR = "checkpoints"
MERGED_DIR = "merged"  # default output of `ft merge`
PROFILE_DIR = "profile"  # train.profile's trace and op table
HYDRA_JOB_DIR = ".hydra"  # Hydra writes a sweep trial's config here before ft runs it
# Every name a run writes into its directory (glob patterns; ".NAME.partial" and ".NAME.old": an
# atomic write or a directory swap under way). With allow_nonempty_run_dir, a folder holding one of them is refused (the run
# would write over it).
RUN_WRITES = (
    CONFIG_FILE,
    RESUME_CONFIG_GLOB,
    OVERRIDES_FILE,
    PROVENANCE_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TRAIN_LOG,
    ADAPTER_DIR,
    ADAPTER_LAST_DIR,
    CURVES_FILE,
    MLFLOW_DIR,
    WANDB_DIR,
    TENSORBOARD_DIR,
    CHECKPOINTS_DIR,
    MERGED_DIR,
    PROFILE_DIR,
    ".*.partial",
    ".*.old",
)
# What a sweep adds to a trial's directory (its record, Hydra's job config, atomic-write temps).
# overwrite_old_run=delete removes only a folder that holds nothing but these and RUN_WRITES.
SWEEP_WRITES = (TRIAL_FILE, HYDRA_JOB_DIR, "*.tmp")


def redact_hydra_files(folder: Path, jobs: bool = False) -> None:
    """Redact what Hydra itself wrote (it saves the composed config and the overrides, a
    model.token too, before ft sees them): FOLDER/.hydra/*.yaml, FOLDER/*.yaml (multirun.yaml,
    a sweeper's results) and, with jobs=True once a sweep is over, every job's .hydra/*.yaml."""
    folder = Path(folder)
    patterns = [".hydra/*.yaml", "*.yaml"] + (["*/.hydra/*.yaml"] if jobs else [])
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.name != CONFIG_FILE or path.parent.name == ".hydra":  # ft's own: redacted
                redact_yaml_file(path)


class CreatedRunDir(NamedTuple):
    """The directory a new run writes into, and what became of an earlier run that was there."""

    path: Path
    created: bool  # made by this invocation (removable again if the run fails before training)
    earlier_run: Path | None = None  # overwrite_old_run=move: where the earlier run now is
    note: str | None = None  # for the run's log: what was moved where, or deleted


def create_run_dir(
    root: str,
    recipe: str,
    explicit: str | None,
    overwrite: bool,
    old_run: str = "move",
    allow_nonempty: bool = False,
    join: bool = False,
) -> CreatedRunDir:
    """Make a fresh run directory. Two runs in the same second get different directories.
    An explicit run_dir must be new, empty, or an ft run (refused unless overwrite=true, which
    moves that run aside or deletes it in one rename, so nothing of it is read as this run's);
    a folder holding anything else is refused before anything is written into it, unless
    allow_nonempty is set, and then never over one of its files. join: this machine joins the
    run the main machine of a multi-machine run made there (reused as it is)."""
    if explicit:
        return _explicit_run_dir(explicit, overwrite, old_run, allow_nonempty, join)
    base = Path(root).expanduser().resolve() / recipe
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1000):
        path = base / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            path.mkdir()  # atomic: fails if another run took this name first
            return CreatedRunDir(path, created=True)
        except FileExistsError:
            continue
    raise UserError(f"output_root='{root}': could not create a unique run directory under {base}")


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _entries(path: Path) -> list[str]:
    """A folder's entries, sorted, sub-folders marked with a trailing '/'."""
    return sorted(e.name + "/" * e.is_dir() for e in path.iterdir())


def _written_by(entry: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(entry.rstrip("/"), pattern) for pattern in patterns)


def _explicit_run_dir(
    explicit: str, overwrite: bool, old_run: str, allow_nonempty: bool, join: bool
) -> CreatedRunDir:
    path = Path(explicit).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(
            f"run_dir='{explicit}': {path} exists and is not a directory. Choose another run_dir"
        )
    if not path.exists():
        path.mkdir(parents=True)
        return CreatedRunDir(path, created=True)
    entries = _entries(path)
    if not entries:
        return CreatedRunDir(path, created=False)
    if is_run_dir(path):
        if join:  # the main machine of a multi-machine run made it: never moved, never refused
            return CreatedRunDir(path, False, None, f"joined the run in {path} (machine rank > 0)")
        if not overwrite:
            raise UserError(
                f"run_dir='{explicit}': already holds a run ({path / CONFIG_FILE}). "
                f"Choose another run_dir, resume it with resume=auto, or pass "
                f"overwrite=true to start afresh (the earlier run is moved aside)"
            )
        return _replace_run(path, entries, old_run)
    if not allow_nonempty:
        only_runs = " (overwrite=true replaces only an earlier ft run)" if overwrite else ""
        raise UserError(
            f"run_dir='{explicit}': not an ft run, it holds {_listing(entries)}; nothing was "
            f"written there{only_runs}. Choose another run_dir (a new or empty "
            f"folder), or pass allow_nonempty_run_dir=true to write the run beside these files"
        )
    clashes = [e for e in entries if _written_by(e, RUN_WRITES)]
    if clashes:
        raise UserError(
            f"run_dir='{explicit}' with allow_nonempty_run_dir=true: it already holds "
            f"{_listing(clashes)}, which this run would write over; nothing was written. "
            f"Move them out, or choose another run_dir"
        )
    return CreatedRunDir(path, created=False)


def _replace_run(path: Path, entries: list[str], old_run: str) -> CreatedRunDir:
    """overwrite=true: rename the earlier run away in one step (to RUN_DIR.replaced-TIME, or to
    a hidden sibling that is then deleted) and start in a new, empty directory."""
    if old_run == "delete":
        foreign = [e for e in entries if not _written_by(e, RUN_WRITES + SWEEP_WRITES)]
        if foreign:
            raise UserError(
                f"overwrite_old_run=delete: {path} also holds {_listing(foreign)}, which ft "
                f"did not write; nothing was deleted. Use overwrite_old_run=move to keep them "
                f"with the earlier run, or move them out first"
            )
    aside = _free_sibling(path, "delete" if old_run == "delete" else "replaced")
    try:
        os.rename(path, aside)  # atomic: the earlier run leaves RUN_DIR whole, or not at all
    except OSError as error:
        raise UserError(
            f"overwrite=true: could not move the earlier run in {path} aside to {aside} "
            f"({error.strerror or error}); nothing was changed. Move or remove it yourself, "
            f"or choose another run_dir"
        ) from None
    path.mkdir()
    if old_run == "delete":
        shutil.rmtree(aside, ignore_errors=True)
        return CreatedRunDir(path, True, None, f"overwrite=true: deleted the earlier run in {path}")
    return CreatedRunDir(
        path, True, aside, f"overwrite=true: moved the earlier run in {path} to {aside}"
    )


def _free_sibling(path: Path, why: str) -> Path:
    """A name beside `path` that nothing has: RUN_DIR.replaced-TIME for a run moved aside,
    .RUN_DIR.delete-TIME (hidden) for one about to be deleted."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    name = f".{path.name}.{why}-{stamp}" if why == "delete" else f"{path.name}.{why}-{stamp}"
    for attempt in range(1000):
        candidate = path.with_name(name if attempt == 0 else f"{name}_{attempt}")
        if not candidate.exists():
            return candidate
    raise UserError(f"overwrite=true: no free name beside {path} to move the earlier run to")


def replace_directory(new: Path, final: Path) -> None:
    """Put a wholly written directory in final's place. The old one is renamed away first and
    deleted after, so `final` never mixes the two (a crash between the renames leaves the old
    one as .NAME.old beside it)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)


def put_back_earlier_run(created: CreatedRunDir) -> bool:
    """After a run that replaced an earlier one (overwrite_old_run=move) failed before training
    and its directory was removed again: rename the earlier run back into place. True if done."""
    if created.earlier_run is None or created.path.exists() or not created.earlier_run.is_dir():
        return False
    os.rename(created.earlier_run, created.path)
    return True


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_files(run_dir: Path, config: dict[str, Any], overrides: list[str]) -> None:
    """Write the resolved config, the command-line overrides and provenance (all redacted)."""
    clean = redact(config)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(clean, sort_keys=False))
    (run_dir / OVERRIDES_FILE).write_text(yaml.safe_dump([redact_text(o) for o in overrides]))
    versions = {}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "hydra-core"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # not installed: provenance is best effort
            versions[package] = None
    provenance = {
        "argv": [redact_text(a) for a in sys.argv],
        "python": platform.python_version(),
        "host": platform.node(),
        "git_commit": _git_commit(),
        "versions": versions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (run_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))


def discard_unstarted_run(run_dir: Path) -> bool:
    """Remove a run directory this invocation created when the run failed before its first
    metrics record (at setup: bad data, a missing checkpoint, ...), so that no empty run is left
    to be mistaken for a real one. A run that trained at all is kept. True if removed."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS_FILE).exists() or (run_dir / CHECKPOINTS_DIR).exists():
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def adapter_folder(path: str | Path) -> Path | None:
    """The adapter folder `path` names: itself when it holds adapter_config.json, else a run
    directory's adapter/ (None when neither)."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / ADAPTER_DIR):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def adapter_run_config(folder: Path) -> Path | None:
    """The config.yaml of the run that saved an adapter folder (RUN_DIR/adapter*), if any."""
    for candidate in (folder / CONFIG_FILE, folder.parent / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def is_run_dir(path: Path) -> bool:
    """Whether a folder holds an ft run: its config and provenance (written together when the
    run starts; a user's own config.yaml alone is not a run)."""
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / PROVENANCE_FILE).is_file()


def resume_configs(run_dir: Path) -> list[Path]:
    """The configs of earlier resumes of a run, oldest first."""
    return sorted(
        Path(run_dir).glob(RESUME_CONFIG_GLOB), key=lambda p: int(p.stem.rsplit("-", 1)[1])
    )


def write_resume_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Record a resume's config beside the original (which is never overwritten); return it."""
    path = run_dir / RESUME_CONFIG_GLOB.replace("*", str(len(resume_configs(run_dir)) + 1))
    path.write_text(yaml.safe_dump(redact(config), sort_keys=False))
    return path


def resume_command(run_dir: Path, recipe: str) -> str:
    """The command that continues a run exactly: its recipe as it was given (a file's path made
    absolute), resume=auto and its directory; the run's saved config supplies everything else."""
    import shlex

    try:
        argv = json.loads((Path(run_dir) / PROVENANCE_FILE).read_text())["argv"]
        given = argv[argv.index("train") + 1]
        if given.endswith((".yaml", ".yml")) or "/" in given:
            given = str(Path(given).expanduser().resolve())
        recipe = given if Path(given).stem == recipe else recipe
    except (OSError, ValueError, KeyError, IndexError):
        pass  # no provenance (a launched rank's view is the same file): the recipe's name
    return f"ft train {shlex.quote(recipe)} resume=auto run_dir={shlex.quote(str(run_dir))}"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (Path(run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run, or None while it has none."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class MetricsLog:
    """Append-only metrics.jsonl, written by the main process only."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
