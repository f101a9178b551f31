"""The training loop. It reads top to bottom: setup, train step, evaluate, checkpoint, finish.

Single-process runs call `train()` in the CLI's process; multi-process runs start this module under
`accelerate launch` with the run directory, and every rank reads the same resolved config.yaml.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import yaml

from framework.checkpoint import check_resume, read_trainer_state, save_checkpoint, set_rng_state
from framework.config.schema import RunConfig
from framework.errors import UserError
from framework.registry import HARDWARE, LOGGERS, MODELS, PEFT_METHODS, TASKS
from framework.run_dir import METRICS_FILE, MetricsLog, read_metrics, redact

log = logging.getLogger("ft")

ADAPTER_DIR = "adapter"
SUMMARY_FILE = "summary.json"


class TrainingInterrupted(Exception):
    """Raised after a checkpoint was written because of SIGTERM/SIGINT or a non-finite loss."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """SIGTERM/SIGINT ask for a checkpoint at the next step boundary; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.requested = signum
        log.warning("%s received: saving a checkpoint at the next step boundary "
                    "(Ctrl-C again to abort at once)", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def linear_module_names(model: Any) -> list:
    """Distinct short names of the linear-like layers, for target_modules error messages."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.split(".")[-1])
    return sorted(names)


def apply_peft(run: RunConfig, model: Any, family: Any) -> Any:
    """Wrap the base model with the configured PEFT method (peft does the work)."""
    from peft import get_peft_model

    method = PEFT_METHODS.get(run.peft.name)
    peft_config = method.build(run.peft, run.task.name, family, model.config)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as error:
        if "not found in the base model" in str(error) or "target_modules" in str(error):
            raise UserError(
                f"peft.target_modules={method.targets(run.peft, family)}: no such modules in "
                f"{type(model).__name__}. Its linear layers are: "
                f"{', '.join(linear_module_names(model))}") from None
        raise UserError(f"peft={run.peft.name}: peft rejected the config: "
                        f"{str(error).splitlines()[0]}") from None


def build_optimizer(run: RunConfig, model: Any) -> Any:
    import torch

    groups = PEFT_METHODS.get(run.peft.name).param_groups(run.peft, model, run.train)
    profile_optimizer = HARDWARE.get(run.hardware.name).build_optimizer(run.hardware, groups, run.train)
    if profile_optimizer is not None:  # e.g. DeepSpeed's CPU Adam for ZeRO-Offload
        return profile_optimizer
    if run.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=run.train.lr, momentum=0.9,
                               weight_decay=run.train.weight_decay)
    return torch.optim.AdamW(groups, lr=run.train.lr, weight_decay=run.train.weight_decay)


def estimate_checkpoint_bytes(model: Any) -> int:
    """Trainable weights + Adam's two moments, fp32 (4 bytes each), plus 1 MiB of metadata."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable * 4 * 3 + (1 << 20)


def train(run: RunConfig, run_dir: Path) -> Dict[str, float]:
    """Run one training job; return the final evaluation metrics (the sweep objective too)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from framework.data.loading import load_raw_splits
    from framework.models.loading import load_model, load_tokenizer, resolve_checkpoint, torch_dtype

    # ---- setup: accelerator, tokenizer, data, model, adapter --------------------------------
    profile = HARDWARE.get(run.hardware.name)
    tracker = LOGGERS.get(run.logger.name).tracker
    accelerator = Accelerator(
        **profile.accelerator_kwargs(run.hardware, run.train),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=tracker, project_dir=str(run_dir))
    if tracker:
        accelerator.init_trackers(run.logger.project or run.recipe)
    set_seed(run.seed)
    main = accelerator.is_main_process
    metrics_log = MetricsLog(run_dir, enabled=main)
    family = MODELS.get(run.model.name)

    with accelerator.main_process_first():  # rank 0 builds/converts cached checkpoints first
        checkpoint = resolve_checkpoint(run.model)
        tokenizer = load_tokenizer(run.model, checkpoint)
    task = TASKS.get(run.task.name)(run.task, run.data, tokenizer, family)
    raw = load_raw_splits(run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    with accelerator.main_process_first():  # rank 0 fills the datasets cache, others reuse it
        tokenized = task.tokenize(raw.splits)

    method = PEFT_METHODS.get(run.peft.name)
    load_kwargs = {"dtype": torch_dtype(run.model.dtype, profile.on_gpu(run.hardware)),
                   **profile.load_kwargs(run.hardware), **method.load_kwargs(run.peft)}
    model = load_model(run.model, checkpoint, task.auto_model, task.model_kwargs(), load_kwargs)
    model = method.prepare_base(run.peft, model, run.train)  # QLoRA: k-bit training prep
    if run.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    with profile.adapting(run, model):  # device_map: adapters of offloaded layers
        model = apply_peft(run, model, family)
    if main:
        trainable, total = model.get_nb_trainable_parameters()
        log.info("trainable parameters: %d of %d (%.4f%%)", trainable, total, 100 * trainable / total)

    # Each DataLoader gets its own generator so that creating an iterator does not draw from
    # the global torch RNG (which dropout uses): resume then replays the exact RNG stream.
    def loader(split: str, shuffle: bool, batch_size: int) -> Any:
        return DataLoader(tokenized[split], batch_size=batch_size, shuffle=shuffle,
                          collate_fn=task.collate, num_workers=run.train.num_workers,
                          generator=torch.Generator().manual_seed(run.seed))

    eval_batch = run.train.eval_batch_size or run.train.batch_size
    train_loader = loader("train", True, run.train.batch_size)
    eval_loaders = {split: loader(split, False, eval_batch)
                    for split in ("validation", "test") if split in tokenized}

    # Steps are optimizer steps. Tokens per step = world size x batch_size x grad_accum x length.
    micro_batches_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    steps_per_epoch = max(1, math.ceil(micro_batches_per_epoch / run.train.grad_accum))
    total_steps = run.train.max_steps or steps_per_epoch * run.train.epochs
    method.prepare_model(run.peft, model, total_steps)

    optimizer = build_optimizer(run, model)
    scheduler = get_scheduler(run.train.scheduler, optimizer,
                              num_warmup_steps=int(run.train.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, train_loader, *prepared_eval = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders.values())
    eval_loaders = dict(zip(eval_loaders, prepared_eval))
    # The scheduler is stepped by hand once per optimizer step (not per process), and saved too.
    accelerator.register_for_checkpointing(scheduler)
    method_state = method.training_state(accelerator.unwrap_model(model))  # e.g. AdaLoRA scores
    if method_state is not None:
        accelerator.register_for_checkpointing(method_state)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "total_steps": total_steps}
    resumed_rng: Optional[Dict[str, Any]] = None
    if run.resume:
        resume_from = check_resume(run, run_dir)
        accelerator.load_state(str(resume_from))
        state.update(read_trainer_state(resume_from))
        state["total_steps"] = total_steps
        rng_file = resume_from / f"rng_rank{accelerator.process_index}.json"
        resumed_rng = json.loads(rng_file.read_text())
        if main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from,
                     state["step"], state["epoch"], state["batch_in_epoch"])

    if run.train.save_every or run.train.save_every_minutes:  # every rank checks: all stop together
        free = shutil.disk_usage(run_dir).free
        need = estimate_checkpoint_bytes(model) * (run.train.keep_last + 1)
        if free < need:
            interval = (f"train.save_every={run.train.save_every}" if run.train.save_every
                        else f"train.save_every_minutes={run.train.save_every_minutes}")
            raise UserError(f"{interval}: {free >> 20} MiB free on "
                            f"{run_dir}, but checkpoints need about {need >> 20} MiB. Free space, "
                            f"lower train.keep_last, or move output_root")

    def evaluate(step: int) -> Dict[str, float]:
        model.eval()
        results: Dict[str, float] = {}
        for split, eval_loader in eval_loaders.items():
            prefix = "" if split == "validation" else f"{split}_"
            scores = task.evaluate(model, eval_loader, accelerator, raw=raw.splits.get(split))
            results.update({f"{prefix}{k}": v for k, v in scores.items()})
        model.train()
        metrics_log.write({"step": step, "split": "eval", **results})
        return results

    config_yaml = yaml.safe_dump(redact(run.raw), sort_keys=False)

    def checkpoint(step: int) -> Path:
        state_now = dict(state, step=step)
        try:
            path = save_checkpoint(accelerator, run_dir, step, state_now, run.train.keep_last,
                                   config_yaml)
        except OSError as error:
            raise TrainingInterrupted(
                f"could not save the checkpoint at step {step} ({error.strerror or error}); "
                f"the last complete checkpoint is kept. Free disk space and resume with "
                f"resume=auto run_dir={run_dir}", exit_code=1) from None
        metrics_log.write({"step": step, "event": "checkpoint", "path": str(path)})
        return path

    baseline: Dict[str, float] = {}
    if run.train.eval_before and state["step"] == 0:
        baseline = evaluate(0)
        if main:
            log.info("before training: %s", _fmt(baseline))
    elif run.train.eval_before:  # resumed: the baseline was recorded by the first attempt
        baseline = next((r for r in read_metrics(run_dir)
                         if r.get("split") == "eval" and r.get("step") == 0), {})
        baseline = {k: v for k, v in baseline.items() if k not in ("step", "split")}

    # ---- train --------------------------------------------------------------------------------
    model.train()
    progress = tqdm(total=total_steps, initial=state["step"], disable=not main, desc="train",
                    dynamic_ncols=True)
    running_loss = torch.zeros((), device=accelerator.device)  # summed on device: no host sync
    running_tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
    micro_since_log = 0
    last_log_time = time.perf_counter()
    last_save_time = time.monotonic()  # train.save_every_minutes counts from here (seconds)
    clip = run.train.max_grad_norm if run.train.max_grad_norm is not None else float("inf")
    final_metrics: Dict[str, float] = {}
    with StopSignals() as signals:
        while state["step"] < total_steps:
            train_loader.set_epoch(state["epoch"])
            epoch_loader = (accelerator.skip_first_batches(train_loader, state["batch_in_epoch"])
                            if state["batch_in_epoch"] else train_loader)
            batches = iter(epoch_loader)
            if resumed_rng is not None:  # after the iterator exists, as in the original run
                set_rng_state(resumed_rng)
                resumed_rng = None
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = task.compute_loss(model, batch)
                    accelerator.backward(loss)
                    running_loss += loss.detach().float()
                    if "attention_mask" in batch:
                        running_tokens += batch["attention_mask"].sum()
                    micro_since_log += 1
                    finite = True
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), clip)
                        # One host sync per optimizer step: the price of never stepping on NaN.
                        finite = grad_norm is None or math.isfinite(float(grad_norm))  # DeepSpeed: a float
                    if finite:
                        optimizer.step()
                        if accelerator.sync_gradients:
                            # Before zero_grad: AdaLoRA scores rank importance from the gradients.
                            method.on_step(accelerator.unwrap_model(model), state["step"] + 1)
                    optimizer.zero_grad()
                state["batch_in_epoch"] += 1
                if not accelerator.sync_gradients:
                    continue
                if not finite:
                    metrics_log.write({"step": state["step"], "event": "non_finite_loss",
                                       "policy": run.train.nan_policy})
                    if run.train.nan_policy == "stop":
                        path = checkpoint(state["step"])
                        raise TrainingInterrupted(
                            f"non-finite loss or gradient after step {state['step']}; the last good "
                            f"state is saved in {path}. Lower train.lr or check the data, then "
                            f"resume with resume={path}", exit_code=3)
                    # The update is skipped but the step still counts toward max_steps, so a run
                    # that keeps producing NaN ends instead of looping forever.
                    log.warning("non-finite gradient at step %d: update skipped", state["step"] + 1)
                elif not accelerator.optimizer_step_was_skipped:  # fp16 scaler overflow
                    scheduler.step()
                state["step"] += 1
                step = state["step"]
                progress.update(1)

                if run.train.log_every and step % run.train.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    mean_loss = float(accelerator.reduce(running_loss, "mean")) / max(micro_since_log, 1)
                    tokens = int(accelerator.reduce(running_tokens, "sum"))
                    record = {"step": step, "split": "train", "loss": mean_loss,
                              "lr": scheduler.get_last_lr()[0], "epoch": state["epoch"],
                              "tokens_per_s": tokens / max(now - last_log_time, 1e-9)}
                    metrics_log.write(record)
                    if tracker:
                        accelerator.log({k: v for k, v in record.items() if k != "split"}, step=step)
                    progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{record['lr']:.2e}",
                                         tok_s=f"{record['tokens_per_s']:.0f}")
                    running_loss.zero_()
                    running_tokens.zero_()
                    micro_since_log, last_log_time = 0, now
                if run.train.eval_every and step % run.train.eval_every == 0 and step < total_steps:
                    evaluate(step)
                minutes_due = (run.train.save_every_minutes is not None and
                               time.monotonic() - last_save_time >= 60 * run.train.save_every_minutes)
                # One collective for both flags: ranks must agree before a collective save.
                stop_now, minutes_due = _any_rank(accelerator, signals.requested is not None,
                                                  minutes_due)
                if run.train.save_every and step % run.train.save_every == 0 or stop_now or minutes_due:
                    path = checkpoint(step)
                    last_save_time = time.monotonic()
                    if stop_now:
                        raise TrainingInterrupted(
                            f"stopped by signal at step {step}; checkpoint saved in {path}. "
                            f"Resume with: ft train {run.recipe} resume=auto run_dir={run_dir}",
                            exit_code=128 + (signals.requested or signal.SIGTERM))
                if step >= total_steps:
                    break
            else:  # the epoch ran out before total_steps
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
    progress.close()

    # ---- finish: final evaluation, adapter, summary --------------------------------------------
    final_metrics = evaluate(state["step"])
    accelerator.wait_for_everyone()
    adapter_dir = run_dir / ADAPTER_DIR
    unwrapped = accelerator.unwrap_model(model)
    method.save_adapter(run.peft, unwrapped, str(adapter_dir), is_main_process=main,
                        state_dict=accelerator.get_state_dict(model))
    if main:
        tokenizer.save_pretrained(str(adapter_dir))
        task.save_artifacts(adapter_dir)
        summary = {"recipe": run.recipe, "steps": state["step"], "final": final_metrics,
                   "baseline": baseline, "primary_metric": task.primary_metric,
                   "greater_is_better": task.greater_is_better, "adapter": str(adapter_dir),
                   "metrics": str(run_dir / METRICS_FILE)}
        (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        log.info("done: %s; adapter saved to %s", _fmt(final_metrics), adapter_dir)
    accelerator.end_training()
    return final_metrics


def _any_rank(accelerator: Any, *flags: bool) -> Tuple[bool, ...]:
    """Each flag made true on every rank if it is true on one, in a single collective."""
    if accelerator.num_processes == 1:
        return tuple(flags)
    import torch

    counts = accelerator.reduce(torch.tensor([int(f) for f in flags], device=accelerator.device), "sum")
    return tuple(bool(c > 0) for c in counts.tolist())


def _fmt(metrics: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items())


def main(argv: Optional[list] = None) -> int:
    """Entry point of each rank under `accelerate launch -m framework.runner RUN_DIR`."""
    import contextlib
    import os

    from framework.cli import configure_logging, load_run_from_dir, run_log

    parser = argparse.ArgumentParser(description="ft runner (one rank of a launched run)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--config", default="config.yaml", help="config file inside run_dir")
    args = parser.parse_args(argv)
    configure_logging()
    main_rank = os.environ.get("RANK", "0") == "0"  # only rank 0 writes train.log
    try:
        run = load_run_from_dir(args.run_dir, args.config)
        with run_log(args.run_dir) if main_rank else contextlib.nullcontext():
            train(run, args.run_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    # A rank that crashes writes its traceback where the launcher's failure summary shows it.
    sys.exit(record(main)())
