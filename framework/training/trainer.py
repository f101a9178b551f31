"""The trainer. It reads top to bottom in three phases:

  set_up      accelerator, tokenizer, data, model + adapter, loaders, optimizer, resume
  run_steps   the step loop: micro-batches -> optimizer step -> log / evaluate / checkpoint
  finish      final evaluation, adapter, summary

Single-process runs call `train()` in the CLI's process; multi-process runs start this module
under `accelerate launch -m framework.training.trainer RUN_DIR`, and every rank reads the same resolved
config file. Steps are optimizer steps; one step sees world size x batch_size x grad_accum
examples.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from framework.config.schema import RunConfig, load_saved_run
from framework.core.errors import TrainingInterrupted, UserError, run_guarded
from framework.objectives.base import ObjectiveContext, reference_context
from framework.store.checkpoint import (
    base_fingerprint,
    check_base,
    checkpoint_bytes,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint_state,
    read_trainer_state,
    save_checkpoint,
    set_rng_state,
    use_adapter_only_checkpoints,
)
from framework.store.logs import configure_logging, run_log
from framework.store.redaction import redact
from framework.store.run_dir import (
    ADAPTER_DIR,
    ADAPTER_LAST_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    MetricsLog,
    read_metrics,
    replace_directory,
    resume_command,
    write_summary,
)
from framework.training.best import BestKeeper
from framework.training.curves import write_run_curves
from framework.training.libraries import skip_unused_deepspeed_import
from framework.training.loaders import build_loader
from framework.training.memory import optimizer_checkpoint_bytes
from framework.training.meter import LossMeter
from framework.training.model import REFERENCE_ADAPTER, build_model
from framework.training.optim import build_optimizer, build_scheduler
from framework.training.profiling import StepProfiler
from framework.training.signals import StopSignals
from framework.training.speed import choose_fast_paths, compiled
from framework.training.steps import UpdateGuard, loss_scale, micro_batch_groups, syncing, tokens_in
from framework.training.token_cache import tokenize_cached
from framework.training.tracking import Trackers, logging_dir, tracker_names

log = logging.getLogger("ft")
# Multi-process runs without a log interval: steps between two agreements on a stop signal or a
# timed save (an agreement is one collective; a signal waits at most this many steps).
AGREE_EVERY = 10


@dataclass
class Position:
    """Where the run is; saved in every checkpoint so that a resume continues exactly here."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed


@dataclass
class Setup:
    """What set_up() built and the later phases use."""

    run: RunConfig
    run_dir: Path
    accelerator: Any
    task: Any  # the run's Task instance (columns, tokenization, collation, generation)
    objective: Any  # the run's Objective instance (loss, step metrics, evaluation)
    context: Any  # the ObjectiveContext: prepared model, accelerator, reference forward
    method: Any  # the PEFT method's registry entry
    tokenizer: Any
    model: Any  # the peft model, prepared by Accelerate
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]  # split -> loader (validation, and test when the data has it)
    raw_splits: dict[str, Any]  # untokenized splits (generation metrics read the raw texts)
    metrics_log: MetricsLog
    total_steps: int
    trackers: Trackers  # the logger group's trackers (TensorBoard, MLflow, W&B), maybe none
    base: dict[str, Any]  # fingerprint of the frozen base (checkpoints record it, resume checks it)
    best: Any = None  # BestKeeper: train.keep_best / early stopping (set by train())
    started: float = 0.0  # time.monotonic() when the step loop starts (seconds; summary's time)


# ---- phase 1: setup -------------------------------------------------------------------------
def set_up(run: RunConfig, run_dir: Path) -> Setup:
    """Build everything a run needs, in order: accelerator, tokenizer, data, model + adapter,
    loaders, optimizer and schedule (all prepared by Accelerate)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    from framework.models.loading import load_tokenizer, resolve_checkpoint

    skip_unused_deepspeed_import()
    profile = run.plugins.profile
    accelerator = Accelerator(
        **profile.accelerator_kwargs(run.hardware, run.train),
        dataloader_config=DataLoaderConfiguration(  # pinned batches copy to the GPU asynchronously
            use_seedable_sampler=True,
            non_blocking=run.train.pin_memory and profile.on_gpu(run.hardware),
        ),
        dynamo_backend="no",  # ft compiles itself (train.compile, training/speed.py)
        log_with=tracker_names(run) or None,
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(logging_dir(run_dir))
        ),
    )
    trackers = Trackers(run, run_dir, accelerator)
    trackers.start()
    set_seed(run.seed)
    family = run.plugins.family
    with accelerator.main_process_first():  # rank 0 builds/converts cached checkpoints first
        checkpoint = resolve_checkpoint(family, run.model)
        tokenizer = load_tokenizer(family, run.model, checkpoint)
    base = base_fingerprint(checkpoint, run.model.revision)
    task, objective, raw_splits, tokenized = load_data(run, accelerator, tokenizer, family)
    method = run.plugins.method
    # Seed again: building a tiny model on first use (cold cache) or tokenizing drew random
    # numbers after the first set_seed; model heads and adapters must not depend on that.
    set_seed(run.seed)
    model = build_model(run, checkpoint, task, profile, method, family)
    if accelerator.is_main_process:
        trainable, total = model.get_nb_trainable_parameters()
        log.info(
            "trainable parameters: %d of %d (%.4f%%)", trainable, total, 100 * trainable / total
        )
        log.info(
            "device: %s; mixed precision: %s; base weights: %s",
            accelerator.device,
            accelerator.mixed_precision,
            weights_description(model),
        )

    fast = choose_fast_paths(run, task, model, method, profile, accelerator.is_main_process)
    task.use_fast_paths(fast)
    if accelerator.is_main_process:
        log.info("speed: %s", ", ".join(f"{k}={v}" for k, v in fast.describe().items()))

    def loader(split: str, shuffle: bool, batch_size: int) -> Any:
        return build_loader(
            run,
            tokenized[split],
            task.collate,
            shuffle,
            batch_size,
            accelerator.num_processes,
            profile.on_gpu(run.hardware),
        )

    eval_batch = run.train.eval_batch_size or run.train.batch_size
    train_loader = loader("train", True, run.train.batch_size)
    eval_loaders = {
        split: loader(split, False, eval_batch)
        for split in ("validation", "test")
        if split in tokenized
    }
    total_steps = count_steps(run, len(train_loader), accelerator.num_processes)
    method.prepare_model(run.peft, model, total_steps)
    optimizer = build_optimizer(run, model)
    scheduler = build_scheduler(run, optimizer, total_steps)
    model, optimizer, train_loader, *prepared_eval = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders.values()
    )
    model = compiled(model, run.train)
    context = ObjectiveContext(
        model,
        accelerator,
        reference_context(accelerator.unwrap_model(model), reference_adapter(run)),
        logits_only=fast.logits_only,
    )
    # The scheduler is stepped by hand once per optimizer step (not per process), and saved too.
    accelerator.register_for_checkpointing(scheduler)
    use_adapter_only_checkpoints(accelerator)  # the frozen base stays out of checkpoints
    method_state = method.training_state(accelerator.unwrap_model(model))  # e.g. AdaLoRA scores
    if method_state is not None:
        accelerator.register_for_checkpointing(method_state)
    return Setup(
        run,
        run_dir,
        accelerator,
        task,
        objective,
        context,
        method,
        tokenizer,
        model,
        optimizer,
        scheduler,
        train_loader,
        dict(zip(eval_loaders, prepared_eval)),
        raw_splits,
        MetricsLog(run_dir, enabled=accelerator.is_main_process),
        total_steps,
        trackers,
        base,
    )


def weights_description(model: Any) -> str:
    """The base weights' storage, e.g. 'torch.bfloat16' or '4-bit (bitsandbytes)'."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "4-bit (bitsandbytes)"
    if getattr(model, "is_loaded_in_8bit", False):
        return "8-bit (bitsandbytes)"
    return str(next(model.get_base_model().parameters()).dtype)


def load_data(
    run: RunConfig, accelerator: Any, tokenizer: Any, family: Any
) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """(task, objective, raw splits, tokenized splits): columns and labels are checked on the raw
    data; the task learns which objective reads its batches before it tokenizes."""
    from framework.data.loading import load_raw_splits

    task = run.plugins.task_class(run.task, run.data, tokenizer, family)
    objective = run.plugins.objective(run.objective, task)
    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.use_objective(objective, run.train)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    with accelerator.main_process_first():  # rank 0 fills the token cache, others reuse it
        tokenized = tokenize_cached(run, task, tokenizer, raw.splits)
    return task, objective, raw.splits, tokenized


def reference_adapter(run: RunConfig) -> str | None:
    """The adapter that is the reference policy: the frozen copy of the starting adapter when a
    reference-based objective trains on from model.adapter; None: the adapter disabled."""
    if run.model.adapter and run.plugins.objective.reference_based:
        return REFERENCE_ADAPTER
    return None


def count_steps(run: RunConfig, micro_batches: int, processes: int) -> int:
    """Optimizer steps of the run: train.max_steps, else epochs x steps per epoch, where each
    process sees 1/processes of the micro-batches and a step takes grad_accum of them."""
    per_process = math.ceil(micro_batches / processes)
    steps_per_epoch = max(1, math.ceil(per_process / run.train.grad_accum))
    return run.train.max_steps or steps_per_epoch * run.train.epochs


def restore(setup: Setup, checkpoint: Path | None) -> tuple[Position, dict | None]:
    """The position to start from and, when resuming, this rank's RNG states (applied once the
    first epoch's iterator exists, as in the original run). Loads the checkpoint's states."""
    if checkpoint is None:
        return Position(), None
    check_base(checkpoint, setup.base, setup.run.model.checkpoint or setup.run.model.name)
    load_checkpoint_state(setup.accelerator, checkpoint)
    saved = read_trainer_state(checkpoint)
    position = Position(saved["step"], saved["epoch"], saved["batch_in_epoch"])
    # keep_best / early stopping continue (an older checkpoint's best: from metrics.jsonl)
    setup.best.load_state_dict(saved.get("best"), evaluations(setup.run_dir))
    rng_file = checkpoint / f"rng_rank{setup.accelerator.process_index}.json"
    if setup.accelerator.is_main_process:
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            checkpoint,
            position.step,
            position.epoch,
            position.batch_in_epoch,
        )
    return position, json.loads(rng_file.read_text())


def evaluations(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: metrics} of the evaluations in a run's metrics.jsonl (a re-run step: its last)."""
    return {
        r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")}
        for r in read_metrics(run_dir)
        if r.get("split") == "eval"
    }


def checkpoint_space_needed(setup: Setup) -> int:
    """Disk one checkpoint of this run takes (bytes, estimated): the trainable weights and the
    optimizer's state, or the whole model where the hardware profile's checkpoints hold it."""
    run, train = setup.run, setup.run.train
    profile = run.plugins.profile
    return checkpoint_bytes(
        setup.accelerator.unwrap_model(setup.model),
        optimizer_checkpoint_bytes(train.optimizer, profile.memory_layout(run.hardware, train)),
        whole_model=profile.checkpoint_holds_base(run.hardware),
    )


def check_checkpoint_space(setup: Setup) -> None:
    """Refuse to start when the disk cannot hold keep_last + 1 checkpoints (every rank checks,
    so all stop together)."""
    train = setup.run.train
    if not (train.save_every or train.save_every_minutes):
        return
    free = shutil.disk_usage(setup.run_dir).free
    need = checkpoint_space_needed(setup) * (train.keep_last + 1)
    if free < need:
        interval = (
            f"train.save_every={train.save_every}"
            if train.save_every
            else f"train.save_every_minutes={train.save_every_minutes}"
        )
        raise UserError(
            f"{interval}: {free >> 20} MiB free on {setup.run_dir}, but checkpoints "
            f"need about {need >> 20} MiB. Free space, lower train.keep_last, or "
            f"move output_root"
        )


# ---- evaluation and checkpoints (used by every phase) ---------------------------------------
def evaluate(setup: Setup, step: int) -> dict[str, float]:
    """Metrics on every held-out split (validation unprefixed, test as test_*), logged."""
    setup.model.eval()
    results: dict[str, float] = {}
    for split, loader in setup.eval_loaders.items():
        prefix = "" if split == "validation" else f"{split}_"
        scores = setup.objective.evaluate(setup.context, loader, raw=setup.raw_splits.get(split))
        results.update({f"{prefix}{k}": v for k, v in scores.items()})
    setup.model.train()
    setup.metrics_log.write({"step": step, "split": "eval", **results})
    setup.trackers.log("eval", results, step)
    return results


def evaluate_baseline(setup: Setup, position: Position) -> dict[str, float]:
    """train.eval_before: the untrained model's metrics (a resumed run reads the first attempt's)."""
    if not setup.run.train.eval_before:
        return {}
    if position.step == 0:
        baseline = evaluate(setup, 0)
        if setup.accelerator.is_main_process:
            log.info("before training: %s", _fmt(baseline))
        return baseline
    first = next(
        (r for r in read_metrics(setup.run_dir) if r.get("split") == "eval" and r.get("step") == 0),
        {},
    )
    return {k: v for k, v in first.items() if k not in ("step", "split")}


def save(setup: Setup, position: Position) -> Path:
    """An atomic checkpoint of the training state at this position (the frozen base aside). A
    failed write (a full disk) stops the run with one line: the checkpoint, the space it needs,
    the one kept."""
    config_yaml = yaml.safe_dump(redact(setup.run.raw), sort_keys=False)
    try:
        path = save_checkpoint(
            setup.accelerator,
            setup.run_dir,
            position.step,
            {**asdict(position), "best": setup.best.state_dict()},
            setup.run.train.keep_last,
            config_yaml,
            setup.base,
        )
    except OSError as error:
        raise TrainingInterrupted(save_failure(setup, position.step, error), exit_code=1) from None
    setup.metrics_log.write({"step": position.step, "event": "checkpoint", "path": str(path)})
    return path


def save_failure(setup: Setup, step: int, error: OSError) -> str:
    """The one line of a checkpoint that could not be written: which, why, the space it needs
    (when the disk or quota is full), the complete checkpoint that is kept, and how to resume."""
    target = checkpoint_path(setup.run_dir, step)
    reason = write_failure_reason(setup, error, checkpoint_space_needed(setup))
    kept = latest_checkpoint(setup.run_dir)
    kept_text = f"{kept} is kept" if kept else "no earlier checkpoint exists"
    return (
        f"could not write checkpoint {target} at step {step} ({reason}); it is not used, "
        f"{kept_text}. Free disk space (or lower train.keep_last) and resume with: "
        f"{resume_command(setup.run_dir, setup.run.recipe)}"
    )


def write_failure_reason(setup: Setup, error: OSError, need: int) -> str:
    """Why a write failed; for a full disk or quota, the MiB free and the MiB `need` (bytes)."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(setup.run_dir).free
        reason += f": {free >> 20} MiB free there, it needs about {max(need >> 20, 1)} MiB"
    return reason


# ---- phase 2: the step loop -----------------------------------------------------------------
def run_steps(
    setup: Setup, position: Position, signals: StopSignals, resumed_rng: dict | None
) -> None:
    """Train until total_steps: each optimizer step is grad_accum micro-batches, then the log,
    evaluation and checkpoint decisions of that step."""
    from tqdm.auto import tqdm

    run, accelerator = setup.run, setup.accelerator
    setup.model.train()
    main = accelerator.is_main_process
    progress = tqdm(
        total=setup.total_steps,
        initial=position.step,
        disable=not main,
        desc="train",
        dynamic_ncols=True,
    )
    meter = LossMeter(accelerator)
    guard = UpdateGuard(accelerator, setup.optimizer, setup.method, run.train)
    profiler = StepProfiler(setup.run_dir, run.train.profile and main)
    last_save = time.monotonic()  # train.save_every_minutes counts from here (seconds)
    stopping = False  # early stopping fired: save, then finish
    try:
        while position.step < setup.total_steps and not stopping:
            batches = epoch_batches(setup, position, resumed_rng)
            for group in micro_batch_groups(batches, run.train.grad_accum):
                resumed_rng = None
                finite = optimizer_step(setup, group, meter, guard, position.step)
                position.batch_in_epoch += len(group)
                complete_step(setup, position, finite)
                profiler.step()
                progress.update(1)
                if settle_due(run.train, position.step, setup.total_steps):
                    settle(setup, position, guard)  # the loop's only host sync, with the log's
                if log_due(run.train, position.step, setup.total_steps):
                    record = log_train(setup, position, meter)
                    progress.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_s']:.0f}",
                    )
                if eval_due(run.train, position.step, setup.total_steps):
                    stopping = setup.best.observe(
                        position.step,
                        evaluate(setup, position.step),
                        lambda: export_adapter(setup, ADAPTER_DIR),
                    )
                stop_now, minutes_due = stop_or_timed_save(setup, position, signals, last_save)
                if stop_now or minutes_due or stopping or save_due(run.train, position.step):
                    settle(setup, position, guard)
                    path = save(setup, position)
                    last_save = time.monotonic()
                    if stop_now:
                        raise TrainingInterrupted(
                            f"stopped by signal at step {position.step}; checkpoint saved in "
                            f"{path}. Resume with: {resume_command(setup.run_dir, run.recipe)}",
                            exit_code=signals.exit_code(),
                        )
                if position.step >= setup.total_steps or stopping:
                    break
            else:  # the epoch ran out before total_steps
                position.epoch += 1
                position.batch_in_epoch = 0
    finally:
        progress.close()  # a stop or failure message then starts on a line of its own
    profiler.stop()


def epoch_batches(setup: Setup, position: Position, resumed_rng: dict | None) -> Iterator:
    """The rest of the current epoch's micro-batches (a resumed run skips those it consumed)."""
    loader = setup.train_loader
    loader.set_epoch(position.epoch)
    if position.batch_in_epoch:
        loader = setup.accelerator.skip_first_batches(loader, position.batch_in_epoch)
    batches = iter(loader)
    if resumed_rng is not None:  # after the iterator exists, as in the original run
        set_rng_state(resumed_rng)
    return batches


def optimizer_step(
    setup: Setup, group: list, meter: LossMeter, guard: UpdateGuard, step: int
) -> bool | None:
    """Forward and backward the step's micro-batches, each loss a sum over its items scaled by
    the step's item count (steps.loss_scale); then clip and update. Returns whether the update was
    finite (False: nothing was updated), or None when only the device knows (guard.settle)."""
    accelerator, model = setup.accelerator, setup.model
    scale = loss_scale(setup.objective, group, accelerator)
    for index, batch in enumerate(group):
        with syncing(accelerator, model, sync=index == len(group) - 1):
            total, items, metrics = setup.objective.loss_terms(setup.context, batch)
            accelerator.backward(total * scale)
        meter.add(total, items, tokens_in(batch), metrics)
    finite = guard.update(model, step)
    if finite is not False:
        # Before zero_grad: AdaLoRA scores rank importance from the gradients.
        setup.method.on_step(accelerator.unwrap_model(model), step + 1)
    setup.optimizer.zero_grad()
    return finite


def complete_step(setup: Setup, position: Position, finite: bool | None) -> None:
    """Count the optimizer step (a skipped one too, so that a run that keeps producing NaN ends
    instead of looping forever, and the schedule follows the step count)."""
    if finite is False:
        non_finite(setup, position, 1, position.step + 1)
    if not setup.accelerator.optimizer_step_was_skipped:  # fp16 scaler overflow
        setup.scheduler.step()
    position.step += 1


def non_finite(setup: Setup, position: Position, skipped: int, first: int) -> None:
    """`skipped` updates from step `first` on were not applied (non-finite loss or gradient):
    log it, and under nan_policy=stop save the state (the last good one) and stop."""
    policy = setup.run.train.nan_policy
    setup.metrics_log.write(
        {
            "step": position.step,
            "event": "non_finite_loss",
            "policy": policy,
            "skipped_steps": skipped,
            "first_step": first,
        }
    )
    if policy == "stop":
        path = save(setup, position)
        raise TrainingInterrupted(
            f"non-finite loss or gradient at step {first}; no update was applied from then on and "
            f"the last good state is saved in {path}. Lower train.lr or check the data, then "
            f"resume with resume={path}",
            exit_code=3,
        )
    log.warning("non-finite gradient: %d update(s) skipped since step %d", skipped, first)


def settle_due(train: Any, step: int, total_steps: int) -> bool:
    """Steps at which on-device skip counts are read: before any log, eval or checkpoint."""
    return (
        log_due(train, step, total_steps)
        or eval_due(train, step, total_steps)
        or save_due(train, step)
    )


def settle(setup: Setup, position: Position, guard: UpdateGuard) -> None:
    """Read the updates skipped on the device since the last settle (one host sync)."""
    skipped, first = guard.settle()
    if skipped:
        non_finite(setup, position, skipped, first)


def log_due(train: Any, step: int, total_steps: int) -> bool:
    return bool(train.log_every) and step % train.log_every == 0 or step == total_steps


def eval_due(train: Any, step: int, total_steps: int) -> bool:
    """Evaluations between steps; the final one is finish()'s."""
    return bool(train.eval_every) and step % train.eval_every == 0 and step < total_steps


def save_due(train: Any, step: int) -> bool:
    return bool(train.save_every) and step % train.save_every == 0


def log_train(setup: Setup, position: Position, meter: LossMeter) -> dict[str, Any]:
    """Write the train record of this log step (the loop's only host sync besides the NaN check)."""
    record = {
        "step": position.step,
        "split": "train",
        **meter.flush(),
        "lr": setup.scheduler.get_last_lr()[0],
        "epoch": position.epoch,
    }
    setup.metrics_log.write(record)
    setup.trackers.log("train", record, position.step)
    return record


def agree_due(train: Any, step: int, total_steps: int) -> bool:
    """Steps at which the processes of a multi-process run agree on a stop signal and a timed
    save: the settle steps, and every AGREE_EVERY steps when no log interval makes them frequent.
    A signal or save_every_minutes is acted on at the first such step (one process: every step)."""
    return settle_due(train, step, total_steps) or (not train.log_every and step % AGREE_EVERY == 0)


def stop_or_timed_save(
    setup: Setup, position: Position, signals: StopSignals, last_save: float
) -> tuple[bool, bool]:
    """(a stop signal arrived, train.save_every_minutes has passed), the same on every process:
    they must agree before a collective save. One collective, and only at agree_due steps, so
    that the steps between them never wait for the other processes (nor the host for the
    device)."""
    train, accelerator = setup.run.train, setup.accelerator
    if accelerator.num_processes > 1 and not agree_due(train, position.step, setup.total_steps):
        return False, False
    minutes_due = (
        train.save_every_minutes is not None
        and time.monotonic() - last_save >= 60 * train.save_every_minutes
    )
    stop_now, minutes_due = any_rank(accelerator, signals.requested is not None, minutes_due)
    return stop_now, minutes_due


def any_rank(accelerator: Any, *flags: bool) -> tuple[bool, ...]:
    """Each flag made true on every rank if it is true on one, in a single collective."""
    if accelerator.num_processes == 1:
        return tuple(flags)
    import torch

    counts = accelerator.reduce(
        torch.tensor([int(f) for f in flags], device=accelerator.device), "sum"
    )
    return tuple(bool(c > 0) for c in counts.tolist())


# ---- phase 3: finish ------------------------------------------------------------------------
def finish(setup: Setup, position: Position, baseline: dict[str, float]) -> dict[str, float]:
    """Final evaluation, then the adapter (loadable with PeftModel.from_pretrained), the
    tokenizer and label maps beside it, and summary.json. Returns the run's result: the metrics
    of the adapter in adapter/ (with keep_best the best evaluation's, not the last step's)."""
    accelerator, run_dir = setup.accelerator, setup.run_dir
    last_metrics = setup.best.metrics_at(position.step) or evaluate(setup, position.step)
    setup.best.observe(position.step, last_metrics, lambda: export_adapter(setup, ADAPTER_DIR))
    accelerator.wait_for_everyone()
    # With keep_best, adapter/ already holds the best evaluation's adapter; the last goes beside.
    adapter_dir = export_adapter(setup, ADAPTER_LAST_DIR if setup.best.keep else ADAPTER_DIR)
    if setup.best.keep and setup.best.state.best_step is None:  # no finite eval: keep the last
        export_adapter(setup, ADAPTER_DIR)
    final_is, final_step, final_metrics = setup.best.reported(position.step, last_metrics)
    summary = {
        "recipe": setup.run.recipe,
        "steps": position.step,
        "final": final_metrics,  # the kept adapter's evaluation: what the run reports
        "final_is": final_is,  # "best" (train.keep_best) or "last"
        "final_step": final_step,
        "last": last_metrics,  # the last step's evaluation (= final unless keep_best)
        "baseline": baseline,
        "primary_metric": setup.best.metric,
        "greater_is_better": setup.best.greater_is_better,
        "adapter": str(run_dir / ADAPTER_DIR),
        "metrics": str(run_dir / METRICS_FILE),
        **setup.best.summary(),
        "train_seconds": round(time.monotonic() - setup.started, 3),
    }  # this attempt's loop
    if accelerator.is_main_process:
        write_summary(run_dir, summary)
        write_run_curves(run_dir)
        if final_is == "best":
            log.info("last step %d: %s", position.step, _fmt(last_metrics))
        log.info(
            "done: %s (%s evaluation, step %d); adapter saved to %s",
            _fmt(final_metrics),
            final_is,
            final_step,
            run_dir / ADAPTER_DIR,
        )
        if adapter_dir != run_dir / ADAPTER_DIR:
            log.info("the last step's adapter: %s", adapter_dir)
    setup.trackers.finish(
        summary, {n: run_dir / n for n in (ADAPTER_DIR, ADAPTER_LAST_DIR)}, position.step
    )
    accelerator.end_training()
    return final_metrics


def export_adapter(setup: Setup, name: str) -> Path:
    """Save the adapter (loadable with PeftModel.from_pretrained) with the tokenizer and the
    task's label maps beside it into RUN_DIR/name; every rank calls this (collective). Written
    beside it first and then swapped in, so that a full disk never leaves a half-written adapter
    (nor destroys the best one kept so far): the run stops with one line instead."""
    accelerator = setup.accelerator
    adapter_dir = setup.run_dir / name
    partial = setup.run_dir / f".{name}.partial"
    try:
        if accelerator.is_main_process and partial.exists():
            shutil.rmtree(partial)
        setup.method.save_adapter(
            setup.run.peft,
            accelerator.unwrap_model(setup.model),
            str(partial),
            is_main_process=accelerator.is_main_process,
            state_dict=accelerator.get_state_dict(setup.model),
        )
        if accelerator.is_main_process:
            setup.tokenizer.save_pretrained(str(partial))
            setup.task.save_artifacts(partial)
            replace_directory(partial, adapter_dir)
    except OSError as error:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        trainable = (p for p in setup.model.parameters() if p.requires_grad)
        need = sum(p.numel() * p.element_size() for p in trainable)
        reason = write_failure_reason(setup, error, need)
        kept = f"{adapter_dir} is unchanged" if adapter_dir.is_dir() else "nothing was written"
        raise TrainingInterrupted(
            f"could not write the adapter {adapter_dir} ({reason}); {kept}. Free disk space "
            f"and resume with: {resume_command(setup.run_dir, setup.run.recipe)}",
            exit_code=1,
        ) from None
    return adapter_dir


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


# ---- the whole run --------------------------------------------------------------------------
def train(run: RunConfig, run_dir: Path, resume_from: Path | None = None) -> dict[str, float]:
    """Run one training job (continuing checkpoint `resume_from` when given); return the run's
    result, the kept adapter's evaluation (a sweep's objective too)."""
    setup = set_up(run, Path(run_dir))
    setup.best = BestKeeper(run.train, *setup.objective.judged_by(setup.task))
    position, resumed_rng = restore(setup, resume_from)
    check_checkpoint_space(setup)
    setup.objective.before_loop(setup.context)
    baseline = evaluate_baseline(setup, position)
    setup.started = time.monotonic()
    with StopSignals() as signals:
        run_steps(setup, position, signals, resumed_rng)
    return finish(setup, position, baseline)


def main(argv: list | None = None) -> int:
    """Entry point of each rank under `accelerate launch -m framework.training.trainer RUN_DIR`."""
    parser = argparse.ArgumentParser(description="ft trainer (one rank of a launched run)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", default=CONFIG_FILE, help="config file inside run_dir")
    parser.add_argument("--resume-from", type=Path, help="checkpoint directory to continue")
    args = parser.parse_args(argv)
    configure_logging()
    main_rank = os.environ.get("RANK", "0") == "0"  # only rank 0 writes train.log

    def run_rank() -> int:
        run = load_saved_run(args.run_dir, args.config)
        with run_log(args.run_dir) if main_rank else contextlib.nullcontext():
            train(run, args.run_dir, args.resume_from)
        return 0

    return run_guarded(run_rank)


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    # A rank that crashes writes its traceback where the launcher's failure summary shows it.
    sys.exit(record(main)())
