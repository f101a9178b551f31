"""`make bench` feeds every peer ft's own order (bench/cpu_bench.ft_order): the batches the
exported order makes are the batches ft's trainer draws, with and without length grouping, for a
task that pads and for one that packs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("seq_cls_tiny_bert_lora", ["train.group_by_length=true"]),
        ("seq_cls_tiny_bert_lora", ["train.group_by_length=false"]),
        ("sft_tiny_llama_lora", []),
    ],
)
def test_exported_order_makes_the_trainers_batches(recipe, overrides, tmp_path, one_torch_thread):
    sys.path.insert(0, str(REPO / "bench"))
    from cpu_bench import ft_order

    from framework.config.path import load_run
    from framework.training.trainer import set_up

    run = load_run(
        recipe, [*overrides, "data.max_train_examples=40", "train.batch_size=4", "seed=7"]
    )
    setup = set_up(run, tmp_path / "run")
    setup.train_loader.set_epoch(0)
    drawn = list(setup.train_loader)
    dataset = setup.train_loader.dataset
    order = ft_order(run, dataset, run.train.group_by_length)
    assert sorted(order) == list(range(len(dataset)))  # every example once
    assert order != list(range(len(dataset)))  # shuffled
    size = run.train.batch_size
    made = [
        setup.task.collate([dataset[i] for i in order[k : k + size]])
        for k in range(0, len(order), size)
    ]
    assert len(made) == len(drawn) == -(-len(dataset) // size) >= 9
    for ours, theirs in zip(made, drawn):
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["labels"], theirs["labels"])
