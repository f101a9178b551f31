"""The run directory: created once by the launching process, never shared between runs, holding
the resolved config (secrets redacted), the overrides, provenance, the metrics log, checkpoints,
the adapter and the summary. Every file name inside a run directory is defined here, and only here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def create_run_dir(root: str, recipe: str, explicit: str | None, overwrite: bool) -> Path:
    """Make a fresh run directory. Two runs in the same second get different directories;
    an explicit directory that already holds a run is refused unless overwrite=true."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if (path / CONFIG_FILE).exists() and not overwrite:
            raise UserError(
                f"run_dir='{explicit}': already holds a run ({path / CONFIG_FILE}). "
                f"Choose another run_dir, resume it with resume=auto, or pass "
                f"overwrite=true to reuse it"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root).expanduser().resolve() / recipe
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(1000):
        path = base / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            path.mkdir()  # atomic: fails if another run took this name first
            return path
        except FileExistsError:
            continue
    raise UserError(f"output_root='{root}': could not create a unique run directory under {base}")


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
    import shutil

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
    return (Path(path) / CONFIG_FILE).is_file()


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
