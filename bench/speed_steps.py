"""One-off, load-robust measurement of the causal-LM means: the same batches of a recipe's real
data through the same model, one optimizer step (forward, backward, AdamW) per configuration in
turn, round after round, so that a busy machine slows every configuration alike.

    OMP_NUM_THREADS=1 python bench/speed_steps.py                 # SmolLM2-135M LoRA SFT
    OMP_NUM_THREADS=1 python bench/speed_steps.py --recipe sft_tiny_llama_lora --rounds 20
    OMP_NUM_THREADS=1 python bench/speed_steps.py --recipe seq_cls_minilm_lora --grouping

Prints real (non-padding) tokens per second of the training step for each configuration, the
median over rounds. --grouping compares batches of a plain seeded shuffle with those of
train.group_by_length (tasks that pad: here the batch differs, so it is tokens/s over the
same number of steps from each order). docs/speed.md records the numbers measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {  # name -> (packed, logits_only)
    "padded, full logits (before)": (False, False),
    "padded, logits_only": (False, True),
    "packed, full logits": (True, False),
    "packed + logits_only (default)": (True, True),
}


def main() -> None:
    import torch

    from framework.config.path import load_run
    from framework.core.plugins import load_all
    from framework.core.registry import HARDWARE, MODELS, PEFT_METHODS, TASKS
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.tasks import packing
    from framework.training.model import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="sft_smollm2_lora")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--grouping", action="store_true", help="shuffled vs length-grouped")
    args = parser.parse_args()
    load_all()
    run = load_run(args.recipe, [])
    family = MODELS.get(run.model.name)
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    tokenizer = load_tokenizer(run.plugins.family, run.model, checkpoint)
    task = TASKS.get(run.task.name)(run.task, run.data, tokenizer, family)
    from framework.data.loading import load_raw_splits

    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    train = task.tokenize({"train": raw.splits["train"]})["train"]
    if args.grouping:
        return grouping(args, run, task, train, checkpoint, family)
    examples = [train[i] for i in range(args.batch_size * args.rounds)]
    torch.manual_seed(0)
    model = build_model(
        run, checkpoint, task, HARDWARE.get("cpu"), PEFT_METHODS.get(run.peft.name), family
    )
    assert packing.packing_works(model, model.config.vocab_size)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True
    )
    model.train()
    times = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        features = examples[r * args.batch_size : (r + 1) * args.batch_size]
        for name, (packed, logits_only) in CONFIGS.items():
            task.packed, task.logits_only = packed, logits_only
            batch = task.collate(features)
            start = time.perf_counter()
            total, count = task.loss_terms(model, batch)
            (total / count).backward()
            optimizer.step()
            optimizer.zero_grad()
            times[name].append(time.perf_counter() - start)
    print(
        f"{args.recipe}: batch {args.batch_size}, {args.rounds} rounds, "
        f"{torch.get_num_threads()} thread(s); first round dropped (warm-up)\n"
    )
    print("| configuration | ms / step (median) | real tok/s | vs before |")
    print("|---|---|---|---|")
    base = None
    for name in CONFIGS:
        per_step = statistics.median(times[name][1:])
        rates = [
            sum(
                len(f["input_ids"])
                for f in examples[r * args.batch_size : (r + 1) * args.batch_size]
            )
            / t
            for r, t in enumerate(times[name])
            if r
        ]
        rate = statistics.median(rates)
        base = base or rate
        print(f"| {name} | {per_step * 1000:,.0f} | {rate:,.0f} | {rate / base:.2f}x |")


def grouping(args, run, task, train, checkpoint, family) -> None:
    """Step time and real tokens/s of batches from a plain shuffle vs length-grouped batches."""
    import torch

    from framework.core.registry import HARDWARE, PEFT_METHODS
    from framework.training.loaders import MEGABATCH, LengthGroupedSampler, example_lengths
    from framework.training.model import build_model

    size = run.train.batch_size
    lengths = example_lengths(train)
    orders = {
        "shuffled (before)": torch.randperm(
            len(lengths), generator=torch.Generator().manual_seed(0)
        ).tolist(),
        "group_by_length": list(LengthGroupedSampler(lengths, MEGABATCH * size, 0)),
    }
    torch.manual_seed(0)
    model = build_model(
        run, checkpoint, task, HARDWARE.get("cpu"), PEFT_METHODS.get(run.peft.name), family
    )
    model.train()
    # Batches spread over the epoch (grouped batches run from long to short in each group).
    stride = max(1, len(lengths) // size // args.rounds)
    spent = {name: [0.0, 0] for name in orders}  # seconds, real tokens
    for r in range(args.rounds):
        for name, order in orders.items():
            chosen = order[r * stride * size : (r * stride + 1) * size]
            batch = task.collate([train[i] for i in chosen])
            start = time.perf_counter()
            task.compute_loss(model, batch).backward()
            model.zero_grad()
            if r:  # the first round warms up
                spent[name][0] += time.perf_counter() - start
                spent[name][1] += sum(lengths[i] for i in chosen)
    print(
        f"{args.recipe}: batch {size}, {args.rounds} batches spread over the epoch, "
        f"{torch.get_num_threads()} thread(s)\n"
    )
    print("| batches | real tok/s (forward+backward) | vs before |\n|---|---|---|")
    base = spent["shuffled (before)"][1] / spent["shuffled (before)"][0]
    for name, (seconds, tokens) in spent.items():
        print(f"| {name} | {tokens / seconds:,.0f} | {tokens / seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
