"""The objective seam.

An objective gets an `ObjectiveContext` from the trainer: the prepared model (Accelerate-wrapped,
what the forward and backward go through), the unwrapped peft model, the accelerator, and a
`reference()` context in which the same model computes the reference policy (the adapter
disabled, or the frozen starting adapter when training starts from one: never a second copy of
the base). It returns, per micro-batch, the loss summed over its items, the item count and named
step metrics summed over the same items; the trainer's meter divides both by the items of all
micro-batches on all ranks, so what is logged is an item-weighted mean whatever the batch size,
grad_accum or world size.

Batches are the task's: the preference tasks send chosen rows then rejected rows in one
concatenated batch (`input_ids`, `attention_mask`, `labels` with IGNORE_INDEX except on scored
completion tokens), unpaired rows with a `desirable` flag and mismatched `kl_*` rows, or scored
pairs for a reward model. An objective names the kind it reads (`data_kind`) and the task names
those it gives (`Task.data_kinds`); validation refuses a pair that does not fit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from framework.core.params import GroupParams

PAIRS = "pairs"  # chosen and rejected completions of one prompt (causal LM)
UNPAIRED = "unpaired"  # one completion, desirable or not, plus a mismatched completion (KL rows)
SCORED_PAIRS = "scored_pairs"  # chosen and rejected sequences scored by a one-output head
TASK_EXAMPLES = "task"  # the task's own examples and loss (the six SFT-style tasks)


@dataclass(kw_only=True)
class ObjectiveParams(GroupParams):
    """Fields every objective shares (none beyond name)."""


@dataclass(kw_only=True)
class PreferenceParams(ObjectiveParams):
    """Fields of the preference objectives."""

    # Dropout off in the whole model (base and adapter), as TRL's trainers default to: with it
    # on, the policy's forward is noisy against the reference and the step-0 margins are not 0.
    disable_dropout: bool = True


def switch_off_dropout(model: Any) -> int:
    """Set p = 0 in every dropout module of `model` (what a preference objective's
    disable_dropout does before the loop); returns how many were on."""
    import torch

    switched = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            switched += 1
    return switched


@dataclass
class ObjectiveContext:
    """What the trainer gives an objective: the model as the step runs it, the accelerator, the
    reference forward's context and the speed choices the batches were collated with."""

    model: Any  # prepared by Accelerate (DDP / DeepSpeed engine): forward and backward go here
    accelerator: Any
    reference: Callable[[], contextlib.AbstractContextManager]  # a fresh context per forward
    logits_only: bool = False  # batches carry the positions where the LM head must run

    def unwrapped(self) -> Any:
        """The peft model inside the wrappers."""
        return self.accelerator.unwrap_model(self.model)


def reference_context(unwrapped: Any, adapter: str | None) -> Callable[[], Any]:
    """The reference policy of a peft model: its adapters disabled (a fresh adapter starts as the
    identity, so this is the starting policy), or the frozen adapter `adapter` active (training
    from an existing adapter: the reference is that adapter, never the bare base)."""

    @contextlib.contextmanager
    def reference() -> Iterator[None]:
        import torch

        training = unwrapped.training
        unwrapped.eval()  # the reference is deterministic: no dropout in its forward
        try:
            with torch.no_grad():
                if adapter is None:
                    with unwrapped.disable_adapter():
                        yield
                    return
                trained = unwrapped.active_adapter
                unwrapped.set_adapter(adapter, inference_mode=True)  # frozen, the trained too
                try:
                    yield
                finally:
                    unwrapped.set_adapter(trained)  # trainable again; the reference stays frozen
        finally:
            unwrapped.train(training)

    return reference


class Objective:
    """Base class of a registered objective. An instance lives for one run."""

    Params: ClassVar[type] = ObjectiveParams
    data_kind: ClassVar[str] = TASK_EXAMPLES  # which batches it reads (see the module docstring)
    # Whether the loss compares the policy with a reference policy: then the adapter must be the
    # identity at initialisation (PeftMethod.identity_at_init), or the reference is not the start.
    reference_based: ClassVar[bool] = False
    # Sequences a forward sees per example (2: chosen and rejected in one concatenated forward),
    # forwards with gradients and without (reference, KL rows) per micro-batch: ft estimate.
    sequences_per_example: ClassVar[int] = 1
    grad_forwards: ClassVar[int] = 1
    no_grad_forwards: ClassVar[int] = 0
    primary_metric: ClassVar[str] = "rewards/accuracies"
    greater_is_better: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    def __init__(self, params: Any, task: Any):
        self.params = params
        self.task = task

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        """Impossible settings, found before anything is loaded; each names its key."""
        return []

    @classmethod
    def judged_by(cls, task: Any) -> tuple[str, bool]:
        """(metric, greater is better) that sweeps optimise and keep_best / early stopping judge,
        given the run's task (an instance, or its class)."""
        return cls.primary_metric, cls.greater_is_better

    def before_loop(self, context: ObjectiveContext) -> None:
        """Called once after set-up, before the first step (and before eval_before): with
        disable_dropout, dropout is switched off."""
        if getattr(self.params, "disable_dropout", False):
            switch_off_dropout(context.unwrapped())

    def count_items(self, batch: dict[str, Any]) -> Any:
        """What the loss averages over in this batch, as a device tensor (pairs by default: the
        rows are chosen then rejected)."""
        import torch

        rows = batch["input_ids"].shape[0] // self.sequences_per_example
        return torch.full((), float(rows), device=batch["input_ids"].device)

    def loss_terms(
        self, context: ObjectiveContext, batch: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        """(loss summed over the batch's items, item count, {metric: sum over the items})."""
        raise NotImplementedError

    def evaluate(
        self, context: ObjectiveContext, loader: Iterable, raw: Any | None = None
    ) -> dict[str, float]:
        """eval_loss and the step metrics, item-weighted over a held-out split and all ranks."""
        import torch

        names: list[str] = []
        totals = None
        with torch.no_grad():
            for batch in loader:
                loss, items, metrics = self.loss_terms(context, batch)
                pairs = metric_sums(metrics, items)
                names = sorted(pairs)
                values = torch.stack(
                    [loss.detach().double(), items.double()] + [v for k in names for v in pairs[k]]
                )
                totals = values if totals is None else totals + values
        if totals is None:
            return {"eval_loss": float("nan")}
        totals = context.accelerator.reduce(totals, reduction="sum").tolist()
        result = {"eval_loss": totals[0] / max(totals[1], 1e-12)}
        for index, name in enumerate(names):
            total, count = totals[2 + 2 * index : 4 + 2 * index]
            result[name] = total / max(count, 1e-12)
        return result


def metric_sums(metrics: dict[str, Any], items: Any) -> dict[str, tuple[Any, Any]]:
    """{name: (sum, count)} as float64 device tensors: a metric given as one tensor is a sum over
    the step's items; one given as (sum, count) has its own count (e.g. desirable rows only)."""
    import torch

    pairs = {}
    for name, value in metrics.items():
        total, count = value if isinstance(value, tuple) else (value, items)
        pairs[name] = (
            torch.as_tensor(total).detach().double().reshape(()),
            torch.as_tensor(count).detach().double().reshape(()).to(total.device),
        )
    return pairs
