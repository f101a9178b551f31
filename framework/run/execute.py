"""One run, from a validated RunConfig (framework/config/path.py) to its result: run directory ->
train in-process (one process) or `accelerate launch` the trainer (several). `ft train`, each job
of Hydra's door and each sweep trial come through here, so all behave the same.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import NamedTuple

from framework.config.resume import resume_target
from framework.config.schema import RunConfig
from framework.core.errors import LaunchFailed, UserError
from framework.store.logs import configure_logging, run_log
from framework.store.run_dir import (
    CONFIG_FILE,
    CreatedRunDir,
    create_run_dir,
    discard_unstarted_run,
    put_back_earlier_run,
    read_summary,
    write_resume_config,
    write_run_files,
)

log = logging.getLogger("ft")


class Prepared(NamedTuple):
    """A validated run with its directory, ready to train."""

    run: RunConfig
    run_dir: Path
    config_file: str  # the file in run_dir the ranks read: config.yaml, or the resume's own
    resume_from: Path | None  # the checkpoint to continue, if resuming
    created: CreatedRunDir | None = None  # a new run's directory (None when resuming)


class Finished(NamedTuple):
    run_dir: Path | None  # None for a dry run
    # the run's result, its kept adapter's evaluation (a sweep's objective: its primary metric)
    metrics: dict[str, float]


def prepare_run_dir(run: RunConfig) -> Prepared:
    """Create (or, when resuming, reuse) the run directory and write the run's files into it.
    Resume checks run first, so a refused resume writes nothing."""
    target = resume_target(run)
    if target is not None:
        # Keep the original config; record this invocation beside it, never overwriting.
        resume_config = write_resume_config(target.run_dir, run.raw)
        return Prepared(run, target.run_dir, resume_config.name, target.checkpoint)
    created = create_run_dir(
        run.output_root,
        run.recipe,
        run.run_dir,
        run.overwrite,
        run.overwrite_old_run,
        run.allow_nonempty_run_dir,
        join=run.plugins.profile.joins_run_dir(run.hardware),
    )
    write_run_files(created.path, run.raw, list(run.origin.overrides))
    return Prepared(run, created.path, CONFIG_FILE, None, created)


def execute(run: RunConfig) -> Finished:
    """Train a validated run: in-process for one rank, `accelerate launch` for several."""
    if run.dry_run:  # print what would run; create and start nothing
        from framework.run.dry_run import print_dry_run

        print_dry_run(run)
        return Finished(None, {})
    configure_logging()  # choosing a checkpoint may warn (a corrupt one passed over)
    prepared = prepare_run_dir(run)
    try:
        with run_log(prepared.run_dir):
            log.info("run directory: %s", prepared.run_dir)
            if prepared.created is not None and prepared.created.note:
                log.info("%s", prepared.created.note)  # what overwrite=true did, in train.log too
            from framework.training.memory import warn_if_too_big  # meta device; logs, never fails

            profile = run.plugins.profile
            if profile.world_size(run.hardware) > 1 or profile.always_launch:
                # Beside the ranks, which take far longer to start: no wait for torch's import.
                threading.Thread(target=warn_if_too_big, args=(run,), daemon=True).start()
                return Finished(prepared.run_dir, launch(prepared))
            warn_if_too_big(run)
            from framework.training.trainer import train

            return Finished(prepared.run_dir, train(run, prepared.run_dir, prepared.resume_from))
    except (UserError, KeyboardInterrupt):
        # Its one-line message says everything; a crash (a bug, a failed rank) keeps its
        # directory, whose train.log helps to report it. Only a directory this invocation made
        # is removed, and an earlier run it moved aside goes back in its place.
        created = prepared.created
        if created is not None and created.created and discard_unstarted_run(created.path):
            log.info("removed %s: the run failed before training started", created.path)
            if put_back_earlier_run(created):
                log.info("put the earlier run back from %s", created.earlier_run)
        raise


def launch(prepared: Prepared) -> dict[str, float]:
    """Start every rank with `accelerate launch -m framework.training.trainer RUN_DIR`; a failing rank
    makes the whole run fail with that rank's exit code (Accelerate tears the group down)."""
    from framework.hardware.base import launch_command

    run = prepared.run
    profile = run.plugins.profile
    command = launch_command(profile, run.hardware, prepared.run_dir, prepared.config_file)
    if prepared.resume_from is not None:
        command += ["--resume-from", str(prepared.resume_from)]
    log.info("launching: %s", " ".join(command))
    env = dict(os.environ, PYTHONUNBUFFERED="1", **profile.launch_env(run.hardware))
    if run.model.token:  # the saved config is redacted: hand the secret to ranks out of band
        env["HF_TOKEN"] = run.model.token
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise LaunchFailed(result.returncode)
    summary = read_summary(prepared.run_dir)
    return summary["final"] if summary else {}
