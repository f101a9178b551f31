"""Synthetic data sources for demos and tests: generated deterministically from a seed, so the
recipes that use them run anywhere without downloads. The generators live in
framework/testing/ and are imported only when a source is built."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError
from framework.core.registry import DATASETS
from framework.data.builtin import Rows, Source, check_positive


@DATASETS.register("synthetic_squad")
class SyntheticSquad(Source):
    """Generated extractive QA in SQuAD form (id, title, context, question, answers).

    Contexts are person bios, company profiles, long town histories (600+ characters, so stride
    windows matter) and conference programmes, each with distractor facts of the same type as
    the answer; one to three questions per context. With ``unanswerable_fraction > 0`` some
    questions name an entity absent from the context and have empty answers (SQuAD 2.0).
    """

    splits = ("train", "validation")
    columns = dict.fromkeys(splits, ("id", "title", "context", "question", "answers"))

    @dataclass
    class Params:
        num_train: int = 2000  # training questions
        num_validation: int = 200  # validation questions
        seed: int = 0  # generator seed (train and validation use separate streams)
        unanswerable_fraction: float = 0.0  # share of questions with no answer in the context

        def __post_init__(self) -> None:
            check_positive("synthetic_squad", "num_train", self.num_train)
            check_positive("synthetic_squad", "num_validation", self.num_validation)
            frac = self.unanswerable_fraction
            if (
                isinstance(frac, bool)
                or not isinstance(frac, (int, float))
                or not 0.0 <= frac <= 1.0
            ):
                raise UserError(
                    f"unanswerable_fraction: must be a number between 0 and 1 for built-in dataset "
                    f"'synthetic_squad', got {frac!r}"
                )

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        from framework.testing.synthetic_squad import _squad_rows

        frac = float(params.unanswerable_fraction)
        return {
            "train": _squad_rows(
                params.num_train, random.Random(f"squad-train-{params.seed}"), "train", frac
            ),
            "validation": _squad_rows(
                params.num_validation,
                random.Random(f"squad-validation-{params.seed}"),
                "validation",
                frac,
            ),
        }


@DATASETS.register("synthetic_seq2seq")
class SyntheticSeq2Seq(Source):
    """Translation-like pairs a tiny model learns fast: columns source, target.

    task 'dates': human-written dates in seven styles -> 'YYYY/MM/DD' ('the 5th of March, 2021'
    -> '2021/03/05'; slashes, not ISO dashes, because the JSON loader of ``datasets`` would
    otherwise infer a timestamp column). task 'number_words': English number words -> digits ('forty-two' -> '42').
    Sources never repeat, and validation sources never occur in train.
    """

    splits = ("train", "validation")
    columns = dict.fromkeys(splits, ("source", "target"))
    tasks = ("dates", "number_words")

    @dataclass
    class Params:
        num_train: int = 2000  # training pairs
        num_validation: int = 200  # validation pairs (sources disjoint from train)
        seed: int = 0  # generator seed
        task: str = "dates"  # 'dates' (-> YYYY/MM/DD) or 'number_words' (-> digits)

        def __post_init__(self) -> None:
            check_positive("synthetic_seq2seq", "num_train", self.num_train)
            check_positive("synthetic_seq2seq", "num_validation", self.num_validation)
            if self.task not in SyntheticSeq2Seq.tasks:
                raise UserError(
                    f"task: unknown synthetic_seq2seq task {self.task!r}; choose one of: "
                    f"{', '.join(SyntheticSeq2Seq.tasks)}"
                )

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        from framework.testing.synthetic_seq2seq import _seq2seq_rows

        rng = random.Random(f"seq2seq-{params.task}-{params.seed}")
        seen: set = set()
        validation = _seq2seq_rows(params.task, params.num_validation, rng, seen)
        train = _seq2seq_rows(params.task, params.num_train, rng, seen)
        return {"train": train, "validation": validation}


@DATASETS.register("synthetic_retrieval")
class SyntheticRetrieval(Source):
    """Embedding-training pairs built from facts about people.

    train/validation: ``anchor`` (a question), ``positive`` (the sentence stating the answer),
    ``negative`` (a hard negative: the same person with another fact, or a person sharing a
    first name or surname with the same kind of fact but another value).
    scored: ``sentence1``, ``sentence2``, ``score`` in {1.0, 0.6, 0.4, 0.2, 0.0} (paraphrase,
    same relation other value, same person other relation, similar name, unrelated), for
    Spearman evaluation; the five cases are balanced.
    """

    splits = ("train", "validation", "scored")
    columns = {
        "train": ("anchor", "positive", "negative"),
        "validation": ("anchor", "positive", "negative"),
        "scored": ("sentence1", "sentence2", "score"),
    }

    @dataclass
    class Params:
        num_train: int = 2000  # (anchor, positive, negative) training triples
        num_validation: int = 200  # validation triples
        num_scored: int = 200  # scored sentence pairs in the 'scored' split
        seed: int = 0  # generator seed

        def __post_init__(self) -> None:
            check_positive("synthetic_retrieval", "num_train", self.num_train)
            check_positive("synthetic_retrieval", "num_validation", self.num_validation)
            check_positive("synthetic_retrieval", "num_scored", self.num_scored)

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        from framework.testing.synthetic_retrieval import _retrieval_pairs, _scored_pairs

        return {
            "train": _retrieval_pairs(
                params.num_train, random.Random(f"retrieval-train-{params.seed}")
            ),
            "validation": _retrieval_pairs(
                params.num_validation, random.Random(f"retrieval-validation-{params.seed}")
            ),
            "scored": _scored_pairs(
                params.num_scored, random.Random(f"retrieval-scored-{params.seed}")
            ),
        }
