"""DPO and its reference-based relatives on chosen/rejected pairs (loss_type):

  sigmoid   -log σ(β Δ), Δ = (log π/π_ref)(chosen) - (log π/π_ref)(rejected)  (Rafailov et al.)
            with label_smoothing ε: -(1-ε) log σ(β Δ) - ε log σ(-β Δ) (conservative DPO)
  ipo       (Δ̄ - 1/(2β))², Δ̄ the same log-ratio difference averaged per completion token
  hinge     max(0, 1 - β Δ)  (SLiC)

The reference is the starting policy: the adapter disabled, or the frozen starting adapter
(model.adapter). Rewards are β log π/π_ref per completion (summed over its tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from framework.core.registry import OBJECTIVES
from framework.objectives.base import PAIRS, Objective, ObjectiveContext, PreferenceParams
from framework.objectives.logps import pair_metrics, sequence_logps, split_pairs


@dataclass(kw_only=True)
class DpoParams(PreferenceParams):
    beta: float = 0.1  # strength of the pull towards the reference (higher: stay closer)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = 0.0  # conservative DPO: the chance a pair's labels are flipped


def beta_problems(params: Any) -> list[str]:
    """beta must be a positive number (it scales every reward)."""
    if not params.beta > 0:
        return [
            f"objective.beta={params.beta}: must be > 0 (it scales the rewards; 0.1 is usual "
            f"for DPO). Fix: objective.beta=0.1"
        ]
    return []


def pair_logps(context: ObjectiveContext, batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(policy log-probs, reference log-probs, scored tokens) per row of a paired batch."""
    logps, tokens = sequence_logps(context.model, batch, context.logits_only)
    with context.reference():
        reference, _ = sequence_logps(context.model, batch, context.logits_only)
    return logps, reference.detach(), tokens


@OBJECTIVES.register("dpo")
class Dpo(Objective):
    Params = DpoParams
    data_kind = PAIRS
    reference_based = True
    sequences_per_example = 2
    no_grad_forwards = 1
    summary = (
        "DPO on chosen/rejected pairs: loss_type sigmoid | ipo | hinge, label_smoothing (cDPO)"
    )

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = beta_problems(params)
        if not 0.0 <= params.label_smoothing < 0.5:
            found.append(
                f"objective.label_smoothing={params.label_smoothing}: must be in [0, 0.5) (the "
                f"probability that a pair's labels are flipped)"
            )
        if params.label_smoothing and params.loss_type != "sigmoid":
            found.append(
                f"objective.label_smoothing={params.label_smoothing}: applies to "
                f"loss_type=sigmoid only, not {params.loss_type}. Fix: objective.label_smoothing=0"
            )
        return found

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        import torch.nn.functional as F

        logps, reference, tokens = pair_logps(context, batch)
        chosen_ratio, rejected_ratio = split_pairs(logps - reference)
        beta, kind = self.params.beta, self.params.loss_type
        delta = chosen_ratio - rejected_ratio
        if kind == "sigmoid":
            smoothing = self.params.label_smoothing
            losses = -(1 - smoothing) * F.logsigmoid(beta * delta)
            if smoothing:
                losses = losses - smoothing * F.logsigmoid(-beta * delta)
        elif kind == "hinge":
            losses = (1 - beta * delta).relu()
        else:  # ipo: per-token averages, as its authors normalise
            chosen_tokens, rejected_tokens = split_pairs(tokens.clamp(min=1))
            averaged = chosen_ratio / chosen_tokens - rejected_ratio / rejected_tokens
            losses = (averaged - 1 / (2 * beta)) ** 2
        metrics = pair_metrics(beta * chosen_ratio, beta * rejected_ratio, logps)
        return losses.sum(), self.count_items(batch), metrics
