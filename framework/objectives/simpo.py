"""SimPO (Meng et al. 2024), reference-free: the reward of a completion is β times its mean
token log-probability, and the loss asks the chosen reward to beat the rejected one by a margin
γ: -log σ(β (mean log π(chosen) - mean log π(rejected)) - γ). No reference forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import OBJECTIVES
from framework.objectives.base import PAIRS, Objective, ObjectiveContext, PreferenceParams
from framework.objectives.dpo import beta_problems
from framework.objectives.logps import pair_metrics, sequence_logps, split_pairs


@dataclass(kw_only=True)
class SimpoParams(PreferenceParams):
    beta: float = 2.0  # reward scale (SimPO's authors use 2 to 10)
    gamma: float = 0.5  # target reward margin, in reward units
    label_smoothing: float = 0.0  # probability that a pair's labels are flipped


@OBJECTIVES.register("simpo")
class Simpo(Objective):
    Params = SimpoParams
    data_kind = PAIRS
    sequences_per_example = 2
    summary = "SimPO: reference-free, length-normalised rewards with a target margin gamma"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = beta_problems(params)
        if params.gamma < 0:
            found.append(f"objective.gamma={params.gamma}: must be >= 0 (a reward margin)")
        if not 0.0 <= params.label_smoothing < 0.5:
            found.append(f"objective.label_smoothing={params.label_smoothing}: must be in [0, 0.5)")
        return found

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        import torch.nn.functional as F

        logps, tokens = sequence_logps(context.model, batch, context.logits_only)
        mean_logps = logps / tokens.clamp(min=1)
        chosen, rejected = split_pairs(mean_logps)
        beta, smoothing = self.params.beta, self.params.label_smoothing
        logits = beta * (chosen - rejected) - self.params.gamma
        losses = -(1 - smoothing) * F.logsigmoid(logits)
        if smoothing:
            losses = losses - smoothing * F.logsigmoid(-logits)
        metrics = pair_metrics(beta * chosen, beta * rejected, mean_logps)
        return losses.sum(), self.count_items(batch), metrics
