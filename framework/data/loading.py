"""Load the raw splits of a run: read each source, check it is non-empty, hold out a validation
split when the data has none, and cap the example counts. Tokenization is the task's job.

A run reads one source (`data.source`), or several (data=mix: `data.sources`), each loaded the
same way. With data.streaming the training split is a `datasets.IterableDataset` read as training
consumes it; held-out splits are small and stay ordinary (memory-mapped) datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.core.params import DataConfig
from framework.core.streams import is_stream, with_columns


@dataclass
class RawSplits:
    """Raw HF datasets per split, plus where each came from (for error messages)."""

    splits: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    def describe(self, split: str) -> str:
        return self.origins.get(split, "the data")


@dataclass
class LoadedSource:
    """One source of a run: its raw splits and its share of the training examples."""

    id: str  # its name in logs and metric keys (eval/<id>/...)
    raw: RawSplits
    columns: dict[str, str]  # task role -> column of this source (data.columns, then its own)
    weight: float | None = None  # sampling weight (data=mix), relative
    count: int | None = None  # or a fixed number of training examples


def data_cache_dir() -> Path:
    from framework.core.cache import cache_root

    return cache_root() / "data"


def _read_file(path: Path, fmt: str, key: str, streaming: bool = False, **options: Any) -> Any:
    """One split's file as a Dataset (a stream with `streaming`); `key` names it in errors."""
    import datasets

    if not path.is_file():
        raise UserError(f"{key}: file not found: {path}")
    if _is_blank(path):
        raise UserError(f"{key}: {path} is empty. Point {key} at a file with examples")
    try:
        if fmt == "conll":
            return datasets.Dataset.from_list(read_conll(path))
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        if fmt == "text" and options.get("sample_by"):
            kwargs["sample_by"] = options["sample_by"]
        return datasets.load_dataset(
            fmt, data_files=str(path), split="train", streaming=streaming, **kwargs
        )
    except UserError:
        raise
    except Exception as error:  # pyarrow/json/csv parser errors differ by format
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if fmt == "json":
            message = _first_bad_json_line(path) or message
        raise UserError(
            f"{key}: cannot read {path} as {fmt}: {message}. "
            f"Check the file's format (set data.source.format if the suffix is wrong)"
        ) from None


def _is_blank(path: Path) -> bool:
    """No bytes, or only whitespace (a parser would report a confusing syntax error instead)."""
    size = path.stat().st_size
    if size > 1 << 16:  # 64 KiB of whitespace is not a case worth reading a big file for
        return False
    return not path.read_bytes().strip()


def _first_bad_json_line(path: Path) -> str:
    """'line N: <parser error>' for the first line of JSON input that does not parse (the datasets
    error names no line): per line for JSON Lines, else for the file as one JSON document."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"{type(error).__name__}: {error}"
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    try:
        json.loads(first)
        is_json_lines = True
    except json.JSONDecodeError:
        is_json_lines = False
    if not is_json_lines:
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return f"line {error.lineno}: {error.msg} (column {error.colno})"
        return ""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number}: {error.msg} (column {error.colno})"
    return ""


def load_raw_splits(
    entry: Any, data: DataConfig, source_params: Any, key: str = "data.source"
) -> RawSplits:
    """Return train and validation (and test, if given) as raw datasets, read by a data source
    `entry` (run.plugins.source, or one of run.plugins.sources) with its typed options; `key`
    is where those options are set (error messages name it). With data.streaming the train split
    is a stream."""
    raw = _read_source(entry, data, source_params, key)
    for split, dataset in raw.splits.items():
        if not is_stream(dataset) and len(dataset) == 0:
            raise UserError(
                f"data: split '{split}' of {raw.describe(split)} is empty. "
                f"Fix: point {key} at a file with examples"
            )
    if "train" not in raw.splits:
        raise UserError(f"{key}: {data.name} has no train split")
    if "validation" not in raw.splits:
        _hold_out(raw, data, key)
    caps = {
        "train": data.max_train_examples,
        "validation": data.max_eval_examples,
        "test": data.max_eval_examples,
    }
    for split, cap in caps.items():
        if cap is None or split not in raw.splits:
            continue
        if is_stream(raw.splits[split]):
            raw.splits[split] = raw.splits[split].take(cap)
        elif len(raw.splits[split]) > cap:
            raw.splits[split] = raw.splits[split].select(range(cap))
    for split in ("validation", "test"):  # held-out splits are small: read them once, here
        if split in raw.splits and is_stream(raw.splits[split]):
            raw.splits[split] = _materialized(raw.splits[split], data, f"{key} ({split})")
    if is_stream(raw.splits["train"]):
        raw.splits["train"] = with_columns(raw.splits["train"])
    return raw


def _read_source(entry: Any, data: DataConfig, source_params: Any, key: str) -> RawSplits:
    """The splits as the source gives them: loaded by the entry itself (hub), or from the
    files it names or writes (files, built-in datasets)."""
    from framework.data.sources import FORMATS

    raw = RawSplits(splits={})
    if hasattr(entry, "load"):
        raw.splits = entry.load(source_params, streaming=data.streaming)
        raw.origins = {
            s: f"{data.name} dataset '{getattr(source_params, 'path', '')}'" for s in raw.splits
        }
        return raw
    files = entry.materialize(source_params, data_cache_dir())
    forced = getattr(source_params, "format", None)
    sample_by = getattr(source_params, "sample_by", None)
    for split, path in files.items():
        fmt = forced or FORMATS.get(path.suffix.lower(), "json")
        # Only the training split streams: held-out splits are read whole (memory-mapped Arrow).
        stream = data.streaming and split == "train" and fmt != "conll"
        raw.splits[split] = _read_file(
            path, fmt, f"{key}.{split}", streaming=stream, sample_by=sample_by
        )
        raw.origins[split] = str(path)
    return raw


def _hold_out(raw: RawSplits, data: DataConfig, key: str) -> None:
    """A validation split cut from train: a seeded fraction of a table, or the first
    data.max_eval_examples rows of a stream (which has no length to take a fraction of)."""
    train = raw.splits["train"]
    if is_stream(train):
        if not data.max_eval_examples:
            raise UserError(
                f"data.max_eval_examples: the data of {key} has no validation split and "
                f"data.streaming=true reads train as a stream, which has no length to hold "
                f"out a fraction of. Fix: data.max_eval_examples=N (its first N rows are "
                f"held out) or a validation split ({key}.validation)"
            )
        held = data.max_eval_examples
        raw.splits["validation"] = train.take(held)
        raw.splits["train"] = train.skip(held)
        raw.origins["validation"] = f"{raw.describe('train')} (its first {held} rows)"
        return
    if not 0.0 < data.validation_split < 1.0 or len(train) < 2:
        raise UserError(
            f"data.validation_split={data.validation_split}: the data has no "
            f"validation split, so ft needs a fraction in (0, 1) of a train split "
            f"with at least 2 examples to hold out"
        )
    held = train.train_test_split(test_size=data.validation_split, seed=data.shuffle_seed)
    raw.splits["train"], raw.splits["validation"] = held["train"], held["test"]
    raw.origins["validation"] = f"{raw.describe('train')} (held-out {data.validation_split:g})"


def _materialized(stream: Any, data: DataConfig, where: str) -> Any:
    """A streamed held-out split as an ordinary Dataset: at most data.max_eval_examples rows."""
    import datasets

    if not data.max_eval_examples:
        raise UserError(
            f"data.max_eval_examples: {where} is a stream (data.streaming=true), and ft "
            f"evaluates a held-out split whole. Fix: data.max_eval_examples=N (its first N rows)"
        )
    rows = list(stream.take(data.max_eval_examples))
    if not rows:
        raise UserError(f"data: {where} is empty. Fix: point it at a split with examples")
    return datasets.Dataset.from_list(rows)


def load_sources(run: Any) -> list[LoadedSource]:
    """Every source of a run, loaded: data.source alone, or each of data.sources (data=mix)
    with its id, columns and share."""
    data = run.data
    if not getattr(run.plugins.source, "mixes", False):
        raw = load_raw_splits(run.plugins.source, data, run.data_source)
        return [LoadedSource(data.name, raw, dict(data.columns))]
    from framework.data.mix import source_ids

    loaded = []
    ids = source_ids(data.sources)
    for index, (spec, entry, params) in enumerate(
        zip(data.sources, run.plugins.sources, run.data_sources)
    ):
        raw = load_raw_splits(entry, data, params, key=f"data.sources[{index}].source")
        raw.origins = {split: f"source '{ids[index]}' ({o})" for split, o in raw.origins.items()}
        columns = {**data.columns, **spec.columns}
        loaded.append(LoadedSource(ids[index], raw, columns, spec.weight, spec.count))
    return loaded


def read_conll(path: Any) -> list[dict[str, list[str]]]:
    """Read a CoNLL token/tag file into ``[{"tokens": [...], "tags": [...]}, ...]``.

    One token per line: ``token<TAB>tag`` or ``token tag`` (whitespace); with more than two
    columns (CoNLL-2003: token POS chunk NER) the first is the token and the last the tag.
    Blank or whitespace-only lines end a sentence; ``-DOCSTART-`` lines are skipped.
    A line with a single column raises a UserError naming the file and line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"CoNLL file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"CoNLL file {path} is not valid UTF-8 ({e})") from None
    except OSError as e:
        raise UserError(f"cannot read CoNLL file {path}: {e}") from None

    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            flush()
            continue
        line = raw.strip()
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        if "\t" in line:
            fields = [f.strip() for f in line.split("\t")]
            fields = [f for f in fields if f]
        else:
            fields = line.split()
        if len(fields) < 2:
            raise UserError(
                f"{path}:{lineno}: malformed CoNLL line {raw!r}: expected 'token<TAB>tag' "
                f"(or 'token tag'); separate sentences with blank lines"
            )
        tokens.append(fields[0])
        tags.append(fields[-1])
    flush()
    return sentences
