"""`ft estimate RECIPE [overrides]`: the table of a run's peak memory per device (training/memory.py
does the arithmetic), the verdict against the device, and with --device-memory the cheapest
preset, micro-batch and checkpointing that fit."""

from __future__ import annotations

import math
from dataclasses import replace

from framework.config.path import load_run
from framework.config.recipe import Recipe, read_recipe
from framework.config.schema import RunConfig
from framework.core.errors import UserError
from framework.hardware.base import MemoryLayout, size_bytes
from framework.training.memory import (
    LOGITS_COPIES,
    OPTIMIZER_STATE_BYTES,
    DataShape,
    Estimate,
    ModelFacts,
    Settings,
    device_memory,
    estimate,
    fmt_bytes,
    model_facts,
    needed,
    read_data_shape,
    run_settings,
    sharing_processes,
)

# Presets tried by the fit suggestion, cheapest first: one GPU, then 2 GPUs sharding more and
# more, then offload to CPU RAM (slow). Each is tried without and with gradient checkpointing.
GPU_CANDIDATES = ("gpu", "zero2", "zero3", "zero3_offload")


def render(found: Estimate, run: RunConfig, limit: int, limit_name: str) -> str:
    """The table of components and the verdict against the device memory."""
    f, s = found.facts, found.settings
    lay = s.layout
    lines = [
        f"model: {run.model.checkpoint or run.model.name} + {run.peft.name}; parameters "
        f"{f.total_params:,} total, {f.trainable_params:,} trainable "
        f"({100 * f.trainable_params / max(f.total_params, 1):.3f}%)",
        f"run: hardware={run.hardware.name} ({'GPU' if s.on_gpu else 'CPU'}), micro-batch "
        f"{s.micro_batch} x {s.seq_len} tokens (data.max_length), {f.layers} blocks, "
        f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, "
        f"optimizer {s.optimizer}",
        data_line(s, bool(f.vocab)),
    ]
    objective = run.plugins.objective
    if s.sequences > 1 or s.no_grad_forwards:
        lines.append(
            f"objective: {run.objective.name}: {s.sequences} sequences per example in one "
            f"forward with gradients ({s.micro_batch * s.sequences} rows), "
            f"{objective.no_grad_forwards} forward(s) without (reference, KL rows) per micro-batch"
        )
    notes = {
        "weights": _weights_note(s, lay),
        "gradients": "fp32, trainable"
        + (f", sharded /{lay.shards}" if lay.shard_gradients and lay.shards > 1 else ""),
        "optimizer": ("offloaded to " + lay.offload_optimizer)
        if lay.offload_optimizer
        else f"{OPTIMIZER_STATE_BYTES.get(s.optimizer, 8.0):g} B/trainable param"
        + (f", sharded /{lay.shards}" if lay.shard_optimizer and lay.shards > 1 else ""),
        "activations": f"{s.activation_bytes} B/element"
        + (", checkpointed" if s.gradient_checkpointing else ""),
        "logits": f"{LOGITS_COPIES} x {s.activation_bytes} B x {s.lm_positions()} positions x "
        f"{f.vocab} + fp32 loss chunks"
        + (f", + {s.no_grad_forwards} reference forward(s)" if s.no_grad_forwards else "")
        if f.vocab
        else "no vocabulary output",
        "runtime": "CUDA context + workspace" if s.on_gpu else "torch's CPU buffers",
    }
    lines += ["", f"{'component':<13}{'per device':>13}  note", "-" * 60]
    lines += [
        f"{name:<13}{fmt_bytes(value):>13}  {notes[name]}"
        for name, value in found.components.items()
    ]
    lines += ["-" * 60, f"{'total':<13}{fmt_bytes(found.total):>13}"]
    if found.offloaded:
        lines.append(
            f"{'offloaded':<13}{fmt_bytes(found.offloaded):>13}  per process, in CPU RAM "
            f"or on disk instead of the device (not in the total)"
        )
    processes = sharing_processes(run)
    if processes > 1:
        lines.append(f"{'x processes':<13}{processes:>13}  CPU processes share this machine's RAM")
    saved = "the whole model" if s.checkpoint_holds_base else "trainable weights"
    lines.append(
        f"{'checkpoint':<13}{fmt_bytes(found.checkpoint):>13}  on disk each ({saved} + "
        f"optimizer state); train.keep_last + 1 = "
        f"{fmt_bytes(found.checkpoint * (run.train.keep_last + 1))} checked before training"
    )
    lines += ["", verdict(needed(found, run), limit, limit_name, found.components)]
    return "\n".join(lines)


def data_line(s: Settings, vocabulary: bool) -> str:
    """What the tokens and LM-head positions of the longest micro-batch were taken from."""
    heads = f", LM head at {s.lm_positions()} positions" if vocabulary else ""
    if s.data is None:
        return (
            f"data: not read (--data reads it): every micro-batch full ({s.tokens()} tokens)"
            f"{', every position labelled' if vocabulary else ''}"
        )
    how = "packed" if s.packed else "padded to its longest"
    return (
        f"data: the train split's longest micro-batch, {how}: {s.tokens()} tokens{heads}"
        f"{' (label positions only: train.logits_only)' if vocabulary and s.logits_only else ''}"
    )


def _weights_note(s: Settings, lay: MemoryLayout) -> str:
    kind = (
        f"{s.quantized_bytes:.2f} B/linear weight (quantized)"
        if s.quantized_bytes
        else f"{s.weight_bytes:g} B/param"
    )
    if lay.offload_weights:
        kind += f", offloaded to {lay.offload_weights} (one block on the device)"
    elif lay.shard_weights and lay.shards > 1:
        kind += f", sharded /{lay.shards}"
    if lay.weights_cap is not None:
        kind += f", capped at {fmt_bytes(lay.weights_cap)} (device_map)"
    return kind


def verdict(total: int, limit: int, limit_name: str, components: dict[str, int]) -> str:
    """One line: fits or not, with the margin and, when not, what to change for the part that
    dominates."""
    share = 100 * total / limit
    if total <= limit:
        return f"fits: {fmt_bytes(total)} of {fmt_bytes(limit)} ({limit_name}), {share:.0f}%"
    per_token = components["activations"] + components["logits"]
    state = components["weights"] + components["gradients"] + components["optimizer"]
    fix = (
        "activations and logits dominate: lower train.batch_size (raise train.grad_accum) or "
        "data.max_length, or set train.gradient_checkpointing=true"
        if per_token >= state
        else "weights and training state dominate: shard them (hardware=zero3 or fsdp), offload "
        "(hardware=zero3_offload) or quantize the base (peft=qlora)"
    )
    return (
        f"does NOT fit: {fmt_bytes(total)} > {fmt_bytes(limit)} ({limit_name}), {share:.0f}%; {fix}"
    )


def micro_batches(batch_size: int) -> list[int]:
    """The run's micro-batch and its halvings down to 1, largest first."""
    sizes = [batch_size]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def suggest(
    facts: ModelFacts, settings_for: dict[str, Settings], limit: int, processes: int = 1
) -> tuple[str, int, bool, Estimate] | None:
    """(preset, micro-batch, gradient checkpointing, estimate) of the cheapest fit: presets in
    the given order (cheapest first), each without then with checkpointing, the largest
    micro-batch that fits (x `processes` sharing the device); None when nothing fits."""
    for preset, base in settings_for.items():
        for checkpointing in sorted({base.gradient_checkpointing, True}):
            for batch in micro_batches(base.micro_batch):
                trial = replace(base, micro_batch=batch, gradient_checkpointing=checkpointing)
                found = estimate(facts, trial)
                if found.total * processes <= limit:
                    return preset, batch, checkpointing, found
    return None


def print_estimate(
    recipe_arg: str, overrides: list[str], device_memory_arg: str | None, with_data: bool = False
) -> int:
    """`ft estimate`: the table and verdict; with --device-memory also the cheapest fit; with
    --data, for the run's own longest micro-batch. Returns the exit code: 0 fits, 1 does not."""
    recipe = read_recipe(recipe_arg)  # read once: the fit search composes it again per preset
    run = load_run(recipe, overrides)
    data = read_data_shape(run) if with_data else None
    if device_memory_arg:
        try:
            limit, limit_name = (
                size_bytes(device_memory_arg),
                f"--device-memory {device_memory_arg}",
            )
        except ValueError as error:
            raise UserError(f"--device-memory={device_memory_arg}: {error}") from None
    else:
        limit, limit_name = device_memory()
        if run.plugins.profile.on_gpu(run.hardware) and limit_name == "system RAM":
            limit_name = "system RAM: no GPU visible here; give --device-memory SIZE"
    facts = model_facts(run)
    found = estimate(facts, run_settings(run, data))
    print(render(found, run, limit, limit_name))
    if device_memory_arg:
        print(suggestion_line(recipe, overrides, run, facts, limit, data))
    return 0 if needed(found, run) <= limit else 1


def suggestion_line(
    recipe: Recipe,
    overrides: list[str],
    run: RunConfig,
    facts: ModelFacts,
    limit: int,
    data: DataShape | None = None,
) -> str:
    """'cheapest fit: ...' over the candidate presets x micro-batches x checkpointing."""
    on_gpu = run.plugins.profile.on_gpu(run.hardware)
    settings_for: dict[str, Settings] = {}
    if on_gpu:
        kept = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hardware")]
        for preset in GPU_CANDIDATES:
            try:
                trial = load_run(recipe, kept + [f"hardware={preset}"])
            except UserError:
                continue  # e.g. qlora with zero3: refused at validation
            settings_for[preset] = run_settings(trial, data)
    else:
        settings_for[f"{run.hardware.name} (as configured)"] = run_settings(run, data)
    best = suggest(facts, settings_for, limit, 1 if on_gpu else sharing_processes(run))
    if best is None:
        return "cheapest fit: none of " + ", ".join(settings_for) + " fits even at micro-batch 1"
    preset, batch, checkpointing, found = best
    accum = max(1, math.ceil(run.train.batch_size * run.train.grad_accum / batch))
    words = [f"hardware={preset}"] if on_gpu else []
    words += [f"train.batch_size={batch}", f"train.grad_accum={accum}"]
    if checkpointing:
        words.append("train.gradient_checkpointing=true")
    return (
        f"cheapest fit: {' '.join(words)} -> {fmt_bytes(found.total)} per device "
        f"(same examples per step)"
    )
