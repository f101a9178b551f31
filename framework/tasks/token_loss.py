"""Causal LM loss computed only where it is needed.

The model's own loss runs the LM head over every position (prompt and padding included) and then
upcasts all logits to fp32: for a 262k-entry vocabulary that is most of a small model's work. Here:

* the LM head runs only at positions whose next token has a label: transformers' `logits_to_keep`
  takes the list of positions (one list for every row: exact for a packed single row, the union of
  the rows' label positions for a padded batch). The model's own head runs, so an adapter on
  lm_head, logit soft-capping or scaling all apply as usual;
* the cross-entropy is summed in chunks of rows, each upcast to fp32 and recomputed in the backward
  pass (activation checkpointing), so fp32 logits never exist for more than one chunk;
* the loss comes back as a sum with its label-token count, so that the trainer can normalise by
  the number of label tokens of a whole optimizer step (across micro-batches and processes).

The label positions are computed by the collator on the host (`TARGETS_KEY`), so the step never
waits for the device to find them.
"""

from __future__ import annotations

import inspect
from typing import Any

from framework.core.batch_keys import IGNORE_INDEX, TARGETS_KEY

CHUNK_ELEMENTS = 1 << 24  # logits per fp32 chunk: 64 MiB (e.g. 512 rows of a 32k vocabulary)


def target_positions(labels: Any) -> Any:
    """Positions t (in any row) whose next token t+1 has a label: where the LM head must run."""
    import torch

    return torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the (peft-wrapped) causal LM's forward takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def cross_entropy_sum(logits: Any, targets: Any) -> Any:
    """Sum of token cross-entropies over rows of logits [N, V] (any dtype) against targets [N]
    (IGNORE_INDEX skipped), in fp32 chunks recomputed during backward."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def chunk_loss(part: Any, target: Any) -> Any:
        return torch.nn.functional.cross_entropy(
            part.float(), target, ignore_index=IGNORE_INDEX, reduction="sum"
        )

    rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    if logits.shape[0] <= rows:
        return chunk_loss(logits, targets)
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], rows):
        part, target = logits[start : start + rows], targets[start : start + rows]
        if torch.is_grad_enabled() and logits.requires_grad:
            total = total + checkpoint(
                chunk_loss, part, target, use_reentrant=False, preserve_rng_state=False
            )
        else:
            total = total + chunk_loss(part, target)
    return total


def causal_lm_loss(model: Any, batch: dict[str, Any], logits_only: bool) -> tuple[Any, Any]:
    """(sum of token losses, number of label tokens) of a causal LM batch whose labels are aligned
    with input_ids (the model's convention: position t predicts label t+1)."""
    import torch

    inputs = {k: v for k, v in batch.items() if k not in ("labels", TARGETS_KEY)}
    if "position_ids" in inputs:  # a packed row: masks come from position ids only without a cache
        inputs["use_cache"] = False
    targets = batch["labels"][:, 1:]
    count = (targets != IGNORE_INDEX).sum()
    positions = batch.get(TARGETS_KEY)
    if logits_only and positions is not None:
        logits = model(**inputs, logits_to_keep=positions).logits  # [B, P, V]
        kept = targets.index_select(1, positions)
    else:
        # Prompt-learning adapters prepend virtual tokens to the logits: the real ones are last.
        logits = model(**inputs).logits[:, -targets.shape[1] - 1 : -1]
        kept = targets
    loss = cross_entropy_sum(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1))
    return loss, count.to(torch.float32)
