"""KTO (Ethayarajh et al. 2024) on unpaired completions, each desirable or not:

  desirable     w_d (1 - σ(β (log π/π_ref(y|x) - z)))
  undesirable   w_u (1 - σ(β (z - log π/π_ref(y|x))))

with z the batch's KL estimate: the mean log-ratio of mismatched (prompt, completion) rows (the
task rotates completions within each batch-sized chunk of the data), averaged over processes,
clipped at 0 and not back-propagated. Pairs are unpaired into one desirable and one undesirable
row by the task. The loss is the weighted sum over rows divided by the rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.batch_keys import DESIRABLE_KEY, KL_PREFIX
from framework.core.registry import OBJECTIVES
from framework.objectives.base import UNPAIRED, Objective, ObjectiveContext, PreferenceParams
from framework.objectives.dpo import beta_problems
from framework.objectives.logps import sequence_logps


@dataclass(kw_only=True)
class KtoParams(PreferenceParams):
    beta: float = 0.1
    desirable_weight: float = 1.0  # w_d; raise it when desirable rows are the fewer
    undesirable_weight: float = 1.0  # w_u


@OBJECTIVES.register("kto")
class Kto(Objective):
    Params = KtoParams
    data_kind = UNPAIRED
    reference_based = True
    no_grad_forwards = 3  # the policy on the KL rows; the reference on both
    summary = "KTO on unpaired desirable/undesirable completions (pairs are unpaired)"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = beta_problems(params)
        for key in ("desirable_weight", "undesirable_weight"):
            if not getattr(params, key) > 0:
                found.append(f"objective.{key}={getattr(params, key)}: must be > 0")
        return found

    def count_items(self, batch: dict[str, Any]) -> Any:
        import torch

        rows = batch["input_ids"].shape[0]
        return torch.full((), float(rows), device=batch["input_ids"].device)

    def kl_estimate(self, context: ObjectiveContext, policy_kl: Any, reference_kl: Any) -> Any:
        """z: the mismatched rows' mean log-ratio over all processes, >= 0, no gradient."""
        kl = (policy_kl - reference_kl).mean().detach()
        if context.accelerator.num_processes > 1:
            kl = context.accelerator.reduce(kl, "mean")
        return kl.clamp(min=0)

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        import torch

        logps, _ = sequence_logps(context.model, batch, context.logits_only)
        with torch.no_grad():
            policy_kl, _ = sequence_logps(context.model, batch, context.logits_only, KL_PREFIX)
        with context.reference():
            reference, _ = sequence_logps(context.model, batch, context.logits_only)
            reference_kl, _ = sequence_logps(context.model, batch, context.logits_only, KL_PREFIX)
        kl = self.kl_estimate(context, policy_kl, reference_kl)
        ratio = logps - reference.detach()
        desirable = batch[DESIRABLE_KEY].bool()
        beta = self.params.beta
        losses = torch.where(
            desirable,
            self.params.desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
            self.params.undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))),
        )
        rewards = (beta * ratio).detach()
        signed = torch.where(desirable, rewards, -rewards)
        accurate = (signed > 0).double() + 0.5 * (signed == 0).double()
        wanted, unwanted = desirable.double(), (~desirable).double()
        metrics = {
            "rewards/chosen": ((rewards * wanted).sum(), wanted.sum()),
            "rewards/rejected": ((rewards * unwanted).sum(), unwanted.sum()),
            "rewards/accuracies": accurate.sum(),
            "kl": kl * len(rewards),
        }
        return losses.sum(), self.count_items(batch), metrics
