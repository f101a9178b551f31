"""A run's data, ready for the loaders: every source read (data.source, or each of data.sources),
checked and tokenized by the task (through the token cache; a stream lazily, as training reads it),
the training parts mixed into one split, and the held-out splits kept per source, so that each
source is also evaluated on its own (metrics eval/<id>/...).

With several sources, each is read by a task instance of its own (its columns, its row shape), and
the first source's instance is the run's task: later sources take its label maps
(Task.artifacts / restore_artifacts), so that every source is labelled alike."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framework.core.streams import is_stream
from framework.data.loading import LoadedSource, load_sources
from framework.data.mix import mix_train, weights_of
from framework.training.token_cache import tokenize_cached

log = logging.getLogger("ft")

SOURCE_COLUMN = "_ft_source"  # index of an example's source, while a mix is counted


@dataclass
class EvalSet:
    """One held-out split to evaluate: its metrics are logged under `prefix`."""

    prefix: str  # "" (validation), "test_", "eval/<id>/", "eval/<id>/test_"
    dataset: Any  # tokenized
    raw: Any = None  # the untokenized rows, for generation metrics (None: none to read)


@dataclass
class SourceCounts:
    """What one source gives the run: examples and tokens per split (None: a stream)."""

    id: str
    share: str  # "weight 0.60", "count 500", "all"
    examples: dict[str, int | None] = field(default_factory=dict)
    tokens: dict[str, int | None] = field(default_factory=dict)


@dataclass
class RunData:
    """The tokenized data of a run."""

    task: Any  # the run's task (the first source's instance)
    objective: Any  # the run's objective (the first source's task's: loss, evaluation)
    train: Any  # the mixed training split: a Dataset, or a stream (datasets.IterableDataset)
    eval_sets: list[EvalSet]
    counts: list[SourceCounts]  # per source, in order (none for a single whole source)
    tasks: list[Any]  # each source's task instance (the first is `task`)
    sources: list[LoadedSource]  # each source's raw splits
    tokenized: list[dict[str, Any]]  # each source's tokenized splits (before the mix)


def prepare_data(
    run: Any,
    tokenizer: Any,
    family: Any,
    cache: bool = True,
    first: Callable[[], Any] = contextlib.nullcontext,
) -> RunData:
    """Read, check, tokenize and mix the run's sources. `cache`: through the token cache (else
    tokenized afresh, nothing written); `first` orders cache writes across ranks (rank 0 first)."""
    sources = load_sources(run)
    tasks, objectives = _source_tasks(run, sources, tokenizer, family)
    tokenized = []
    for source, task in zip(sources, tasks):
        splits = source.raw.splits
        tables = {s: d for s, d in splits.items() if not is_stream(d)}
        with first():
            done = tokenize_cached(run, task, tokenizer, tables) if cache else task.tokenize(tables)
        streams = {s: d for s, d in splits.items() if is_stream(d)}
        tokenized.append({**done, **(task.tokenize(streams) if streams else {})})
    # Counted where they say something (each pass over the tokens costs time on a big corpus):
    # the sources of a mix, a counted source, the blocks of continued pretraining.
    counted = len(sources) > 1 or sources[0].count is not None or run.data.block_size is not None
    counts = [_counts(s, parts) for s, parts in zip(sources, tokenized)] if counted else []
    train = _mixed_train(run, sources, [parts["train"] for parts in tokenized], counts)
    return RunData(
        task=tasks[0],
        objective=objectives[0],
        train=train,
        eval_sets=_eval_sets(sources, tasks, tokenized),
        counts=counts,
        tasks=tasks,
        sources=sources,
        tokenized=tokenized,
    )


def _source_tasks(
    run: Any, sources: list[LoadedSource], tokenizer: Any, family: Any
) -> tuple[list[Any], list[Any]]:
    """A task instance per source, its columns and labels checked on the raw data, each told
    which objective reads its batches before it tokenizes; and those objectives."""
    tasks: list[Any] = []
    objectives: list[Any] = []
    for source in sources:
        data = (
            run.data if len(sources) == 1 else dataclasses.replace(run.data, columns=source.columns)
        )
        task = run.plugins.task_class(run.task, data, tokenizer, family)
        objectives.append(run.plugins.objective(run.objective, task))
        task.use_objective(objectives[-1], run.train)
        task.check_columns(source.raw.splits, source.raw.describe)
        if tasks:  # every source labelled as the first (a label it lacks is an error)
            task.restore_artifacts(tasks[0].artifacts())
        task.fit_labels(source.raw.splits, source.raw.describe)
        tasks.append(task)
    return tasks, objectives


def _tokens(dataset: Any) -> int:
    """Tokens of a tokenized split (its input_ids), read in Arrow batches."""
    import pyarrow.compute as pc

    if "input_ids" not in dataset.column_names:
        return 0
    total = 0
    for batch in dataset.select_columns(["input_ids"]).with_format("arrow").iter(10_000):
        total += pc.sum(pc.list_value_length(batch["input_ids"])).as_py() or 0
    return total


def _counts(source: LoadedSource, tokenized: dict[str, Any]) -> SourceCounts:
    share = (
        f"weight {source.weight:g}"
        if source.weight is not None
        else (f"count {source.count}" if source.count is not None else "all")
    )
    counts = SourceCounts(source.id, share)
    for split, dataset in tokenized.items():
        streamed = is_stream(dataset)
        counts.examples[split] = None if streamed else len(dataset)
        counts.tokens[split] = None if streamed else _tokens(dataset)
    return counts


def _mixed_train(
    run: Any, sources: list[LoadedSource], parts: list[Any], counts: list[SourceCounts]
) -> Any:
    """The training split of the run: the sources' parts mixed. A mix of tables is counted per
    source (the examples and tokens that training will see); a stream is counted as it is read."""
    if len(parts) == 1 and sources[0].count is None:
        return parts[0]
    if any(is_stream(part) for part in parts):
        return mix_train(parts, sources, run.data)
    marked = [part.add_column(SOURCE_COLUMN, [i] * len(part)) for i, part in enumerate(parts)]
    mixed = mix_train(marked, sources, run.data)
    import pyarrow.compute as pc

    examples = [0] * len(parts)
    tokens = [0] * len(parts)
    columns = [SOURCE_COLUMN] + (["input_ids"] if "input_ids" in mixed.column_names else [])
    for batch in mixed.select_columns(columns).with_format("arrow").iter(10_000):
        origin = batch[SOURCE_COLUMN]
        lengths = pc.list_value_length(batch["input_ids"]) if "input_ids" in columns else None
        for index in range(len(parts)):
            chosen = pc.equal(origin, index)
            examples[index] += pc.sum(chosen).as_py() or 0
            if lengths is not None:
                tokens[index] += pc.sum(pc.filter(lengths, chosen)).as_py() or 0
    for count, n, t in zip(counts, examples, tokens):
        count.examples["mixed train"], count.tokens["mixed train"] = n, t
    return mixed.remove_columns(SOURCE_COLUMN)


def _eval_sets(sources: list[LoadedSource], tasks: list[Any], tokenized: list[dict]) -> list:
    """The held-out splits: validation (unprefixed) and test (test_*) of the whole data, and with
    several sources each source's own as eval/<id>/... The raw rows go with a split whose task
    reads them as the run's task does (generation metrics read raw rows by its columns)."""
    import datasets

    sets: list[EvalSet] = []
    main = tasks[0]
    for split, prefix in (("validation", ""), ("test", "test_")):
        held = [parts[split] for parts in tokenized if split in parts]
        if not held:
            continue
        if len(sources) == 1:
            sets.append(EvalSet(prefix, held[0], sources[0].raw.splits[split]))
            continue
        sets.append(EvalSet(prefix, datasets.concatenate_datasets(held)))
        for source, task, parts in zip(sources, tasks, tokenized):
            if split in parts:
                same = task.data.columns == main.data.columns and task.roles() == main.roles()
                raw = source.raw.splits[split] if same else None
                sets.append(EvalSet(f"eval/{source.id}/{prefix}", parts[split], raw))
    return sets


def describe_counts(counts: list[SourceCounts]) -> list[str]:
    """One line per source: its share (of several), and examples and tokens per split."""
    lines = []
    for count in counts:
        parts = []
        for split, examples in count.examples.items():
            if examples is None:
                parts.append(f"{split}: streamed")
                continue
            tokens = count.tokens.get(split)
            parts.append(
                f"{split}: {examples} examples"
                + (f", {tokens} tokens" if tokens is not None else "")
            )
        named = f"source {count.id} ({count.share}): " if len(counts) > 1 else ""
        lines.append(named + "; ".join(parts))
    return lines


def log_counts(data: RunData, run: Any) -> None:
    """The sources' counts in the log (a single source's only where it is counted)."""
    for line in describe_counts(data.counts):
        log.info("data: %s", line)
    probabilities = weights_of(run.data.sources) if len(data.sources) > 1 else None
    if probabilities:
        log.info(
            "data: sampled by weight (normalised: %s; stopping_strategy=%s, seed %d)",
            ", ".join(f"{c.id} {p:.3f}" for c, p in zip(data.counts, probabilities)),
            run.data.stopping_strategy,
            run.data.shuffle_seed,
        )


def shuffled_stream(run: Any, train: Any) -> Any:
    """A streamed training split shuffled in windows of data.shuffle_buffer examples, resumable
    exactly (training/streams.py). The loaders read at most two batches ahead of the trainer
    (accelerate's prefetch of one, plus the one being collated)."""
    from framework.training.streams import WindowShuffledStream

    return WindowShuffledStream(
        train, run.data.shuffle_buffer, run.data.shuffle_seed, lookahead=2 * run.train.batch_size
    )


def held_out_sets(run: Any, task: Any, split: str) -> list[EvalSet]:
    """One held-out split of a finished run's data as training evaluated it (`ft eval`): the
    whole of it, and with several sources each source's (eval/<id>/...). `task` is the run's,
    its label maps restored; each further source gets an instance of its own that takes them."""
    from framework.core.errors import UserError

    sources = load_sources(run)
    sets: list[EvalSet] = []
    parts = []
    for index, source in enumerate(sources):
        raw = source.raw
        if split not in raw.splits:
            raise UserError(
                f"--split {split}: the data of {source.id} has splits {sorted(raw.splits)}"
            )
        subset = {split: raw.splits[split]}
        reader = task
        if index:
            data = dataclasses.replace(run.data, columns=source.columns)
            reader = run.plugins.task_class(run.task, data, task.tokenizer, task.family)
        # Before tokenizing, as in training: the objective decides what the task tokenizes.
        reader.use_objective(run.plugins.objective(run.objective, reader), run.train)
        reader.check_columns(subset, raw.describe)
        if index:
            reader.restore_artifacts(task.artifacts())
        reader.fit_labels({"train": raw.splits["train"], **subset}, raw.describe)
        tokenized = reader.tokenize(subset)[split]
        same = reader is task or (
            reader.data.columns == task.data.columns and reader.roles() == task.roles()
        )
        parts.append(EvalSet(f"eval/{source.id}/", tokenized, raw.splits[split] if same else None))
    if len(parts) == 1:
        return [EvalSet("", parts[0].dataset, parts[0].raw)]
    import datasets

    sets.append(EvalSet("", datasets.concatenate_datasets([p.dataset for p in parts])))
    return sets + parts
