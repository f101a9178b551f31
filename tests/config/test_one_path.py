"""The one config path: a recipe file is read once per command (Hydra composes it from memory),
whichever door the command came through, however many jobs it composes."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest
import yaml

from tests.helpers import toy_sentiment_files

RECIPE_BODY = {
    "defaults": [
        {"model": "tiny_bert"},
        {"peft": "lora"},
        {"task": "seq_cls"},
        {"hardware": "cpu"},
        {"data": "files"},
        {"train": "quick"},
        {"logger": "jsonl"},
        "_self_",
    ],
    "train": {"max_steps": 1, "log_every": 1},
    "data": {"max_length": 16},
}


@pytest.fixture
def counted_reads(monkeypatch):
    """Every open() of any file (builtins.open, io.open, Path.read_text/open), counted by path."""
    opened: list[str] = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened.append(os.path.realpath(os.fspath(file)))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    return opened


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    files = toy_sentiment_files(tmp_path / "data")
    body = dict(RECIPE_BODY)
    body["data"] = {
        **body["data"],
        "source": {"train": str(files["train"]), "validation": str(files["validation"])},
    }
    path = tmp_path / "recipes" / "read_once.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(
    "words",
    [
        ["validate"],
        ["train"],
        ["train", "-m", "train.lr=1e-3,2e-3"],  # Hydra's door: two trials, each composed again
    ],
    ids=["ft validate", "ft train", "ft train -m (two jobs)"],
)
def test_the_recipe_file_is_read_once(words, recipe, tmp_path, counted_reads, one_torch_thread):
    from framework.cli.app import main

    command, *flags = words
    argv = [command, str(recipe), *flags, f"output_root={tmp_path / 'out'}"]
    assert main(argv) == 0
    reads = counted_reads.count(os.path.realpath(recipe))
    assert reads == 1, f"{' '.join(words)} read {recipe.name} {reads} times"
    if command == "train":  # it did run: a summary per run or trial
        assert list((tmp_path / "out").rglob("summary.json"))
