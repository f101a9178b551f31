"""Seeded random inputs for every metric in framework.core.metrics, and the recorder of their
expected numbers (tests/core/metrics_recorded.json).

The recorded numbers come from the hand-written implementations that framework/core/metrics.py
held up to commit d39a7c8 (each cross-checked there against scikit-learn, scipy.stats, seqeval,
rouge-score and sacreBLEU). The library-backed module must reproduce them on every case: that
guards the argument conventions it passes (averaging, zero_division, tokenisation, BIO/IOBES
chunking, reference layout) and the "same numbers as before" promise. To record again from a
metrics module file (for example the old one, `git show d39a7c8:framework/core/metrics.py`):

    python -m tests.core.metric_cases PATH/TO/metrics.py

Inputs are drawn with `random.Random.random()` only: its sequence for a given seed is the one
part of the `random` module Python promises to keep across versions, so the cases never change.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CASES_PER_METRIC = 300
RECORDED_FILE = Path(__file__).with_name("metrics_recorded.json")

_TYPES = ("PER", "LOC", "ORG")
_TAGS = ["O"] * 4 + [f"{p}-{t}" for p in "BIES" for t in _TYPES]
_WORDS = [
    "the",
    "a",
    "an",
    "cat",
    "cats",
    "dog",
    "dogs",
    "sat",
    "sitting",
    "on",
    "mat",
    "The",
    "Dog",
    "Paris",
    "France",
    "3.5",
    "1,000",
    "it's",
    "U.S.",
    "café",
    "x-ray",
]
_PUNCT = [",", ".", "!", "?", "-", "'", '"', "&amp;", "(", ")", ":", ";", "%", "$"]


class _Draw:
    """Small choices built on random() alone (see the module docstring)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def below(self, n: int) -> int:
        return min(int(self.rng.random() * n), n - 1)

    def pick(self, options):
        return options[self.below(len(options))]

    def coin(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def text(self, max_words: int) -> str:
        words = []
        for _ in range(self.below(max_words + 1)):
            words.append(self.pick(_PUNCT) if self.coin(0.2) else self.pick(_WORDS))
            if self.coin(0.15):  # glue the next token on: "cat," "dog." "mat!"
                words[-1] += self.pick(_PUNCT)
        return " ".join(words)


def _classification(d: _Draw) -> tuple[str, dict[str, Any]]:
    k = 2 + d.below(5)
    n = 0 if d.coin(0.03) else 1 + d.below(30)
    labels = [d.below(k) for _ in range(n)]
    preds = [y if d.coin(0.5) else d.below(k) for y in labels]
    return "classification_metrics", {"preds": preds, "labels": labels, "num_labels": k}


def _multilabel(d: _Draw) -> tuple[str, dict[str, Any]]:
    k = 1 + d.below(6)
    n = 0 if d.coin(0.03) else 1 + d.below(20)
    density = d.pick([0.0, 0.1, 0.3, 0.6])
    labels = [[int(d.coin(density)) for _ in range(k)] for _ in range(n)]
    preds = [[c if d.coin(0.7) else int(d.coin(density)) for c in row] for row in labels]
    return "multilabel_metrics", {"preds": preds, "labels": labels}


def _regression(d: _Draw) -> tuple[str, dict[str, Any]]:
    n = 0 if d.coin(0.03) else 1 + d.below(25)
    kind = d.pick(["float", "ties", "constant", "nan"])
    labels = [d.rng.random() * 10 - 5 for _ in range(n)]
    preds = [y + d.rng.random() * 4 - 2 for y in labels]
    if kind == "ties":
        labels = [float(round(y)) for y in labels]
        preds = [float(round(p)) for p in preds]
    elif kind == "constant" and n:
        preds = [0.1] * n  # not exact in binary: centring leaves residues
    elif kind == "nan" and n:
        preds[d.below(n)] = float("nan")
    return "regression_metrics", {"preds": preds, "labels": labels}


def _entity(d: _Draw) -> tuple[str, dict[str, Any]]:
    gold = [[d.pick(_TAGS) for _ in range(d.below(9))] for _ in range(d.below(6))]
    pred = [[t if d.coin(0.6) else d.pick(_TAGS) for t in sent] for sent in gold]
    return "entity_metrics", {"pred_tags": pred, "true_tags": gold}


def _squad(d: _Draw) -> tuple[str, dict[str, Any]]:
    n = d.below(6)
    refs = [[d.text(4) for _ in range(d.below(4))] for _ in range(n)]
    preds = [d.pick(r) if r and d.coin(0.3) else d.text(4) for r in refs]
    return "squad_metrics", {"predictions": preds, "references": refs}


def _rouge(d: _Draw) -> tuple[str, dict[str, Any]]:
    n = d.below(6)
    refs = [d.text(12) for _ in range(n)]
    preds = [r if d.coin(0.1) else d.text(12) for r in refs]
    return "rouge_scores", {"predictions": preds, "references": refs}


def _bleu_chrf(d: _Draw) -> tuple[str, dict[str, Any]]:
    n = d.below(6)
    many = d.coin(0.4)  # a list of alternative references per prediction, else one string each
    refs: list[Any] = []
    for _ in range(n):
        alternatives = [d.text(14) for _ in range(d.below(4) if many else 1)]
        refs.append(alternatives if many else alternatives[0])
    preds = [d.text(14) for _ in range(n)]
    return "bleu_chrf", {"predictions": preds, "references": refs}


def _retrieval(d: _Draw) -> tuple[str, dict[str, Any]]:
    n_queries, n_docs = 1 + d.below(10), 1 + d.below(15)  # no queries: a hand case
    levels = d.pick([3, 1000])  # few levels: many ties
    sim = [[d.below(levels) / levels for _ in range(n_docs)] for _ in range(n_queries)]
    if d.coin(0.1):
        sim[0][0] = float("nan")
    relevant = [d.below(n_docs) for _ in range(n_queries)]
    return "retrieval_metrics", {"similarity": sim, "relevant": relevant, "ks": [1, 3, 5]}


_DRAWERS: list[Callable[[_Draw], tuple[str, dict[str, Any]]]] = [
    _classification,
    _multilabel,
    _regression,
    _entity,
    _squad,
    _rouge,
    _bleu_chrf,
    _retrieval,
]


def metric_cases() -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(metric function name, case index, keyword arguments) for every recorded case."""
    for drawer_index, drawer in enumerate(_DRAWERS):
        for i in range(CASES_PER_METRIC):
            name, kwargs = drawer(_Draw(1000 * drawer_index + i))
            yield name, i, kwargs


def record(metrics_module: Any) -> dict[str, list[dict[str, float]]]:
    """{function name: [result dict per case]} from the given metrics module."""
    recorded: dict[str, list[dict[str, float]]] = {}
    for name, _, kwargs in metric_cases():
        result = getattr(metrics_module, name)(**kwargs)
        recorded.setdefault(name, []).append({k: float(f"{v:.12g}") for k, v in result.items()})
    return recorded


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("metrics_to_record", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorded = record(module)
    # One case per line: a re-recording that changes numbers shows as a readable diff.
    lines = [
        f"  {json.dumps(name)}: [\n"
        + ",\n".join(f"    {json.dumps(result)}" for result in results)
        + "\n  ]"
        for name, results in recorded.items()
    ]
    RECORDED_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {sum(map(len, recorded.values()))} cases to {RECORDED_FILE}")


if __name__ == "__main__":
    main(sys.argv[1])
