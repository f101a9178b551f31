"""`ft validate --data`: read a run's data the way training will (columns, labels, tokenized
lengths) with the model's tokenizer, without loading the model, so that data problems surface
before a job is queued rather than minutes into `ft train`."""

from __future__ import annotations

from typing import Any

from framework.config.schema import RunConfig


def check_data(run: RunConfig) -> list[str]:
    """One line per split: examples, where from, labels, and token lengths against
    data.max_length. Raises the same UserError ft train would for a data problem."""
    from framework.data.loading import load_raw_splits
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    family = run.plugins.family
    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    task = run.plugins.task_class(run.task, run.data, tokenizer, family)
    task.use_objective(run.plugins.objective(run.objective, task), run.train)
    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    tokenized = task.tokenize(raw.splits)
    labels = getattr(task, "labels", None)
    lines = []
    for split, dataset in raw.splits.items():
        lengths = _lengths(tokenized.get(split))
        cut = sum(1 for n in lengths if n >= run.data.max_length)
        shown = (
            f"tokens per example: max {max(lengths)}, mean {sum(lengths) / len(lengths):.1f}"
            f" (data.max_length={run.data.max_length}; {cut} at the limit)"
            if lengths
            else "no examples left after tokenization"
        )
        notes = "".join(f"; {note}" for note in task.data_notes(split))
        lines.append(
            f"{split}: {len(dataset)} examples from {raw.describe(split)}; columns "
            f"{', '.join(dataset.column_names)}; {shown}{notes}"
        )
    if labels:
        lines.append(
            f"labels ({len(labels)}): {', '.join(map(str, labels[:20]))}"
            f"{' ...' if len(labels) > 20 else ''}"
        )
    return lines


def _lengths(dataset: Any) -> list[int]:
    """Tokens per example: its input_ids, or its longest sequence (a pair's chosen or rejected)."""
    if dataset is None:
        return []
    columns = [c for c in dataset.column_names if c.endswith("input_ids")]
    if not columns:
        return []
    return [max(len(ids) for ids in row) for row in zip(*(dataset[c] for c in columns))]
