"""Sequence log-probabilities of completions, the quantity every preference loss is built from.

One forward over the batch's rows (chosen then rejected: one concatenated forward); the LM head
runs only at positions whose next token is a scored completion token when the collator sent them
(`TARGETS_KEY`, train.logits_only), and the log-softmax is taken in fp32, a chunk of rows at a
time. Returns per row the summed log-probability of its scored tokens and their count."""

from __future__ import annotations

from typing import Any

from framework.core.batch_keys import IGNORE_INDEX, TARGETS_KEY

CHUNK_ELEMENTS = 1 << 24  # fp32 logits per log-softmax chunk: 64 MiB


def token_log_probs(logits: Any, targets: Any) -> Any:
    """log p(target) per position of logits [R, T, V] (any dtype), in fp32 chunks of rows."""
    import torch

    rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[1] * logits.shape[2]))
    parts = []
    for start in range(0, logits.shape[0], rows):
        part = logits[start : start + rows].float()
        target = targets[start : start + rows].unsqueeze(-1)
        parts.append(part.gather(-1, target).squeeze(-1) - torch.logsumexp(part, dim=-1))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def token_logps(
    model: Any, batch: dict[str, Any], logits_only: bool, prefix: str = ""
) -> tuple[Any, Any]:
    """(log-prob of each scored next token [R, P], scored mask [R, P]) of the rows
    `{prefix}input_ids` / `attention_mask` / `labels` (labels aligned with input_ids: position t
    predicts label t + 1); P is the positions the LM head ran at (all, or those with a label)."""
    labels = batch[f"{prefix}labels"]
    inputs = {
        "input_ids": batch[f"{prefix}input_ids"],
        "attention_mask": batch[f"{prefix}attention_mask"],
        "use_cache": False,
    }
    targets = labels[:, 1:]
    positions = batch.get(f"{prefix}{TARGETS_KEY}") if logits_only else None
    if positions is not None:
        logits = model(**inputs, logits_to_keep=positions).logits  # [R, P, V]
        targets = targets.index_select(1, positions)
    else:
        # Prompt-learning adapters prepend virtual tokens to the logits: the real ones are last.
        logits = model(**inputs).logits[:, -targets.shape[1] - 1 : -1]
    scored = targets != IGNORE_INDEX
    return token_log_probs(logits, targets.clamp(min=0)) * scored, scored


def sequence_logps(
    model: Any, batch: dict[str, Any], logits_only: bool, prefix: str = ""
) -> tuple[Any, Any]:
    """(summed log-prob of each row's scored tokens [R], scored tokens per row [R])."""
    per_token, scored = token_logps(model, batch, logits_only, prefix)
    return per_token.sum(-1), scored.sum(-1)


def split_pairs(values: Any) -> tuple[Any, Any]:
    """(chosen, rejected) halves of a per-row tensor of a paired batch (chosen rows first)."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


def pair_metrics(chosen_rewards: Any, rejected_rewards: Any, logps: Any) -> dict[str, Any]:
    """The step metrics of a paired loss, summed over pairs (the meter divides by pairs):
    rewards of chosen and rejected, their margin, and preference accuracy (the chosen reward
    higher; a tie counts one half, so that an untrained policy reads 0.5)."""
    chosen_logps, rejected_logps = split_pairs(logps)
    margins = chosen_rewards - rejected_rewards
    accurate = (margins > 0).double() + 0.5 * (margins == 0).double()
    return {
        "rewards/chosen": chosen_rewards.detach().sum(),
        "rewards/rejected": rejected_rewards.detach().sum(),
        "rewards/margins": margins.detach().sum(),
        "rewards/accuracies": accurate.sum(),
        "logps/chosen": chosen_logps.detach().sum(),
        "logps/rejected": rejected_logps.detach().sum(),
    }
