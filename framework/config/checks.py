"""Cross-group checks: choices that are each valid but impossible together. They run after the
typed check and before anything heavy is imported or loaded; every problem is reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.core.params import RunView, TrainConfig


def _train_problems(train: TrainConfig) -> list[str]:
    found = []
    positive = {"batch_size": train.batch_size, "grad_accum": train.grad_accum}
    for key, value in positive.items():
        if value < 1:
            found.append(f"train.{key}={value}: must be >= 1")
    if train.tokens_per_batch is not None and train.tokens_per_batch < 1:
        found.append(
            f"train.tokens_per_batch={train.tokens_per_batch}: must be >= 1 (or null to count "
            f"examples with train.batch_size)"
        )
    if train.lr <= 0:
        found.append(f"train.lr={train.lr}: must be > 0")
    if train.max_steps is not None and train.max_steps < 1:
        found.append(f"train.max_steps={train.max_steps}: must be >= 1 (or null to use epochs)")
    if train.max_steps is None and train.epochs < 1:
        found.append(f"train.epochs={train.epochs}: must be >= 1")
    if not 0.0 <= train.warmup_ratio < 1.0:
        found.append(f"train.warmup_ratio={train.warmup_ratio}: must be in [0, 1)")
    for key in ("eval_every", "save_every", "log_every"):
        if getattr(train, key) < 0:
            found.append(f"train.{key}={getattr(train, key)}: must be >= 0")
    if train.save_every_minutes is not None and train.save_every_minutes <= 0:
        found.append(
            f"train.save_every_minutes={train.save_every_minutes}: must be > 0 "
            f"(or null for step-based checkpoints only)"
        )
    if train.keep_last < 1:
        found.append(f"train.keep_last={train.keep_last}: must be >= 1")
    return found


def best_problems(train: TrainConfig) -> list[str]:
    """train.keep_best and early stopping judge evaluations, so they need train.eval_every."""
    found = []
    wanted = [k for k in ("keep_best", "early_stopping_patience") if getattr(train, k)]
    if wanted and not train.eval_every:
        value = getattr(train, wanted[0])
        shown = str(value).lower() if isinstance(value, bool) else value  # as YAML spells it
        found.append(
            f"train.{wanted[0]}={shown}: needs evaluations during "
            f"training; set train.eval_every=N (optimizer steps between evaluations)"
        )
    if train.early_stopping_patience is not None and train.early_stopping_patience < 1:
        found.append(
            f"train.early_stopping_patience={train.early_stopping_patience}: must be >= 1 "
            f"(evaluations without improvement), or null to never stop early"
        )
    if train.early_stopping_delta < 0:
        found.append(
            f"train.early_stopping_delta={train.early_stopping_delta}: must be >= 0 "
            f"(in the primary metric's units)"
        )
    return found


def model_problems(run: RunView, family: Any, config: Any) -> list[str]:
    """The task and PEFT method against the checkpoint's architecture (a config.json mapping or a
    transformers config; None when it is not known before download: checked again at train time,
    on the meta device, before any weight is read)."""
    found = []
    task_name = run.task.name
    why_not = family.unsupported(task_name, config)
    if why_not:
        subject = (
            f"model family '{run.model.name}'"
            if run.model.name != "auto"
            else f"model type '{family.model_type_of(config)}'"
        )
        served = ", ".join(family.served_tasks(config)) or "none"
        found.append(
            f"task={task_name} with {subject}: not supported ({why_not}); it serves: {served}"
        )
    reason = run.plugins.method.incompatibility(task_name, family.traits(config))
    if reason:
        found.append(f"peft={run.peft.name} with task={task_name}: {reason}")
    return found


def data_problems(run: Any) -> list[str]:
    """The sources of data=mix, streaming and continued-pretraining blocks against the task, the
    training settings and the hardware."""
    from framework.data.mix import mix_problems

    data, train, task = run.data, run.train, run.plugins.task_class
    found = mix_problems(data, getattr(run.plugins.source, "mixes", False))
    for index, (entry, params) in enumerate(zip(run.plugins.sources, run.data_sources)):
        # The entry names its own keys as data.source.*; here they sit in data.sources[i].source.
        found += [
            problem.replace("data.source.", f"data.sources[{index}].source.", 1)
            for problem in entry.problems(params)
        ]
    if data.streaming:
        if train.max_steps is None:
            found.append(
                "data.streaming=true: a stream has no length to count epochs in; set "
                "train.max_steps=N"
            )
        if not task.can_stream:
            found.append(
                f"data.streaming=true: task={run.task.name} reads its whole training split "
                f"before training (labels, lengths); stream with task=causal_lm, or set "
                f"data.streaming=false"
            )
        if train.num_workers:
            found.append(
                f"train.num_workers={train.num_workers}: data.streaming=true reads the stream in "
                f"the training process (its position is saved with each checkpoint); set "
                f"train.num_workers=0"
            )
        if train.group_by_length:
            found.append(
                "train.group_by_length=true: a stream has no lengths to sort by; set "
                "train.group_by_length=false (data.shuffle_buffer shuffles the stream)"
            )
        processes = run.plugins.profile.world_size(run.hardware)
        if processes > 1:
            found.append(
                f"data.streaming=true: streams are read by one process; this run starts "
                f"{processes} (hardware={run.hardware.name}). Use one process, or "
                f"data.streaming=false"
            )
    if data.shuffle_buffer < 0:
        found.append(f"data.shuffle_buffer={data.shuffle_buffer}: must be >= 0 (0 = stream order)")
    if data.block_size is not None:
        if data.block_size < 8:
            found.append(f"data.block_size={data.block_size}: must be at least 8 tokens")
        if not task.takes_blocks:
            found.append(
                f"data.block_size={data.block_size}: task={run.task.name} does not cut text into "
                f"blocks; continued pretraining is task=causal_lm (text documents)"
            )
    return found


def template_check(run: RunView) -> tuple[list[str], list[str]]:
    """(problems, notes) of rows that need a chat template against the run's tokenizer, read from
    files only (the tokenizer's config, the data's first row; no torch, no download). What cannot
    be known yet (a hub tokenizer not in the local cache) is a note, checked again at train time."""
    plugins = run.plugins
    read_first_row = getattr(plugins.source, "first_row", None)
    first_row = read_first_row(run.data_source) if read_first_row is not None else None
    checkpoint = (
        f"model.checkpoint='{run.model.checkpoint}'"
        if run.model.checkpoint
        else "the tiny random model (model.random_init)"
    )
    problem = plugins.task_class.no_template_problem(run.task, run.data, first_row, checkpoint)
    if problem is None:
        return [], []
    has_template = plugins.family.has_chat_template(run.model)
    if has_template is False:
        return [problem], []
    if has_template is None:
        return [], [
            f"note: the rows need a chat template, and whether the tokenizer of {checkpoint} "
            f"has one cannot be checked yet (its files are not in the local cache); ft train "
            f"checks it once they are downloaded"
        ]
    return [], []


def validation_notes(run: RunView) -> list[str]:
    """What validation could not check without downloading, one line each."""
    return template_check(run)[1]


BASE_KEYS = ("name", "checkpoint", "revision", "gguf_file", "random_init")  # what makes the base


def adapter_problems(run: Any) -> list[str]:
    """model.adapter: an adapter is there, of the run's PEFT method, saved on the run's base
    (what differs is named: the saving run's config when there is one, else the adapter's
    base_model_name_or_path against model.checkpoint)."""
    import json

    import yaml

    from framework.store.run_dir import adapter_folder, adapter_run_config

    path = run.model.adapter
    if not path:
        return []
    folder = adapter_folder(path)
    if folder is None:
        return [
            f"model.adapter={path}: no adapter there (no adapter_config.json in it or in its "
            f"adapter/). Fix: give a run directory of ft train or a folder saved with "
            f"save_pretrained"
        ]
    saved = json.loads((folder / "adapter_config.json").read_text())
    method = run.plugins.method
    if method.peft_type and saved.get("peft_type") != method.peft_type:
        return [
            f"model.adapter={path}: a {saved.get('peft_type')} adapter, but peft={run.peft.name} "
            f"makes {method.peft_type} adapters. Fix: choose the peft preset the adapter was "
            f"trained with"
        ]
    config_file = adapter_run_config(folder)
    if config_file is not None:
        before = (yaml.safe_load(config_file.read_text()) or {}).get("model") or {}
        differ = [
            f"model.{k}: adapter's {before.get(k)!r}, this run's {getattr(run.model, k)!r}"
            for k in BASE_KEYS
            if k != "random_init" and before.get(k) != getattr(run.model, k)
        ]
        now_init = dataclasses.asdict(run.model.random_init) if run.model.random_init else None
        before_init = before.get("random_init") or {}
        if bool(before_init) != bool(now_init) or (
            now_init and {k: before_init.get(k, v) for k, v in now_init.items()} != now_init
        ):
            differ.append("model.random_init: the adapter's tiny model is not this run's")
        if differ:
            return [
                f"model.adapter={path}: trained on another base ({'; '.join(differ)}). Fix: "
                f"set the model the adapter was trained on (see {config_file})"
            ]
        return []
    base = saved.get("base_model_name_or_path")
    if base and run.model.checkpoint and base != run.model.checkpoint:
        return [
            f"model.adapter={path}: saved on base '{base}', but model.checkpoint="
            f"{run.model.checkpoint}. Fix: model.checkpoint={base}"
        ]
    return []


def reference_free(data_kind: str) -> list[str]:
    """Registered objectives that read `data_kind` batches and need no reference."""
    from framework.core.registry import OBJECTIVES

    return [
        name
        for name in OBJECTIVES.names()
        if OBJECTIVES.get(name).data_kind == data_kind and not OBJECTIVES.get(name).reference_based
    ]


def objective_problems(run: Any) -> list[str]:
    """The objective's own settings, the data it reads against what the task gives, and a
    reference-based loss against an adapter that is not the identity at initialisation."""
    plugins = run.plugins
    objective, name = plugins.objective, run.objective.name
    found = objective.params_problems(run.objective, run)
    kinds = plugins.task_class.data_kinds
    if objective.data_kind not in kinds:
        readers = ", ".join(
            f"task={task}" for task in plugins.task_class.tasks_giving(objective.data_kind)
        )
        found.append(
            f"objective={name} with task={run.task.name}: the objective reads "
            f"{objective.data_kind} batches and the task gives {', '.join(sorted(kinds))}. Fix: "
            f"{readers or 'another task'}, or objective=cross_entropy for the task's own loss"
        )
    if objective.reference_based:
        reason = plugins.method.not_identity_at_init(run.peft)
        if reason:
            found.append(
                f"peft={run.peft.name} with objective={name}: {reason}; {name} compares the "
                f"policy with the reference (the adapter disabled), which must be the starting "
                f"model. Fix: peft=lora with peft.init=true (a fresh LoRA starts as the identity)"
                + "".join(
                    f", or objective={other}" for other in reference_free(objective.data_kind)
                )
            )
    return found


def combination_problems(run: RunView) -> list[str]:
    """Every impossible combination in a typed RunConfig, as one line each."""
    plugins = run.plugins
    family = plugins.family
    found = model_problems(run, family, run.architecture)
    found += plugins.method.params_problems(run.peft, run)
    found += plugins.profile.problems(run.hardware, run)
    found += plugins.task_class.params_problems(run.task, run)
    found += objective_problems(run) + adapter_problems(run)
    found += plugins.source.problems(run.data_source)
    found += data_problems(run)
    for name, params in run.logger.items():
        found += plugins.loggers[name].problems(params)
    found += template_check(run)[0]
    if run.data.num_proc is not None and run.data.num_proc < 1:
        found.append(
            f"data.num_proc={run.data.num_proc}: must be >= 1 (or null for the number of cores)"
        )
    found += _train_problems(run.train) + best_problems(run.train)
    if run.data.max_length < 8:
        found.append(f"data.max_length={run.data.max_length}: must be at least 8 tokens")
    if run.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
        found.append(f"model.dtype={run.model.dtype}: use auto, float32, bfloat16 or float16")
    if run.model.random_init is None and not run.model.checkpoint:
        found.append(
            "model.checkpoint: missing; set a hub id or a local directory "
            "(or model.random_init for a tiny test model)"
        )
    checkpoint = run.model.checkpoint or ""
    if (
        checkpoint.startswith(("/", "./", "../", "~"))
        and not Path(checkpoint).expanduser().exists()
    ):
        found.append(
            f"model.checkpoint='{checkpoint}': no such directory. Give a model directory "
            f"saved with save_pretrained, or a hub id"
        )
    if run.resume not in (None, "auto") and not Path(run.resume).expanduser().exists():
        found.append(
            f"resume='{run.resume}': no such checkpoint; use resume=auto or the path of "
            f"a checkpoint-* directory of an earlier run"
        )
    return found


def check_combination(run: RunView) -> None:
    """Raise one UserError listing every impossible combination in the run."""
    found = combination_problems(run)
    if found:
        raise UserError(f"incompatible choices ({len(found)}):", found)
