"""Shared test helpers: run the CLI as a user would, train a recipe in-process, read metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    threads' spin-waits made each case ~50x slower (measured: 49 s -> 1 s for one case)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

REPO = Path(__file__).resolve().parents[1]


def ft_cli(*args: str, cwd: Path = REPO, timeout: int = 600, env: Dict[str, str] = None):
    """Run `python -m framework ARGS` in a subprocess; return CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "framework", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def train_recipe(recipe: str, *overrides: str, output_root: Path) -> Path:
    """Compose, validate and train in this process; return the run directory."""
    from framework.session import compose_and_validate, execute

    composed, run = compose_and_validate(recipe, [f"output_root={output_root}", *overrides])
    return execute(composed, run).run_dir


def metrics(run_dir: Path, split: str = None) -> List[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if split is None or r.get("split") == split]


def train_losses(run_dir: Path) -> List[float]:
    return [r["loss"] for r in metrics(run_dir, "train")]


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_sentiment_rows(n: int, seed: int = 0) -> List[dict]:
    """Short texts whose label is decided by one word: a tiny model learns it in a few dozen steps."""
    import random

    rng = random.Random(seed)
    good = ["great", "wonderful", "beautiful", "funny", "fresh", "moving"]
    bad = ["terrible", "dull", "weak", "rotten", "boring", "long"]
    fillers = ["the film was", "this movie is", "the story felt", "I think it was", "the cast was"]
    rows = []
    for _ in range(n):
        label = rng.random() < 0.5
        word = rng.choice(good if label else bad)
        rows.append({"text": f"{rng.choice(fillers)} {word}", "label": "pos" if label else "neg"})
    return rows


def toy_sentiment_files(folder: Path, train: int = 32, validation: int = 8) -> Dict[str, Path]:
    """train.jsonl and val.jsonl of toy sentiment rows in `folder` (seeds 0 and 1)."""
    return {"train": write_jsonl(folder / "train.jsonl", toy_sentiment_rows(train, 0)),
            "validation": write_jsonl(folder / "val.jsonl", toy_sentiment_rows(validation, 1))}


@pytest.fixture
def toy_cls_files(tmp_path: Path) -> Dict[str, Path]:
    return toy_sentiment_files(tmp_path / "data", 256, 64)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where CUDA is available and are skipped, saying why, elsewhere."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


# Nothing in the tests may come from a model hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# transformers binds its log handler to the sys.stderr of the moment it is first used; make that
# the session-wide stream now, not the per-test capture of whichever test came first.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.get_logger("transformers")

