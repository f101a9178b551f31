"""`ft`: the command line. Compose once with Hydra, validate into a typed RunConfig, then act.

    ft train RECIPE [key=value ...]     train (in-process, or `accelerate launch` for several ranks)
    ft validate RECIPE [key=value ...]  check the composed config only (never imports torch)
    ft show RECIPE [key=value ...]      print the composed, resolved config
    ft list [GROUP] [--task T]          config groups, presets, recipes and registry entries
    ft eval RUN_DIR ...                 evaluate a trained adapter (or several) on a split
    ft predict RUN_DIR --input F        write predictions (embeddings for feature_extraction)
    ft merge RUN_DIR                    write a merged full model (methods that can merge)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

from framework.errors import USER_ERROR_EXIT_CODE, UserError

HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p",
               "--shell-completion", "-sc", "--config-dir", "-cd", "--hydra-help")

OVERRIDE_HELP = """\
overrides (Hydra syntax):
  group=preset          pick a preset: peft=ia3  hardware=cpu  task=seq_cls
  group.key=value       set a key: peft.r=32  train.lr=3e-4  data.max_length=128
  +group.key=value      add a key the preset does not have (checked by the schema)
  -m group=a,b ...      sweep (Hydra multirun): -m peft=lora,ia3 train.lr=1e-4,3e-4
  --cfg job             print the composed config and exit (Hydra's own flag)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (tests and tools swap it), not the one at setup."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _redacting(handler: logging.Handler) -> logging.Handler:
    from framework.run_dir import redact_text

    class Redact(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg = redact_text(record.getMessage())
            record.args = ()
            return True

    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    handler.addFilter(Redact())
    return handler


def configure_logging() -> None:
    """INFO logs to stderr, with secrets redacted (idempotent)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_redacting(_StderrHandler()))
    for noisy in ("datasets", "httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # peft calls this transformers API on every run; the user cannot act on the deprecation.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


class run_log:
    """Also log to RUN_DIR/train.log while a run executes (removed afterwards, so that later
    runs in the same process do not write into this run's log)."""

    def __init__(self, run_dir: Path):
        self.handler = _redacting(logging.FileHandler(run_dir / "train.log"))

    def __enter__(self) -> "run_log":
        configure_logging()
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


def groups_help() -> str:
    from framework.config.compose import group_presets, recipe_groups, recipe_names

    lines = ["config groups and presets (group=preset):"]
    for group in recipe_groups():
        lines.append(f"  {group:<9} {', '.join(group_presets(group))}")
    lines.append(f"recipes: {', '.join(recipe_names())}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ft", formatter_class=_Formatter,
        description="ft: YAML-config-driven fine-tuning of Hugging Face models with PEFT adapters.",
        epilog=groups_help() + "\n\n" + OVERRIDE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def recipe_command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=_Formatter,
                             epilog=groups_help() + "\n\n" + OVERRIDE_HELP)
        cmd.add_argument("recipe", help="a recipe name from recipes/ or a path to a recipe YAML")
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides (see below)")
        return cmd

    recipe_command("train", "train a recipe")
    recipe_command("validate", "compose and check a recipe; exit 2 with one line per problem")
    recipe_command("show", "print the composed, resolved config of a recipe")
    listing = sub.add_parser("list", help="list config groups, presets, recipes and registries")
    listing.add_argument("group", nargs="?", help="one group (model, peft, task, hardware, data, "
                                                  "train, logger) or 'recipes'")
    listing.add_argument("--task", help="with 'peft': only methods that serve this task")
    ev = sub.add_parser("eval", help="evaluate trained adapters on a split of their data")
    ev.add_argument("run_dirs", nargs="+", type=Path, help="run directories of finished runs")
    ev.add_argument("--split", default="validation", help="validation (default) or test")
    pr = sub.add_parser("predict", help="run a trained adapter on a JSONL file of inputs")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("--input", type=Path, required=True, help="JSONL rows with the task's columns")
    pr.add_argument("--output", type=Path, help="JSONL output (default: stdout)")
    mg = sub.add_parser("merge", help="merge the adapter into the base model (safetensors)")
    mg.add_argument("run_dir", type=Path)
    mg.add_argument("--output", type=Path, help="default: RUN_DIR/merged")
    return parser


def load_run_from_dir(run_dir: Path, config_file: str = "config.yaml"):
    """The RunConfig a run directory was started with (what every launched rank reads)."""
    import yaml

    from framework.config.schema import build_run_config

    path = Path(run_dir) / config_file
    if not path.is_file():
        raise UserError(f"{run_dir}: not an ft run directory (no {config_file})")
    return build_run_config(yaml.safe_load(path.read_text()), lambda key: str(path))


def compose_and_validate(recipe: str, overrides: List[str]):
    """Compose with Hydra and validate; return (composed, run). Never imports torch."""
    from framework.config.compose import compose_recipe
    from framework.config.schema import build_run_config

    composed = compose_recipe(recipe, overrides)
    return composed, build_run_config(composed.config, composed.origin)


def cmd_validate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    composed, run = compose_and_validate(args.recipe, args.overrides)
    choices = ", ".join(f"{g}={p}" for g, p in composed.choices.items())
    print(f"ok: {composed.recipe_path} is valid ({choices}) "
          f"in {time.perf_counter() - start:.2f}s")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import yaml

    from framework.run_dir import redact

    composed, _ = compose_and_validate(args.recipe, args.overrides)
    print(f"# recipe: {composed.recipe_path}")
    print(f"# presets: {', '.join(f'{g}={p}' for g, p in composed.choices.items())}")
    print(yaml.safe_dump(redact(composed.config), sort_keys=False), end="")
    return 0


def _resume_run_dir(run) -> Optional[Path]:
    """Where a resumed run continues: the checkpoint's run, run_dir, or the recipe's latest run."""
    from framework.checkpoint import latest_checkpoint, run_dir_of_checkpoint

    if run.resume is None:
        return None
    if run.resume != "auto":
        path = Path(run.resume).expanduser().resolve()
        return run_dir_of_checkpoint(path) if path.name.startswith("checkpoint-") else path.parent
    if run.run_dir:
        return Path(run.run_dir).expanduser().resolve()
    base = Path(run.output_root).expanduser().resolve() / run.recipe
    runs = sorted((p for p in base.glob("*") if p.is_dir() and latest_checkpoint(p)),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"resume=auto: no run of recipe '{run.recipe}' under {base} has a complete "
                        f"checkpoint. Pass run_dir=PATH, or train without resume")
    return runs[-1]


def prepare_run_dir(composed, run) -> Path:
    """Create (or, when resuming, reuse) the run directory and write the run's files into it."""
    import yaml

    from framework.checkpoint import check_resume
    from framework.run_dir import create_run_dir, redact, write_run_files

    resumed = _resume_run_dir(run)
    if resumed is not None:
        if not (resumed / "config.yaml").exists():
            raise UserError(f"resume={run.resume}: {resumed} is not an ft run directory")
        check_resume(run, resumed)  # before any model is loaded or file written
        # Keep the original config; record this invocation beside it, never overwriting.
        n = len(list(resumed.glob("config.resume-*.yaml"))) + 1
        (resumed / f"config.resume-{n}.yaml").write_text(
            yaml.safe_dump(redact(composed.config), sort_keys=False))
        return resumed
    run_dir = create_run_dir(run.output_root, run.recipe, run.run_dir, run.overwrite)
    write_run_files(run_dir, composed.config, composed.overrides)
    return run_dir


def execute(composed, run) -> dict:
    """Train a validated run: in-process for one rank, `accelerate launch` for several.
    Returns the final metrics (Hydra sweeps use the task's primary metric as the objective)."""
    from framework.registry import HARDWARE

    if getattr(run, "dry_run", False):  # print what would run; create and start nothing
        from framework.hardware.plan import print_dry_run

        print_dry_run(run, composed)
        return {}
    run_dir = prepare_run_dir(composed, run)
    run.run_dir = str(run_dir)
    with run_log(run_dir):
        logging.getLogger("ft").info("run directory: %s", run_dir)
        profile = HARDWARE.get(run.hardware.name)
        if profile.world_size(run.hardware) > 1 or getattr(profile, "always_launch", False):
            return launch(run, run_dir, profile)
        from framework.runner import train

        return train(run, run_dir)


def launch(run, run_dir: Path, profile) -> dict:
    """Start every rank with `accelerate launch -m framework.runner RUN_DIR`; a failing rank
    makes the whole run fail with that rank's exit code (Accelerate tears the group down)."""
    import json

    from framework.runner import SUMMARY_FILE

    config_file = "config.yaml"
    resumes = sorted(run_dir.glob("config.resume-*.yaml"), key=lambda p: p.stat().st_mtime)
    if run.resume and resumes:
        config_file = resumes[-1].name
    from framework.hardware.base import launch_command

    command = launch_command(profile, run.hardware, run_dir, config_file)
    logging.getLogger("ft").info("launching: %s", " ".join(command))
    env = dict(os.environ, PYTHONUNBUFFERED="1", **profile.launch_env(run.hardware))
    if run.model.token:  # the saved config is redacted: hand the secret to ranks out of band
        env["HF_TOKEN"] = run.model.token
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise LaunchFailed(result.returncode)
    summary = run_dir / SUMMARY_FILE
    return json.loads(summary.read_text())["final"] if summary.exists() else {}


class LaunchFailed(Exception):
    def __init__(self, code: int):
        super().__init__(f"a rank failed with exit code {code}; see its error above")
        self.code = code


def cmd_train(args: argparse.Namespace) -> int:
    composed, run = compose_and_validate(args.recipe, args.overrides)
    execute(composed, run)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from framework.listing import print_listing

    print_listing(args.group, args.task)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and any(a.split("=", 1)[0] in HYDRA_FLAGS for a in argv[1:]):
        from framework.hydra_app import run_hydra_app

        return run_hydra_app(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    from framework.runner import TrainingInterrupted

    commands = {"train": cmd_train, "validate": cmd_validate, "show": cmd_show, "list": cmd_list,
                "eval": _lazy("cmd_eval"), "predict": _lazy("cmd_predict"),
                "merge": _lazy("cmd_merge")}
    try:
        return commands[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except TrainingInterrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    except LaunchFailed as failed:
        print(f"error: {failed}", file=sys.stderr)
        return failed.code
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ft list | head`: the reader left; stop quietly, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _lazy(name: str):
    def run(args: argparse.Namespace) -> int:
        from framework import inference

        return getattr(inference, name)(args)

    return run


if __name__ == "__main__":
    sys.exit(main())
