"""Which of the speed options (train.packing, train.packed_attention, train.logits_only,
train.compile) a run can use, decided once at set-up from the model itself, with one log line
each when one is left off. The choices are returned (FastPaths), never written onto the task."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from framework.tasks import fused_loss, packing, token_loss
from framework.training import packed_attention, pooled_only

log = logging.getLogger("ft")


@dataclass(frozen=True)
class FastPaths:
    """What a run's batches and forwards use (the task's collator follows it: Task.use_fast_paths;
    the objective's context carries logits_only)."""

    packed: bool = False  # padding-free packed rows
    packed_lengths: bool = False  # packed rows carry their example lengths (per-example attention)
    logits_only: bool = False  # the LM head runs only where a label is scored
    attention: str | None = None  # the attention packed rows get, for the log
    # Under train.compile: packed rows carry their boundaries as a tensor, and are padded up to a
    # multiple of this many tokens (at most ROW_BUCKETS lengths).
    packed_offsets: bool = False
    row_multiple: int | None = None
    fused_head: Any = None  # tasks/fused_loss.FusedHead: train.fused_loss for this model
    pooled_only: bool = False  # the last encoder layer runs at the pooled position only

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"packing": self.packed, "logits_only": self.logits_only}
        if self.pooled_only:
            shown["pooled_only"] = True
        if self.fused_head is not None:
            shown["fused_loss"] = True
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
    attention, packed_offsets, row_multiple = None, False, None
    if packed:
        attention, packed_lengths, packed_offsets = choose_packed_attention(run, model, main)
        if train.compile:
            largest = train.tokens_per_batch or train.batch_size * run.data.max_length
            row_multiple = max(1, -(-largest // ROW_BUCKETS))
    if train.logits_only and task.can_skip_logits:
        logits_only = not method.prompt_learning and token_loss.accepts_logits_to_keep(model)
        if not logits_only and main:
            log.info(
                "train.logits_only: off for this run (the model takes no logits_to_keep, or "
                "peft=%s shifts positions); the LM head runs at every position",
                run.peft.name,
            )
    fused = logits_only and train.fused_loss and task.can_fuse_loss
    fused_head = choose_fused_loss(run, model, profile, main) if fused else None
    pooled = train.pooled_only and task.can_pool_first_only
    return FastPaths(
        packed,
        packed_lengths,
        logits_only,
        attention,
        packed_offsets,
        row_multiple,
        fused_head,
        pooled and choose_pooled_only(run, model, method, profile, main),
    )


def choose_pooled_only(run: Any, model: Any, method: Any, profile: Any, main: bool) -> bool:
    """Whether the last encoder layer runs at the pooled first position only
    (training/pooled_only.py): where the model is a BERT-style encoder whose logits stay the
    same with it (checked on a probe batch), and not under prompt learning or sharded weights.
    One log line where it is left off for a reason the user may not expect."""
    if pooled_only.last_encoder_layer(model) is None:
        return False  # not a BERT-style encoder: nothing to skip, nothing to say
    why_not = None
    if method.prompt_learning:
        why_not = f"peft={run.peft.name} prepends virtual tokens or past keys to each row"
    elif profile.shards_parameters(run.hardware, run.train):
        why_not = "sharded weights (ZeRO-3/FSDP) cannot run the check before training"
    elif pooled_only.install(model, model.config.vocab_size):
        return True
    else:
        why_not = "the model's logits differ with it (its head reads more than the first token)"
    if main:
        log.info("train.pooled_only: off for this run (%s)", why_not)
    return False


def choose_fused_loss(run: Any, model: Any, profile: Any, main: bool) -> Any:
    """A FusedHead (tasks/fused_loss.py) where the head is a plain linear layer (or one with a
    LoRA adapter), its weights are whole on this process, and the model's logits are exactly the
    head's (checked on a few tokens); None, with a log line, otherwise."""
    why_not = None
    if profile.shards_parameters(run.hardware, run.train):
        why_not = "sharded weights (ZeRO-3/FSDP): the head's weight is gathered only in its forward"
    else:
        head = fused_loss.FusedHead(model)
        if head.works(model, model.config.vocab_size, token_loss.kept_logits_loss):
            return head
        head.remove()
        why_not = "the head is not a linear layer (+ LoRA), or the logits are not the head's alone"
    if main:
        log.info("train.fused_loss: off for this run (%s); the head's logits are kept", why_not)
    return None


def choose_packed_attention(run: Any, model: Any, main: bool) -> tuple[str, bool, bool]:
    """Per-example attention on packed rows (training/packed_attention.py) where the model uses
    transformers' SDPA and, with it installed, still gives a packed row the logits of its examples
    apart; returns the attention packed rows get, whether rows carry their example lengths (host
    ints), and whether they carry them as a tensor. Under train.compile: on CUDA, transformers'
    flex attention (one call per layer over the document mask it builds from the packed position
    ids); elsewhere ft's per-example SDPA between the compiled graphs, the boundaries a tensor (a
    tuple of ints would be guarded value by value: a recompile for every new set of lengths)."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    if not run.train.packed_attention:
        shown = f"{current} (block mask over the row)" if current == "sdpa" else current
        return shown, False, False
    compiling = run.train.compile
    if compiling and current == "sdpa" and use_flex(model):
        return "flex_attention (document mask), compiled", False, False
    if not packed_attention.install(model):
        return current, False, False  # flash-attention (varlen) and flex handle packed rows
    works = packing.packing_works(
        model, model.config.vocab_size, with_lengths=not compiling, with_offsets=compiling
    )
    if not works:
        packed_attention.uninstall(model)
        if main:
            log.info(
                "train.packed_attention: off for this run (the model differs with it); "
                "SDPA over a block-diagonal mask of the whole row instead"
            )
        return "sdpa (block mask over the row)", False, False
    if compiling:
        return "sdpa per example, between the compiled graphs", False, True
    return "sdpa per example", True, False


ROW_BUCKETS = 8  # under compile: packed rows are padded to one of at most 8 lengths


def use_flex(model: Any) -> bool:
    """On CUDA, switch an SDPA model to transformers' flex attention if it then still gives a
    packed row the logits of its examples apart (flex attention trains on CUDA only in torch
    2.13: no CPU backward)."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        base.set_attn_implementation("flex_attention")
    except (ValueError, TypeError, ImportError, AttributeError):
        return False
    if packing.packing_works(model, model.config.vocab_size):
        return True
    base.set_attn_implementation("sdpa")
    return False


def compiled(model: Any, train: Any) -> Any:
    """The prepared model under torch.compile when train.compile (ft compiles itself rather than
    through accelerate's dynamo plugin, which lives in a process-wide state that a second run in
    the same process, e.g. a sweep, would inherit). Shapes change between batches (packed rows):
    torch marks them dynamic after the first recompile."""
    if not train.compile:
        return model
    import torch

    return torch.compile(model, backend=train.compile_backend)


def compile_counts(train: Any) -> dict[str, int]:
    """Under train.compile: the graphs torch.compile has built in this process so far and the
    frames it compiled (each recompile, e.g. for a new shape, adds to both), from dynamo's own
    counters; nothing otherwise. The train records carry them (metrics.jsonl)."""
    if not train.compile:
        return {}
    from torch._dynamo.utils import counters

    return {
        "compiled_graphs": int(counters["stats"]["unique_graphs"]),
        "compiled_frames": int(counters["frames"]["ok"]),
    }
