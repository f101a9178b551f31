"""The reliability holes a new user found (issue 13): cold-cache reproducibility, resume from the
run's saved config, corrupt checkpoints, secrets in every file ft or Hydra writes, a checkpoint
that cannot be silently ignored, clear messages and quiet logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, ft_cli, train_recipe, toy_sentiment_rows, write_jsonl

RECIPE = "seq_cls_tiny_bert_lora"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("holes-data")
    return {"train": write_jsonl(tmp / "train.jsonl", toy_sentiment_rows(32, 0)),
            "validation": write_jsonl(tmp / "val.jsonl", toy_sentiment_rows(8, 1))}


def data_overrides(files, *extra: str):
    return ["data=files", f"+data.source.train={files['train']}",
            f"data.source.validation={files['validation']}", "data.max_length=16",
            "train.log_every=1", "train.lr=3e-3", "peft.dropout=0.1", *extra]


def adapter(run_dir: Path):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path):
    ta, tb = adapter(a), adapter(b)
    assert ta.keys() == tb.keys()
    differing = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)}/{len(ta)} adapter tensors differ: {differing[:3]}"


# ---- reproducibility ------------------------------------------------------------------------
def test_cold_cache_run_equals_warm_cache_run(files, tmp_path, monkeypatch, one_torch_thread):
    """The first run on a machine builds the tiny model (drawing random numbers); it must train
    exactly like every later run that finds the model cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    cold = train_recipe(RECIPE, *data_overrides(files, "train.max_steps=2"), output_root=tmp_path)
    assert list((tmp_path / "empty-cache" / "ft" / "tiny").iterdir()), "the cache was not cold"
    warm = train_recipe(RECIPE, *data_overrides(files, "train.max_steps=2"), output_root=tmp_path)
    assert_same_adapter(cold, warm)
