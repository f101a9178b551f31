"""data=mix: several sources in one run (`data.sources`), each read like a single source (its own
options, columns and held-out split) and mixed into one training split with `datasets`' own tools:
sampled by weight with `interleave_datasets` (probabilities, stopping strategy, seeded), or
concatenated with `concatenate_datasets` (each source whole, or a fixed `count` of it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.core.params import DataConfig, SourceConfig
from framework.core.registry import DATASETS

SOURCE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")  # it becomes part of metric keys (eval/<id>/...)


@dataclass(kw_only=True)
class MixParams:
    """data=mix reads no options of its own: the sources are listed in data.sources."""


@DATASETS.register("mix")
class Mix:
    """Several sources in one run (data.sources), by weight or by count."""

    Params = MixParams
    summary = "several sources in one run (data.sources: weights or counts)"
    mixes = True  # the run's sources are data.sources, not data.source

    @classmethod
    def problems(cls, params: MixParams) -> list[str]:
        return []


def source_ids(specs: list[SourceConfig]) -> list[str]:
    """Each source's id: its `id`, else the stem of its train file (or hub path), else its
    source's name; a name that several sources share gets its position appended (files_0)."""
    named = []
    for spec in specs:
        options = spec.source if isinstance(spec.source, dict) else {}
        where = options.get("train") or options.get("path")  # a file, or a hub dataset id
        named.append(spec.id or (Path(str(where)).stem if where else spec.name))
    return [
        name if spec.id or named.count(name) == 1 else f"{name}_{index}"
        for index, (spec, name) in enumerate(zip(specs, named))
    ]


def mix_problems(data: DataConfig, mixes: bool) -> list[str]:
    """What is wrong with data.sources, one line each (data=mix needs them; others take none)."""
    if not mixes:
        if data.sources:
            return [
                f"data.sources: set with data={data.name}; several sources need data=mix "
                f"(the list replaces data.source)"
            ]
        return []
    if not data.sources:
        return [
            "data.sources: missing; data=mix needs a list of sources, e.g. "
            "[{name: files, source: {train: a.jsonl}, weight: 0.7}, {name: chatterbot_qa, "
            "weight: 0.3}]"
        ]
    found = []
    ids = source_ids(data.sources)
    for index, spec in enumerate(data.sources):
        key = f"data.sources[{index}]"
        if spec.weight is not None and spec.weight <= 0:
            found.append(f"{key}.weight={spec.weight}: must be > 0 (a share of the sampled mix)")
        if spec.count is not None and spec.count < 1:
            found.append(f"{key}.count={spec.count}: must be >= 1 (training examples)")
        if spec.weight is not None and spec.count is not None:
            found.append(
                f"{key}: both weight={spec.weight} and count={spec.count}; give one: a weight "
                f"(sampled mix) or a count (that many examples, concatenated)"
            )
        if not SOURCE_ID.match(ids[index]):
            found.append(
                f"{key}.id='{ids[index]}': use letters, digits, '_', '-' or '.' (it names the "
                f"source's metrics, eval/<id>/...)"
            )
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        found.append(f"data.sources: id '{duplicated[0]}' is used twice; give each source an id")
    weighted = [spec.weight is not None for spec in data.sources]
    if any(weighted) and not all(weighted):
        missing = weighted.index(False)
        found.append(
            f"data.sources[{missing}].weight: missing; give every source a weight (a sampled "
            f"mix) or none (concatenated: each source whole, or its count)"
        )
    counted = next((i for i, spec in enumerate(data.sources) if spec.count is not None), None)
    if data.streaming and counted is not None:
        found.append(
            f"data.sources[{counted}].count: data.streaming=true reads a stream of unknown "
            f"length; give the sources weights instead"
        )
    elif data.streaming and len(data.sources) > 1 and not all(weighted):
        found.append(
            "data.sources: data.streaming=true interleaves streams by weight; give every "
            "source a weight (concatenated streams would train on one source after the other)"
        )
    return found


def weights_of(sources: list[Any]) -> list[float] | None:
    """The sampling probabilities of weighted sources (weights normalised to sum 1), or None
    when the sources are concatenated."""
    if not sources or sources[0].weight is None:
        return None
    total = sum(s.weight for s in sources)
    return [s.weight / total for s in sources]


def mix_train(parts: list[Any], sources: list[Any], data: DataConfig) -> Any:
    """One training split from each source's part (datasets or streams, in the order of
    `sources`): interleaved by weight, else concatenated (each part whole, or `count` of it)."""
    import datasets

    if len(parts) == 1 and sources[0].count is None:
        return parts[0]
    probabilities = weights_of(sources)
    if probabilities is not None:
        return datasets.interleave_datasets(
            parts,
            probabilities=probabilities,
            seed=data.shuffle_seed,
            stopping_strategy=data.stopping_strategy,
        )
    counted = [
        part if source.count is None else take_count(part, source.count, data.shuffle_seed)
        for part, source in zip(parts, sources)
    ]
    return datasets.concatenate_datasets(counted)


def take_count(dataset: Any, count: int, seed: int) -> Any:
    """`count` examples of a dataset: a seeded sample of it, or all of it repeated (and then a
    seeded sample of the rest) when it is smaller: a small source is upsampled."""
    import datasets

    if not len(dataset):
        raise UserError("data.sources: a source has no training examples left to count")
    whole, rest = divmod(count, len(dataset))
    shuffled = dataset.shuffle(seed=seed)
    parts = [dataset] * whole + ([shuffled.select(range(rest))] if rest else [])
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
