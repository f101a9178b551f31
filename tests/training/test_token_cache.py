"""The token cache pays its cost once (issue 20, "Cost paid once"): a hit reads and hashes no
row, a changed file still misses, tokenizing in data.num_proc processes gives the same tokens,
and tokenized data is memory-mapped Arrow in the cache entry (nothing lands in datasets' cache).
The data-scale numbers (10k to 1M rows) are bench/data_scale.py's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from framework.training import token_cache
from tests.helpers import TOY_CLS_RECIPE, toy_cls_overrides, toy_sentiment_rows, write_jsonl


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A token cache of this test's own (tiny models stay in the machine's cache)."""
    root = tmp_path / "cache"
    monkeypatch.setattr(token_cache, "cache_root", lambda: root)
    return root / token_cache.CACHE_DIR


def prepared(files: dict[str, Path], *extra: str, recipe: str = TOY_CLS_RECIPE) -> tuple:
    """(run, task, tokenizer, raw splits) as the trainer's load_data has them before tokenizing."""
    from framework.config.path import load_run
    from framework.data.loading import load_raw_splits
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    overrides = toy_cls_overrides(files, *extra) if recipe == TOY_CLS_RECIPE else list(extra)
    run = load_run(recipe, overrides)
    family = run.plugins.family
    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    task = run.plugins.task_class(run.task, run.data, tokenizer, family)
    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    return run, task, tokenizer, raw.splits


def rows_of(tokenized: dict[str, Any]) -> dict[str, list[dict]]:
    return {split: ds.to_list() for split, ds in tokenized.items()}


def counting(task: Any) -> list[int]:
    """Count the task's tokenizing passes."""
    calls: list[int] = []
    real = task.tokenize
    task.tokenize = lambda splits: calls.append(1) or real(splits)
    return calls


def test_a_hit_reads_no_row(tmp_path, cache_dir, monkeypatch) -> None:
    import datasets

    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", toy_sentiment_rows(64)),
        "validation": write_jsonl(tmp_path / "val.jsonl", toy_sentiment_rows(16, 1)),
    }
    run, task, tokenizer, splits = prepared(files)
    calls = counting(task)
    cold = token_cache.tokenize_cached(run, task, tokenizer, splits)
    assert calls == [1]
    run, task, tokenizer, splits = prepared(files)  # a new run: the same inputs
    calls = counting(task)

    raw = {id(split) for split in splits.values()}

    def guarded(name: str) -> Any:
        real = getattr(datasets.Dataset, name)
        if isinstance(real, property):
            return property(lambda self: refuse(self, name) or real.fget(self))
        return lambda self, *a, **k: refuse(self, name) or real(self, *a, **k)

    def refuse(dataset: Any, name: str) -> None:
        if id(dataset) in raw:
            raise AssertionError(f"the cache hit read the raw rows ({name})")

    readers = ("__getitem__", "_getitem", "__iter__", "iter", "with_format", "to_pandas")
    with monkeypatch.context() as patched:
        for name in (*readers, "to_list", "to_dict", "map", "filter", "data", "flatten_indices"):
            patched.setattr(datasets.Dataset, name, guarded(name))
        warm = token_cache.tokenize_cached(run, task, tokenizer, splits)
    assert calls == [] and rows_of(warm) == rows_of(cold)


def test_a_changed_file_misses(tmp_path, cache_dir) -> None:
    rows = toy_sentiment_rows(64)
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "validation": write_jsonl(tmp_path / "val.jsonl", toy_sentiment_rows(16, 1)),
    }
    first = token_cache.tokenize_cached(*prepared(files))
    # one word changed in one row, same number of rows and bytes
    changed = [dict(r) for r in rows]
    changed[0]["text"] = changed[0]["text"][:-1] + ("x" if changed[0]["text"][-1] != "x" else "y")
    write_jsonl(files["train"], changed)
    run, task, tokenizer, splits = prepared(files)
    calls = counting(task)
    second = token_cache.tokenize_cached(run, task, tokenizer, splits)
    assert calls == [1], "a changed file was served from the cache"
    assert rows_of(second) != rows_of(first)
    # what the miss made is the fresh tokenization of the new file
    run, task, tokenizer, splits = prepared(files)
    assert rows_of(second) == rows_of(task.tokenize(splits))
    assert len(list(cache_dir.iterdir())) == 2


def test_tokenized_data_is_memory_mapped_from_the_entry(tmp_path, cache_dir) -> None:
    """Both a new entry and a hit read the entry's Arrow files; the tokenizing pass's own files
    were inside the entry being built and are gone; datasets' cache of the raw file got none."""
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", toy_sentiment_rows(64)),
        "validation": write_jsonl(tmp_path / "val.jsonl", toy_sentiment_rows(16, 1)),
    }
    run, task, tokenizer, splits = prepared(files)
    raw_dir = Path(splits["train"].cache_files[0]["filename"]).parent
    before = sorted(p.name for p in raw_dir.iterdir())
    for _ in range(2):
        tokenized = token_cache.tokenize_cached(*prepared(files))
        (entry,) = list(cache_dir.iterdir())
        for split in tokenized.values():
            assert split.cache_files and all(
                Path(f["filename"]).is_relative_to(entry) for f in split.cache_files
            )
        assert not (entry / token_cache.WORK_DIR).exists()
    assert sorted(p.name for p in raw_dir.iterdir()) == before


@pytest.mark.parametrize("recipe", [TOY_CLS_RECIPE, "sft_tiny_llama_lora"])
def test_processes_give_the_same_tokens(recipe, tmp_path, cache_dir) -> None:
    """data.num_proc=2 forks two workers (train splits of 10,000 and 10,080 rows: 5,000 or more
    each) and gives exactly the rows of one process, in order; the number is not in the key."""
    from framework.tasks.base import TokenizingPass

    if recipe == TOY_CLS_RECIPE:
        train = write_jsonl(tmp_path / "train.jsonl", toy_sentiment_rows(10_000))
        files = {
            "train": train,
            "validation": write_jsonl(tmp_path / "v.jsonl", toy_sentiment_rows(8)),
        }
        extra: tuple[str, ...] = ()
    else:
        rows = [
            {"prompt": f"What is {i} and {i}?", "completion": f"{2 * i}."} for i in range(11_200)
        ]
        files = {}
        extra = ("data=files", f"+data.source.train={write_jsonl(tmp_path / 't.jsonl', rows)}")
    results, keys = [], []
    for num_proc in (1, 2):
        settings = (*extra, "data.max_train_examples=null", f"data.num_proc={num_proc}")
        run, task, tokenizer, splits = prepared(files, *settings, recipe=recipe)
        work = tmp_path / f"pass-{num_proc}"
        work.mkdir()
        task.tokenizing = TokenizingPass(work, f"k{num_proc}")
        results.append(rows_of(task.tokenize(splits)))
        shards = sorted(p.name for p in work.glob("train-encode*.arrow"))
        assert len(shards) == num_proc, shards
        keys.append(token_cache.cache_key(run, task, tokenizer, splits))
    assert results[0] == results[1] and len(results[0]["train"]) >= 9_000
    assert keys[0] == keys[1]


def test_labels_are_found_and_checked_by_arrow(tmp_path) -> None:
    """seq_cls's label set comes from the column's distinct values; a label outside the set
    still names its split and row."""
    from framework.core.errors import UserError

    rows = toy_sentiment_rows(32)
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "validation": write_jsonl(
            tmp_path / "val.jsonl", [*rows[:3], {"text": "x", "label": "meh"}]
        ),
    }
    with pytest.raises(
        UserError, match=r"label 'meh' in split 'validation' row 3 .*\['neg', 'pos'\]"
    ):
        prepared(files)
    write_jsonl(files["validation"], rows[:4])
    _, task, _, _ = prepared(files)
    assert task.labels == ["neg", "pos"]
    assert json.loads(json.dumps(task.artifacts()))["labels"] == ["neg", "pos"]
