"""A tokenization cache shared by every run on the machine (the trials of a sweep, restarts):
runs whose data, tokenizer and preprocessing are the same tokenize once.

The key is content, never a path or a time stamp: the rows of each raw split, the tokenizer
(class, vocabulary, special tokens, chat template, padding/truncation sides), the task's and the
data section's settings (without the data source, whose content is already hashed), the label
maps the task learnt, the model section (without secrets) and the source of the task's code. The
entry is written with datasets' `save_to_disk` into a temporary directory that is renamed into
place (framework.core.cache.atomic_dir), and read back with `load_from_disk` (Arrow files; nothing is
unpickled). Remove CACHE_ROOT/tokenized (`~/.cache/ft/tokenized`) to reclaim the space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from framework.core.cache import atomic_dir, cache_root

log = logging.getLogger("ft")

CACHE_DIR = "tokenized"  # under cache_root()
KEY_VERSION = 1  # bump when the key's recipe changes


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _split_digest(dataset: Any) -> str:
    """sha256 of a split's rows (Arrow IPC bytes of the selected rows, in order)."""
    import pyarrow as pa

    table = dataset.with_format("arrow")[:]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else []
    identity = {
        "class": type(tokenizer).__name__,
        "vocab": vocab,
        "special": {
            k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", {}) or {}).items()
        },
        "chat_template": getattr(tokenizer, "chat_template", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_max_length": str(getattr(tokenizer, "model_max_length", None)),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
    }
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()


def _code_digest(task: Any) -> str:
    """The source of the task's class and its bases: a change in tokenization code is a miss."""
    digest = hashlib.sha256()
    for cls in type(task).__mro__:
        try:
            digest.update(Path(inspect.getsourcefile(cls) or "").read_bytes())
        except (TypeError, OSError):  # builtins (object) have no source file
            continue
    return digest.hexdigest()


def cache_key(run: Any, task: Any, tokenizer: Any, splits: dict[str, Any]) -> str:
    """The content key of a run's tokenized splits."""
    import datasets

    # The task's data section: a source of a mix reads with its own columns (task.data).
    data = {k: v for k, v in _plain(task.data).items() if k not in ("source", "name")}
    model = {k: v for k, v in _plain(run.model).items() if k != "token"}
    parts = {
        "version": KEY_VERSION,
        "datasets": datasets.__version__,
        "splits": {name: _split_digest(ds) for name, ds in sorted(splits.items())},
        "tokenizer": _tokenizer_digest(tokenizer),
        "task": _plain(run.task),
        "data": data,
        "model": model,
        "task_class": type(task).__name__,
        "artifacts": task.artifacts(),
        "task_state": {k: getattr(task, k) for k in ("format",) if hasattr(task, k)},
        "code": _code_digest(task),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tokenize_cached(run: Any, task: Any, tokenizer: Any, splits: dict[str, Any]) -> dict[str, Any]:
    """The task's tokenized splits, from the cache when an earlier run made them; logs how many
    examples this run tokenized ("tokenized N examples" or "tokenized 0 examples (cache hit)")."""
    from datasets import DatasetDict, load_from_disk

    target = cache_root() / CACHE_DIR / cache_key(run, task, tokenizer, splits)
    built: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        built.update(task.tokenize(splits))
        DatasetDict(built).save_to_disk(str(tmp))

    atomic_dir(target, build)
    if built:
        log.info(
            "tokenized %d examples (cached in %s)", sum(len(s) for s in splits.values()), target
        )
        tokenized = built
    else:
        log.info("tokenized 0 examples (cache hit: %s)", target)
        tokenized = dict(load_from_disk(str(target)))
    task.use_tokenized(tokenized)
    return tokenized
