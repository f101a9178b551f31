"""ORPO (Hong et al. 2024), reference-free: supervised loss on the chosen completion plus an
odds-ratio penalty, NLL(chosen) - λ log σ(log odds(chosen) - log odds(rejected)), where
odds(y) = p / (1 - p) with p the completion's mean token probability. No reference forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import OBJECTIVES
from framework.objectives.base import PAIRS, Objective, ObjectiveContext, PreferenceParams
from framework.objectives.dpo import beta_problems
from framework.objectives.logps import pair_metrics, sequence_logps, split_pairs


@dataclass(kw_only=True)
class OrpoParams(PreferenceParams):
    beta: float = 0.1  # λ: weight of the odds-ratio term against the chosen NLL


def log1m_exp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2."""
    import math

    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@OBJECTIVES.register("orpo")
class Orpo(Objective):
    Params = OrpoParams
    data_kind = PAIRS
    sequences_per_example = 2
    summary = "ORPO: chosen NLL plus an odds-ratio preference term; reference-free"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        return beta_problems(params)

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        import torch.nn.functional as F

        logps, tokens = sequence_logps(context.model, batch, context.logits_only)
        mean_logps = (logps / tokens.clamp(min=1)).clamp(max=-1e-6)  # p < 1: finite odds
        chosen, rejected = split_pairs(mean_logps)
        log_odds = (chosen - rejected) - (log1m_exp(chosen) - log1m_exp(rejected))
        odds_term = F.logsigmoid(log_odds)
        losses = -chosen - self.params.beta * odds_term  # the chosen NLL per token, per pair
        beta = self.params.beta
        metrics = pair_metrics(beta * chosen, beta * rejected, mean_logps)
        metrics["nll_loss"] = (-chosen).detach().sum()
        metrics["log_odds_ratio"] = odds_term.detach().sum()
        return losses.sum(), self.count_items(batch), metrics
