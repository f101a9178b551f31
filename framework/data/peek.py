"""The first row of a data file, read without loading the file (no datasets, no torch): what
`ft validate` looks at to know the data's shape (strings or lists of turns) before a run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

HEAD_BYTES = 1 << 20  # a JSON array's first element is looked for in its first MiB


def first_row(path: Path, fmt: str) -> dict[str, Any] | None:
    """The first example of a json/jsonl/csv/parquet/text file as a mapping; None when it cannot
    be read cheaply (a missing or empty file, a JSON document that is not an array of rows)."""
    try:
        if fmt == "json":
            return _first_json_row(path)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
                rows = batch.to_pylist()
                return rows[0] if rows else None
            return None
        if fmt == "csv":
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            with path.open(newline="", encoding="utf-8") as handle:
                return next(csv.DictReader(handle, delimiter=delimiter), None)
        if fmt == "text":
            with path.open(encoding="utf-8") as handle:
                return {"text": handle.readline().rstrip("\n")}
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return None
    return None


def _first_json_row(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8") as handle:
        head = handle.read(HEAD_BYTES)
    text = head.lstrip()
    decoder = json.JSONDecoder()
    if text.startswith("["):  # one JSON array of rows
        try:
            row, _ = decoder.raw_decode(text[1:].lstrip())
        except json.JSONDecodeError:
            return None
    else:  # JSON Lines: the first non-blank line
        line = next((line for line in head.splitlines() if line.strip()), "")
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return None
    return row if isinstance(row, dict) else None
