"""A pairwise reward model (Bradley-Terry): a sequence-classification head with one output
scores prompt + completion, and the loss is -log σ(r(chosen) - r(rejected)), with an optional
penalty keeping the rewards centred on 0 (center_rewards: coefficient of (r_c + r_r)²).
The step before PPO/GRPO-style work, and the scorer of `ft eval` on preference data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import OBJECTIVES
from framework.objectives.base import SCORED_PAIRS, Objective, ObjectiveContext, PreferenceParams
from framework.objectives.logps import split_pairs


@dataclass(kw_only=True)
class BradleyTerryParams(PreferenceParams):
    center_rewards: float = 0.0  # coefficient of (r_chosen + r_rejected)²; 0.01 is usual


@OBJECTIVES.register("bradley_terry")
class BradleyTerry(Objective):
    Params = BradleyTerryParams
    data_kind = SCORED_PAIRS
    sequences_per_example = 2
    summary = "pairwise reward model: one-output sequence head, -log sigmoid(r_chosen - r_rejected)"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        if params.center_rewards < 0:
            return [f"objective.center_rewards={params.center_rewards}: must be >= 0"]
        return []

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        import torch.nn.functional as F

        scores = context.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, 0]
        chosen, rejected = split_pairs(scores.float())
        margins = chosen - rejected
        losses = -F.logsigmoid(margins)
        if self.params.center_rewards:
            losses = losses + self.params.center_rewards * (chosen + rejected) ** 2
        accurate = (margins > 0).double() + 0.5 * (margins == 0).double()
        metrics = {
            "rewards/chosen": chosen.detach().sum(),
            "rewards/rejected": rejected.detach().sum(),
            "rewards/margins": margins.detach().sum(),
            "rewards/accuracies": accurate.sum(),
        }
        return losses.sum(), self.count_items(batch), metrics
