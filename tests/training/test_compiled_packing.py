"""train.compile keeps per-example attention on packed rows: compiled and eager give the same
per-token losses and LoRA gradients (tiny Llama, fp32), rows padded to shape buckets add nothing
to the loss, and torch.compile builds graphs at most once per shape bucket; token-budget
micro-batches (train.tokens_per_batch) are seeded, within the budget and resume-exact."""

from __future__ import annotations

import json

import pytest
import torch

from framework.tasks import packing
from framework.tasks.chat import IGNORE_INDEX
from framework.training import packed_attention
from framework.training.loaders import TokenBudgetBatches
from tests.helpers import tiny_llama_lora, train_recipe

VOCAB = 96
BUCKET = 32  # rows padded up to a multiple of this many tokens


def tiny_llama():
    model = tiny_llama_lora(VOCAB, ("q_proj", "v_proj"))
    assert packed_attention.install(model)
    return model


def features(lengths: list[int], seed: int) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]})
    return rows


def token_losses(model, batch) -> torch.Tensor:
    """Every label token's loss, and nothing for padding (labels -100 there)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", packing.REAL_TOKENS_KEY)}
    logits = model(**inputs, use_cache=False).logits[0, :-1]
    targets = batch["labels"][0, 1:]
    kept = targets != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[kept].float(), targets[kept], reduction="none")


@pytest.mark.slow
def test_compiled_packed_rows_give_the_eager_per_token_losses_and_compile_once_per_bucket(
    one_torch_thread,
):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = tiny_llama()
    compiled = torch.compile(model, backend="aot_eager")  # traces as inductor would, no C++
    # Rows of 2-5 examples; 32 and 96 tokens after padding (two buckets), the second bucket
    # seen twice more with other example counts, then the first again.
    rows = [[9, 4, 13, 6], [30, 21, 17], [22, 40, 11, 8, 5], [50, 31], [7, 12, 10]]
    graphs: list[int] = []
    buckets: list[int] = []
    for seed, lengths in enumerate(rows):
        group = features(lengths, seed)
        real = sum(lengths)
        padded = packing.pack(group, with_offsets=True, pad_to=-(-real // BUCKET) * BUCKET)
        eager = packing.pack(group, with_lengths=True)
        buckets.append(padded["input_ids"].shape[1])
        assert padded[packing.REAL_TOKENS_KEY] == real
        model.zero_grad()
        expected = token_losses(model, eager)
        expected.sum().backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        got = token_losses(compiled, padded)
        got.sum().backward()
        graphs.append(int(counters["stats"]["unique_graphs"]))
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
        for name, grad in want.items():
            assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-5)
    assert buckets == [32, 96, 96, 96, 32]
    grew = [i for i in range(len(rows)) if graphs[i] > (graphs[i - 1] if i else 0)]
    print(f"graphs after each row: {graphs}; rows that built graphs: {grew}")
    # Graphs are built for a bucket's first row only (at most one recompile per bucket): never
    # again for new example counts or lengths within a bucket, nor for a bucket seen before.
    first_of_bucket = [buckets.index(b) for b in dict.fromkeys(buckets)]
    assert grew and set(grew) <= set(first_of_bucket)


def test_token_budget_batches_are_seeded_within_budget_and_cover_the_epoch():
    lengths = [
        int(n) for n in torch.randint(5, 60, (200,), generator=torch.Generator().manual_seed(1))
    ]
    sampler = TokenBudgetBatches(lengths, 256, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 256 for b in batches)
    # Greedy: a batch ends only where the next example would not fit.
    order = [i for b in batches for i in b]
    for batch, following in zip(batches, batches[1:]):
        assert sum(lengths[i] for i in batch) + lengths[following[0]] > 256
    assert len(sampler) == len(batches) and order == [i for b in sampler for i in b]
    sampler.set_epoch(1)
    assert [i for b in sampler for i in b] != order  # another epoch, another order
    sampler.set_epoch(0)
    assert list(sampler) == batches  # a function of (seed, epoch): resume sees the same


@pytest.mark.slow
def test_compiled_run_with_a_token_budget_logs_its_graphs(tmp_path, one_torch_thread):
    """ft train with train.compile (aot_eager) and train.tokens_per_batch: the start-up log names
    the attention, every train record carries the compile counts, rows stay within the budget,
    and the real tokens (not the padding) are counted."""
    run_dir = train_recipe(
        "sft_tiny_llama_lora",
        "train.max_steps=3",
        "train.log_every=1",
        "train.compile=true",
        "train.compile_backend=aot_eager",
        "train.tokens_per_batch=384",
        "data.max_length=96",
        "data.max_train_examples=64",
        "data.max_eval_examples=8",
        output_root=tmp_path,
    )
    log = (run_dir / "train.log").read_text()
    assert "attention=sdpa per example, between the compiled graphs" in log
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert len(train) == 3
    assert all(0 < r["tokens"] <= 384 and r["compiled_graphs"] > 0 for r in train)
    assert train[-1]["compiled_graphs"] >= train[0]["compiled_graphs"]
