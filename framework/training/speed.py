"""Which of the speed options (train.packing, train.packed_attention, train.logits_only,
train.compile) a run can use, decided once at set-up from the model itself, with one log line
each when one is left off. The choices are returned (FastPaths), never written onto the task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from framework.tasks import packing, token_loss
from framework.training import packed_attention

log = logging.getLogger("ft")


@dataclass(frozen=True)
class FastPaths:
    """What a run's batches and forwards use (the task's collator follows it: Task.use_fast_paths;
    the objective's context carries logits_only)."""

    packed: bool = False  # padding-free packed rows
    packed_lengths: bool = False  # packed rows carry their example lengths (per-example attention)
    logits_only: bool = False  # the LM head runs only where a label is scored
    attention: str | None = None  # the attention packed rows get, for the log

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"packing": self.packed, "logits_only": self.logits_only}
        if self.attention:
            shown["attention"] = self.attention
        return shown


def choose_fast_paths(
    run: Any, task: Any, model: Any, method: Any, profile: Any, main: bool
) -> FastPaths:
    """The speed options this run can use with this model (decided before any loader iterates),
    with one log line for each one asked for and left off."""
    train = run.train
    why_not = None
    packed = logits_only = packed_lengths = False
    if train.packing and task.can_pack:
        if method.prompt_learning:
            why_not = f"peft={run.peft.name} prepends virtual tokens to each row"
        elif profile.shards_parameters(run.hardware, train):
            why_not = "sharded weights (ZeRO-3/FSDP) cannot run the check before training"
        elif not packing.packing_works(model, model.config.vocab_size):
            why_not = "the model attends across examples of a packed row (or refuses position_ids)"
        packed = why_not is None
        if why_not and main:
            log.info("train.packing: off for this run (%s); padding per batch instead", why_not)
    attention = None
    if packed:
        attention, packed_lengths = choose_packed_attention(run, model, main)
    if train.logits_only and task.can_skip_logits:
        logits_only = not method.prompt_learning and token_loss.accepts_logits_to_keep(model)
        if not logits_only and main:
            log.info(
                "train.logits_only: off for this run (the model takes no logits_to_keep, or "
                "peft=%s shifts positions); the LM head runs at every position",
                run.peft.name,
            )
    return FastPaths(packed, packed_lengths, logits_only, attention)


def choose_packed_attention(run: Any, model: Any, main: bool) -> tuple[str, bool]:
    """Per-example attention on packed rows (training/packed_attention.py) where the model uses
    transformers' SDPA and, with it installed, still gives a packed row the logits of its examples
    apart; returns the attention packed rows get and whether rows carry their example lengths."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    if not run.train.packed_attention or run.train.compile:
        # Under torch.compile one call per example would recompile for every new set of lengths.
        shown = f"{current} (block mask over the row)" if current == "sdpa" else current
        return shown, False
    if not packed_attention.install(model):
        return current, False  # flash-attention (varlen) and flex handle packed rows themselves
    with_lengths = packing.packing_works(model, model.config.vocab_size, with_lengths=True)
    if not with_lengths:
        packed_attention.uninstall(model)
        if main:
            log.info(
                "train.packed_attention: off for this run (the model differs with it); "
                "SDPA over a block-diagonal mask of the whole row instead"
            )
        return "sdpa (block mask over the row)", False
    return "sdpa per example", True


def compiled(model: Any, train: Any) -> Any:
    """The prepared model under torch.compile when train.compile (ft compiles itself rather than
    through accelerate's dynamo plugin, which lives in a process-wide state that a second run in
    the same process, e.g. a sweep, would inherit). Shapes change between batches (packed rows):
    torch marks them dynamic after the first recompile."""
    if not train.compile:
        return model
    import torch

    return torch.compile(model, backend=train.compile_backend)
