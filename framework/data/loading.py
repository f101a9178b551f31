"""Load the raw splits of a run: read the source, check it is non-empty, hold out a validation
split when the data has none, and cap the example counts. Tokenization is the task's job."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.core.params import DataConfig


@dataclass
class RawSplits:
    """Raw HF datasets per split, plus where each came from (for error messages)."""

    splits: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    def describe(self, split: str) -> str:
        return self.origins.get(split, "the data")


def data_cache_dir() -> Path:
    from framework.core.cache import cache_root

    return cache_root() / "data"


def _read_file(path: Path, fmt: str, split: str) -> Any:
    import datasets

    if not path.is_file():
        raise UserError(f"data.source.{split}: file not found: {path}")
    if _is_blank(path):
        raise UserError(
            f"data.source.{split}: {path} is empty. Point data.source.{split} at a "
            f"file with examples"
        )
    try:
        if fmt == "conll":
            return datasets.Dataset.from_list(read_conll(path))
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        return datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except UserError:
        raise
    except Exception as error:  # pyarrow/json/csv parser errors differ by format
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if fmt == "json":
            message = _first_bad_json_line(path) or message
        raise UserError(
            f"data.source.{split}: cannot read {path} as {fmt}: {message}. "
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


def load_raw_splits(entry: Any, data: DataConfig, source_params: Any) -> RawSplits:
    """Return train and validation (and test, if given) as raw datasets, read by the run's data
    source `entry` (run.plugins.source)."""
    from framework.data.sources import FORMATS

    raw = RawSplits(splits={})
    if hasattr(entry, "load"):
        raw.splits = entry.load(source_params)
        raw.origins = {
            s: f"{data.name} dataset '{getattr(source_params, 'path', '')}'" for s in raw.splits
        }
    else:
        files = entry.materialize(source_params, data_cache_dir())
        forced = getattr(source_params, "format", None)
        for split, path in files.items():
            fmt = forced or FORMATS.get(path.suffix.lower(), "json")
            raw.splits[split] = _read_file(path, fmt, split)
            raw.origins[split] = str(path)
    for split, dataset in raw.splits.items():
        if len(dataset) == 0:
            raise UserError(
                f"data: split '{split}' of {raw.describe(split)} is empty. "
                f"Fix: point data.source at a file with examples"
            )
    if "train" not in raw.splits:
        raise UserError(f"data: {data.name} has no train split")
    if "validation" not in raw.splits:
        if not 0.0 < data.validation_split < 1.0 or len(raw.splits["train"]) < 2:
            raise UserError(
                f"data.validation_split={data.validation_split}: the data has no "
                f"validation split, so ft needs a fraction in (0, 1) of a train split "
                f"with at least 2 examples to hold out"
            )
        held = raw.splits["train"].train_test_split(
            test_size=data.validation_split, seed=data.shuffle_seed
        )
        raw.splits["train"], raw.splits["validation"] = held["train"], held["test"]
        raw.origins["validation"] = f"{raw.describe('train')} (held-out {data.validation_split:g})"
    caps = {
        "train": data.max_train_examples,
        "validation": data.max_eval_examples,
        "test": data.max_eval_examples,
    }
    for split, cap in caps.items():
        if cap is not None and split in raw.splits and len(raw.splits[split]) > cap:
            raw.splits[split] = raw.splits[split].select(range(cap))
    return raw


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
