"""Whether a split is a stream: a `datasets.IterableDataset`, read as training consumes it, with
no length (data.streaming). Loading, tasks and the trainer each treat streams apart."""

from __future__ import annotations

from typing import Any


def is_stream(dataset: Any) -> bool:
    """Whether `dataset` is read as a stream (a datasets.IterableDataset: no length)."""
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def with_columns(stream: Any) -> Any:
    """A stream whose column names are known (a hub stream may only learn them from its first
    rows): the tasks check and replace columns by name."""
    if stream.column_names is None:
        return stream._resolve_features()  # reads the first rows; datasets has no public name
    return stream
