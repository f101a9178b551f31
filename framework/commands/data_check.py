"""`ft validate --data`: read a run's data the way training will (columns, labels, tokenized
lengths) with the model's tokenizer, without loading the model, so that data problems surface
before a job is queued rather than minutes into `ft train`."""

from __future__ import annotations

from typing import Any

from framework.config.schema import RunConfig
from framework.core.streams import is_stream

STREAM_SAMPLE = 1000  # examples of a stream read to describe it


def check_data(run: RunConfig) -> list[str]:
    """One line per split (per source of data=mix): examples, where from, columns and token
    lengths against data.max_length (data.block_size); with several sources, then each source's
    examples and tokens, in its own splits and in the mixed training split. Raises the same
    UserError ft train would for a data problem. A stream is described by its first rows."""
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.training.run_data import describe_counts, prepare_data

    family = run.plugins.family
    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    data = prepare_data(run, tokenizer, family, cache=False)
    several = len(data.sources) > 1
    lines = []
    for source, task, tokenized in zip(data.sources, data.tasks, data.tokenized):
        for split, dataset in source.raw.splits.items():
            name = f"{source.id} {split}" if several else split
            count = "streamed" if is_stream(dataset) else f"{len(dataset)} examples"
            notes = "".join(f"; {note}" for note in task.data_notes(split))
            lines.append(
                f"{name}: {count} from {source.raw.describe(split)}; columns "
                f"{', '.join(dataset.column_names)}; {_shown(run, tokenized.get(split))}{notes}"
            )
    lines += describe_counts(data.counts)  # a mix's sources, or the blocks of pretraining
    labels = getattr(data.task, "labels", None)
    if labels:
        lines.append(
            f"labels ({len(labels)}): {', '.join(map(str, labels[:20]))}"
            f"{' ...' if len(labels) > 20 else ''}"
        )
    return lines


def _shown(run: RunConfig, tokenized: Any) -> str:
    """Token lengths of a tokenized split against the limit (a stream's first rows)."""
    lengths = _lengths(tokenized)
    if not lengths:
        return "no examples left after tokenization"
    key, limit = (
        ("data.block_size", run.data.block_size)
        if run.data.block_size
        else ("data.max_length", run.data.max_length)
    )
    cut = sum(1 for n in lengths if n >= limit)
    first = f"its first {len(lengths)} " if is_stream(tokenized) else ""
    return (
        f"{first}tokens per example: max {max(lengths)}, mean {sum(lengths) / len(lengths):.1f}"
        f" ({key}={limit}; {cut} at the limit)"
    )


def _lengths(dataset: Any) -> list[int]:
    """Tokens per example: its input_ids, or its longest sequence (a pair's chosen or rejected);
    of a stream, its first rows."""
    if dataset is None:
        return []
    if is_stream(dataset):
        return [len(row["input_ids"]) for row in dataset.take(STREAM_SAMPLE)]
    columns = [c for c in dataset.column_names if c.endswith("input_ids")]
    if not columns:
        return []
    return [max(len(ids) for ids in row) for row in zip(*(dataset[c] for c in columns))]
