"""The paired losses against their formulas, on fixed sequence log-probs (no model): DPO's
sigmoid, conservative (label smoothing), hinge and IPO forms, SimPO and ORPO; the ones TRL has
are also run against TRL end to end in test_trl_parity.py."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace
from typing import Any

import pytest

POLICY = [-1.0, -2.0, -3.0, -1.5]  # chosen 1, chosen 2, rejected 1, rejected 2 (summed logps)
REFERENCE = [-1.5, -2.0, -2.0, -2.0]
TOKENS = [2, 4, 3, 5]
BETA = 0.5


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def run_objective(module: Any, name: str, monkeypatch: Any, **params: Any) -> tuple[float, dict]:
    """loss_terms of the objective with sequence_logps answering POLICY, then REFERENCE."""
    import torch

    from framework.core.registry import OBJECTIVES

    answers = iter([POLICY, REFERENCE])

    def fake(model: Any, batch: Any, logits_only: bool, prefix: str = "") -> Any:
        return torch.tensor(next(answers)), torch.tensor(TOKENS)

    monkeypatch.setattr(module, "sequence_logps", fake)
    objective_class = OBJECTIVES.get(name)
    objective = objective_class(objective_class.Params(name=name, **params), task=None)
    context = SimpleNamespace(
        model=None, logits_only=False, reference=contextlib.nullcontext, accelerator=None
    )
    loss, items, metrics = objective.loss_terms(context, {"input_ids": torch.zeros(4, 3)})
    assert float(items) == 2.0  # two pairs
    return float(loss / items), {k: float(v) / 2 for k, v in metrics.items()}


def dpo_deltas() -> list[float]:
    ratio = [p - r for p, r in zip(POLICY, REFERENCE)]
    return [ratio[0] - ratio[2], ratio[1] - ratio[3]]


@pytest.mark.parametrize(
    "params,per_pair",
    [
        ({"loss_type": "sigmoid"}, lambda d: -logsigmoid(BETA * d)),
        (
            {"loss_type": "sigmoid", "label_smoothing": 0.1},
            lambda d: -0.9 * logsigmoid(BETA * d) - 0.1 * logsigmoid(-BETA * d),
        ),
        ({"loss_type": "hinge"}, lambda d: max(0.0, 1 - BETA * d)),
    ],
    ids=["sigmoid", "conservative", "hinge"],
)
def test_dpo_forms(monkeypatch: Any, params: dict, per_pair: Any) -> None:
    from framework.objectives import dpo

    loss, metrics = run_objective(dpo, "dpo", monkeypatch, beta=BETA, **params)
    expected = sum(per_pair(d) for d in dpo_deltas()) / 2
    assert loss == pytest.approx(expected, abs=1e-6)
    assert metrics["rewards/margins"] == pytest.approx(BETA * sum(dpo_deltas()) / 2, abs=1e-6)
    assert metrics["rewards/accuracies"] == 0.5  # one pair right (delta 1.5), one wrong


def test_ipo(monkeypatch: Any) -> None:
    from framework.objectives import dpo

    loss, _ = run_objective(dpo, "dpo", monkeypatch, beta=BETA, loss_type="ipo")
    ratio = [p - r for p, r in zip(POLICY, REFERENCE)]
    averaged = [
        ratio[0] / TOKENS[0] - ratio[2] / TOKENS[2],
        ratio[1] / TOKENS[1] - ratio[3] / TOKENS[3],
    ]
    expected = sum((a - 1 / (2 * BETA)) ** 2 for a in averaged) / 2
    assert loss == pytest.approx(expected, abs=1e-6)


def test_simpo(monkeypatch: Any) -> None:
    from framework.objectives import simpo

    loss, _ = run_objective(simpo, "simpo", monkeypatch, beta=2.0, gamma=0.5)
    mean = [p / t for p, t in zip(POLICY, TOKENS)]
    expected = sum(-logsigmoid(2.0 * (mean[i] - mean[i + 2]) - 0.5) for i in range(2)) / 2
    assert loss == pytest.approx(expected, abs=1e-6)


def test_orpo(monkeypatch: Any) -> None:
    from framework.objectives import orpo

    loss, metrics = run_objective(orpo, "orpo", monkeypatch, beta=BETA)
    mean = [p / t for p, t in zip(POLICY, TOKENS)]

    def log_odds(x: float) -> float:
        return x - math.log(1 - math.exp(x))

    expected = (
        sum(
            -mean[i] - BETA * logsigmoid(log_odds(mean[i]) - log_odds(mean[i + 2]))
            for i in range(2)
        )
        / 2
    )
    assert loss == pytest.approx(expected, abs=1e-6)
    assert metrics["nll_loss"] == pytest.approx(-(mean[0] + mean[1]) / 2, abs=1e-6)
