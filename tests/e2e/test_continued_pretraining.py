"""Continued pretraining on a real small model: SmolLM2-135M (from its PyPI GGUF file) + LoRA on
raw text cut into blocks (recipe cpt_smollm2_lora); its held-out perplexity falls."""

from __future__ import annotations

import json

import pytest

from tests.helpers import metrics, train_recipe

BLOCK = 32  # tokens per block (the recipe's 128, cut to keep the test short)
BATCH = 4  # blocks per step


@pytest.mark.slow
def test_real_smollm2_held_out_perplexity_falls_on_the_corpus(tmp_path, one_torch_thread):
    # 4 steps of 4 blocks of 32 tokens (512 tokens) of Rotten Tomatoes review text: 40 s in
    # pytest, 24 s of CPU, on 2 shared cores (most of it loading the model and two evaluations).
    # The held-out perplexity is over the ~13 blocks cut from 16 reviews the model does not
    # train on, every token of each block scored.
    run_dir = train_recipe(
        "cpt_smollm2_lora",
        "train.max_steps=4",
        f"train.batch_size={BATCH}",
        f"data.block_size={BLOCK}",
        "train.lr=2e-3",
        "train.log_every=1",
        "data.max_train_examples=200",
        "data.max_eval_examples=16",
        output_root=tmp_path / "out",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    baseline, final = summary["baseline"], summary["final"]
    print(f"held-out perplexity {baseline['perplexity']:.2f} -> {final['perplexity']:.2f}")
    assert final["perplexity"] < 0.8 * baseline["perplexity"], summary  # measured 269.9 -> 128.0
    assert final["test_perplexity"] < 0.8 * baseline["test_perplexity"], summary
    log = (run_dir / "train.log").read_text()
    line = next(x for x in log.splitlines() if "data: train: " in x)
    # Every block is BLOCK tokens (blocks x BLOCK tokens per split), and each step trains on all
    # of its BATCH blocks' tokens: whole blocks only, loss on every token.
    for split in ("train", "validation", "test"):
        part = line.split(f"{split}: ", 1)[1].split(";")[0]
        examples, tokens = (int(part.split(" ")[i].rstrip(",")) for i in (0, 2))
        assert examples and tokens == examples * BLOCK, line
    steps = metrics(run_dir, "train")
    assert len(steps) == 4 and all(r["tokens"] == BATCH * BLOCK for r in steps), steps
