"""A tokenization cache shared by every run on the machine (the trials of a sweep, restarts):
runs whose data, tokenizer and preprocessing are the same tokenize once.

The key is what identifies the inputs without reading them: each raw split's datasets
fingerprint (for a file, datasets derives it from the file's path and modification time when it
converts the file to Arrow, and every step after that, the held-out validation split and the
example caps included, derives its fingerprint from the one before; a hub dataset's from its
revision; an in-memory table's from its content), the tokenizer (its backend's full definition,
special tokens, chat template, padding/truncation sides), the task's and the data section's
settings, the label maps the task learnt, the model section (without secrets) and the source of
the task's code. A hit therefore costs the same for 10 rows or 10 million: no row is read or
hashed. A changed file has a new modification time, so a new fingerprint, so it misses; so does
a file merely touched. (A file rewritten with its old modification time restored is not seen,
by datasets' own Arrow cache either.) Where datasets cannot fingerprint a step (caching
disabled), the fingerprint is random and the cache misses, never serves stale data.

The entry is written with datasets' `save_to_disk` into a temporary directory that is renamed into
place (framework.core.cache.atomic_dir); the tokenizing pass writes its own Arrow files inside
that directory (nothing lands in datasets' cache), in data.num_proc processes. Both a new entry
and a hit are read back with `load_from_disk`: memory-mapped Arrow files, so memory does not grow
with the corpus, and nothing is unpickled. Remove CACHE_ROOT/tokenized (`~/.cache/ft/tokenized`)
to reclaim the space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
import sys
import types
from pathlib import Path
from typing import Any

from framework.core.cache import atomic_dir, cache_root

log = logging.getLogger("ft")

CACHE_DIR = "tokenized"  # under cache_root()
KEY_VERSION = 2  # bump when the key's recipe changes
WORK_DIR = ".pass"  # inside an entry being built: the tokenizing pass's own Arrow files
# Data settings that do not change the tokenized data: the source is identified by the splits'
# fingerprints; the number of tokenizing processes changes only how fast it is made.
NOT_IN_KEY = ("source", "name", "num_proc")


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def split_identity(dataset: Any) -> str:
    """A split's datasets fingerprint: its source's identity and every step that made it."""
    return str(dataset._fingerprint)


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer's whole definition: vocabulary, merges,
        definition: Any = backend.to_str()  # normalizer, pre-tokenizer, post-processor
    else:
        definition = (
            sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else []
        )
    identity = {
        "class": type(tokenizer).__name__,
        "definition": hashlib.sha256(json.dumps(definition, default=str).encode()).hexdigest(),
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


def _code_modules(task: Any) -> list[types.ModuleType]:
    """The modules of the task's class and its bases, and the modules of the same package that
    they use (tasks/chat.py for causal_lm): a change in tokenization code is a miss."""
    found: dict[str, types.ModuleType] = {}
    for cls in type(task).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or not getattr(module, "__file__", None):
            continue  # builtins (object) have no source file
        found[module.__name__] = module
        top = module.__name__.split(".")[0]
        for value in vars(module).values():
            used = value if isinstance(value, types.ModuleType) else inspect.getmodule(value)
            if used is not None and used.__name__.split(".")[0] == top:
                found.setdefault(used.__name__, used)
    return [found[name] for name in sorted(found)]


def _code_digest(task: Any) -> str:
    digest = hashlib.sha256()
    for module in _code_modules(task):
        try:
            digest.update(Path(inspect.getsourcefile(module) or "").read_bytes())
        except (TypeError, OSError):
            continue
    return digest.hexdigest()


def cache_key(run: Any, task: Any, tokenizer: Any, splits: dict[str, Any]) -> str:
    """The key of a run's tokenized splits (reads no row)."""
    import datasets

    # The task's data section: a source of a mix reads with its own columns (task.data).
    data = {k: v for k, v in _plain(task.data).items() if k not in NOT_IN_KEY}
    model = {k: v for k, v in _plain(run.model).items() if k != "token"}
    parts = {
        "version": KEY_VERSION,
        "datasets": datasets.__version__,
        "splits": {name: split_identity(ds) for name, ds in sorted(splits.items())},
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

    from framework.tasks.base import TokenizingPass

    key = cache_key(run, task, tokenizer, splits)
    target = cache_root() / CACHE_DIR / key
    built: list[bool] = []

    def build(tmp: Path) -> None:
        work = tmp / WORK_DIR
        work.mkdir()
        task.tokenizing = TokenizingPass(work, key)
        try:
            tokenized = task.tokenize(splits)
        finally:
            task.tokenizing = None
        DatasetDict(tokenized).save_to_disk(str(tmp))
        del tokenized  # the pass's files are only read through it
        shutil.rmtree(work)
        built.append(True)

    atomic_dir(target, build)
    if built:
        log.info(
            "tokenized %d examples (cached in %s)", sum(len(s) for s in splits.values()), target
        )
    else:
        log.info("tokenized 0 examples (cache hit: %s)", target)
    tokenized = dict(load_from_disk(str(target)))
    task.use_tokenized(tokenized)
    return tokenized
