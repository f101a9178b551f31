"""bench/gpu.sh: issue 14's GPU workload, HF Trainer + PEFT and then ft, on one card.

Workload: a 1.1B Llama-shape model (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocab
32000), random init, bf16, SDPA attention; LoRA r16 alpha 32 (dropout 0) on q/k/v/o/gate/up/down;
micro-batches of 8 rows of random token ids with lengths uniform in [128, 1024]; AdamW lr 2e-4
(linear decay, no warm-up, in both routes); plain causal-LM loss on every real token.

    bench/gpu.sh                 # the real workload (needs a CUDA GPU; ~3 min on an H100/H200)
    bench/gpu.sh --steps 50      # more timed steps
    bench/gpu.sh --smoke         # both routes on a tiny model on CPU, a few steps (make test)

Measured per route: real tokens/s over the steps after the warm-up ones (tokens of those steps'
batches, attention-masked, / their seconds), peak GiB (torch.cuda.max_memory_allocated of the
route's process), MFU = 4 * N * tokens/s / peak FLOP/s of the card. 4*N, not the usual 6*N: with
LoRA the frozen base needs no weight gradients, so a token costs ~2N FLOPs forward + ~2N for the
input gradients backward (N = all base parameters, embeddings included; attention's own
FLOPs and the adapters' are left out). The peak is the card's dense bf16 datasheet number
(--peak-tflops overrides it).

Routes:
  hf  in this process: AutoModelForCausalLM + get_peft_model + Trainer(bf16=True) with
      DataCollatorForLanguageModeling(mlm=False): padding per batch, as the docs write it.
  ft  a child process: `ft train bench/gpu_llama.yaml model.checkpoint=... ...` through ft's
      CLI entry point (in that process, so that its peak memory can be read).
Both read the same rows: JSON Lines of words "w<id>" that the saved word-level tokenizer maps
one-to-one to token ids (ft appends eos, and so do the HF rows).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECIPE = REPO / "bench" / "gpu_llama.yaml"

FULL = {
    "hidden_size": 2048,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "intermediate_size": 5632,
    "vocab_size": 32000,
    "min_len": 128,
    "max_len": 1024,
    "batch": 8,
}
SMOKE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "min_len": 16,
    "max_len": 64,
    "batch": 4,
}
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0..3; words w4 .. w<vocab-1> follow
# Dense bf16 datasheet peaks, FLOP/s (NVIDIA: H100/H200 SXM 989.4 TFLOP/s without sparsity).
PEAK_BF16 = {
    "H200": 989.4e12,
    "H100": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165.2e12,
}


# ---- the workload's files -------------------------------------------------------------------
def build(work: Path, shape: dict[str, int], rows: int, device: str) -> int:
    """Save the random-init model (bf16 on GPU, fp32 on CPU), its word-level tokenizer, and the
    train/validation rows; return the model's parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), shape["vocab_size"])})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    model_dir = work / "model"
    tokenizer.save_pretrained(str(model_dir))
    config = LlamaConfig(
        **{k: v for k, v in shape.items() if k in LlamaConfig().to_dict()},
        max_position_embeddings=max(2048, shape["max_len"]),
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(str(model_dir))
    params = sum(p.numel() for p in model.parameters())
    del model
    rng = random.Random(0)

    def write(path: Path, count: int) -> None:
        with path.open("w") as handle:
            for _ in range(count):
                words = rng.randint(shape["min_len"], shape["max_len"]) - 1  # + eos
                ids = [rng.randrange(len(SPECIALS), shape["vocab_size"]) for _ in range(words)]
                handle.write(
                    json.dumps({"text": " ".join(f"w{i}" for i in ids), "input_ids": ids + [2]})
                    + "\n"
                )

    write(work / "train.jsonl", rows)
    write(work / "validation.jsonl", 8)
    return params


# ---- HF Trainer + PEFT ------------------------------------------------------------------------
def run_hf(work: Path, shape: dict[str, int], steps: int, warmup: int, device: str) -> dict:
    """HF Trainer + PEFT as documented; tokens/s over the steps after `warmup`."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    cuda = device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(str(work / "model"))
    model = AutoModelForCausalLM.from_pretrained(
        str(work / "model"),
        dtype=torch.bfloat16 if cuda else torch.float32,
        attn_implementation="sdpa",
    )
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        ),
    )
    dataset = load_dataset("json", data_files=str(work / "train.jsonl"), split="train")
    dataset = dataset.remove_columns("text")
    documented = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    counts: list[int] = []  # real tokens of each batch, in the order the loop consumes them

    def collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = documented(features)
        counts.append(int(batch["attention_mask"].sum()))
        return batch

    class Clock(TrainerCallback):
        """Times steps warmup+1 .. last (the device is synchronised at both ends)."""

        start = end = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                sync(cuda)
                self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            sync(cuda)
            self.end = time.perf_counter()

    clock = Clock()
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=shape["batch"],
        max_steps=warmup + steps,
        learning_rate=2e-4,
        bf16=cuda,
        use_cpu=not cuda,
        logging_steps=warmup,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[clock]
    )
    trainer.train()
    tokens = sum(counts[warmup : warmup + steps])
    result = {
        "tokens": tokens,
        "seconds": clock.end - clock.start,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_at_end": next(
            (r["loss"] for r in reversed(trainer.state.log_history) if "loss" in r), None
        ),
    }
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return result


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


# ---- ft ---------------------------------------------------------------------------------------
def ft_overrides(work: Path, steps: int, warmup: int, smoke: bool) -> list[str]:
    shape = SMOKE if smoke else FULL
    overrides = [
        f"model.checkpoint={work / 'model'}",
        f"data.source.train={work / 'train.jsonl'}",
        f"data.source.validation={work / 'validation.jsonl'}",
        f"data.max_length={shape['max_len']}",
        f"train.batch_size={shape['batch']}",
        f"train.max_steps={warmup + steps}",
        f"train.log_every={warmup}",
        f"run_dir={work / 'ft'}",
        "overwrite=true",
    ]
    return overrides + (["hardware=cpu"] if smoke else [])


def run_ft_here(work: Path, steps: int, warmup: int, smoke: bool, extra: list[str]) -> int:
    """The ft route, in this (child) process: ft's CLI entry point, then its train records."""
    from framework.cli.app import main as ft_main

    code = ft_main(["train", str(RECIPE), *ft_overrides(work, steps, warmup, smoke), *extra])
    if code != 0:
        return code
    import torch

    records = [
        json.loads(line) for line in (work / "ft" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r.get("split") == "train"]
    timed = train[1:]  # the first record covers the warm-up steps (log_every = warmup)
    result = {
        "tokens": sum(r["tokens"] for r in timed),
        "seconds": sum(r["seconds"] for r in timed),
        "peak_gib": (
            torch.cuda.max_memory_allocated() / 2**30
            if torch.cuda.is_available() and not smoke
            else None
        ),
        "loss_at_end": train[-1]["loss"],
    }
    (work / "ft_result.json").write_text(json.dumps(result))
    return 0


def run_ft(work: Path, steps: int, warmup: int, smoke: bool, extra: list[str]) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--ft-child",
        str(work),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        *(["--smoke"] if smoke else []),
        *[f"--ft-override={o}" for o in extra],
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if smoke:  # one thread, as the HF route in the parent process (see main)
        env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"ft route failed (exit {done.returncode}):\n{tail}")
    return json.loads((work / "ft_result.json").read_text())


# ---- report -------------------------------------------------------------------------------------
def card() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"name": "CPU", "peak_flops": None}
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"name": name, "peak_flops": peak}


def report(results: dict[str, dict], params: int, info: dict[str, Any]) -> str:
    lines = [
        "| route | card | tok/s | peak GiB | MFU (4N) | loss, last log interval |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for route, label in (("hf", "HF Trainer + PEFT, padding per batch"), ("ft", "ft train")):
        r = results[route]
        r["tokens_per_s"] = r["tokens"] / max(r["seconds"], 1e-9)
        r["mfu"] = (
            4 * params * r["tokens_per_s"] / info["peak_flops"] if info["peak_flops"] else None
        )
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {label} | {info['name']} | {r['tokens_per_s']:,.0f} | {peak} | {mfu} | "
            f"{r['loss_at_end']:.4f} |"
        )
    ratio = results["ft"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    lines.append(
        f"\nratio ft / HF: {ratio:.2f}x; model {params / 1e9:.3f}B parameters; "
        f"MFU = 4 * N * tok/s / {info['peak_flops'] / 1e12 if info['peak_flops'] else '?'} "
        f"TFLOP/s (dense bf16 datasheet peak)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, a few steps")
    parser.add_argument(
        "--steps", type=int, help="timed steps after the warm-up (default 30; smoke 2)"
    )
    parser.add_argument("--warmup", type=int, help="warm-up steps left out (default 5; smoke 1)")
    parser.add_argument("--peak-tflops", type=float, help="the card's peak bf16 TFLOP/s for MFU")
    parser.add_argument(
        "--out", type=Path, help="JSON result (default outputs/bench/gpu_bench.json)"
    )
    parser.add_argument(
        "--ft-override",
        action="append",
        default=[],
        help="extra ft override (repeatable), e.g. to switch a speed option off",
    )
    parser.add_argument("--keep", type=Path, help="build and run in this directory, kept")
    parser.add_argument("--ft-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.smoke else 30)
    warmup = args.warmup or (1 if args.smoke else 5)
    if args.ft_child:
        return run_ft_here(args.ft_child, steps, warmup, args.smoke, args.ft_override)

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU visible; bench/gpu.sh needs one (bench/gpu.sh --smoke runs "
            "both routes on a tiny model on CPU)",
            file=sys.stderr,
        )
        return 1
    if args.smoke:
        torch.set_num_threads(1)  # a tiny model gains nothing from threads (tests/conftest.py)
    device = "cpu" if args.smoke else "cuda"
    shape = SMOKE if args.smoke else FULL
    info = card() if not args.smoke else {"name": "CPU (smoke)", "peak_flops": None}
    if args.peak_tflops:
        info["peak_flops"] = args.peak_tflops * 1e12
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ft-gpu-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        params = build(work, shape, shape["batch"] * (warmup + steps) * 2, device)
        print(
            f"{info['name']}: {params / 1e9:.3f}B-parameter model built in "
            f"{time.perf_counter() - begin:.0f}s; {warmup} warm-up + {steps} timed steps per route",
            flush=True,
        )
        results = {"hf": run_hf(work, shape, steps, warmup, device)}
        print(f"HF Trainer + PEFT done ({time.perf_counter() - begin:.0f}s)", flush=True)
        results["ft"] = run_ft(work, steps, warmup, args.smoke, args.ft_override)
    table = report(results, params, info)
    print(table)
    print(f"total {time.perf_counter() - begin:.0f}s")
    out = args.out or REPO / "outputs" / "bench" / (
        "gpu_smoke.json" if args.smoke else "gpu_bench.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "card": info,
                "params": params,
                "steps": steps,
                "warmup": warmup,
                "smoke": args.smoke,
                "results": results,
                "table": table,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
