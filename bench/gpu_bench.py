"""bench/gpu.sh: issue 21's GPU workload against the strongest peers, then the GPU checks that had
never run, on one card, one table out. Runs with the image's own python3 on a bare GPU machine
with no network (bench/gpu_wheels.sh carries the missing packages as wheels, gpu.sh installs
them); `--smoke` runs the same script on a tiny model on CPU (make test).

Workload: a 1.1B Llama-shape model (hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632,
vocab 32000), random init, bf16, SDPA; LoRA r16 alpha 32 (dropout 0) on q/k/v/o/gate/up/down;
micro-batches of 8 rows of random token ids with lengths uniform in [128, 1024], the same rows in
the same order for every route; AdamW lr 2e-4 (linear decay, no warm-up); causal-LM loss on
every real token; real tokens/s over the steps after the warm-up ones.

Routes (each in its own process, so that its peak memory is its own):
  hf_plain      HF Trainer + PEFT, DataCollatorForLanguageModeling: padding per batch (the docs)
  trl           TRL SFTTrainer, padding_free=True (its fused LM head), NaN filter off
  trl_liger     the same with use_liger_kernel=True (where liger-kernel imports)
  ft            ft train bench/gpu_llama.yaml (ft's defaults: packing, per-example attention,
                fused loss)
  ft_compiled   + train.compile=true (flex attention on CUDA, rows in <= 8 shape buckets)
Checks (ft train of a few steps on the same model, each its own process; PASS = exit 0, finite
losses and what the check is about shows in the log):
  qlora         peft=qlora: the base in 4-bit (bitsandbytes)
  bf16          hardware.precision=bf16: bf16 mixed precision used
  device_map    hardware=device_map with a GPU budget of half the weights: layers on CPU too
  zero3_offload hardware=zero3_offload on one process (DeepSpeed ZeRO-3, CPU offload)
  fsdp2         hardware=fsdp on one process (FSDP2)
Under --smoke (CPU) the checks that need CUDA are composed and validated only (ft's dry run),
and the table says so.

    bench/gpu.sh                 # the real workload (needs a CUDA GPU; ~6-8 min on an H100)
    bench/gpu.sh --smoke         # tiny model on CPU, a few steps (make test)
    bench/gpu.sh --only ft trl   # some routes / checks

Measured per route: real tokens/s after the warm-up steps, peak GiB
(torch.cuda.max_memory_allocated of the route's process), MFU = 4 * N * tokens/s / the card's
dense bf16 peak (4N: LoRA leaves the base frozen, so ~2N forward + ~2N input gradients, no weight
gradients; N = all base parameters; attention's own FLOPs left out); the loss of the last steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
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
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Dense bf16 datasheet peaks, FLOP/s (NVIDIA: H100/H200 SXM 989.4 TFLOP/s without sparsity).
PEAK_BF16 = {
    "H200": 989.4e12,
    "H100": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "A10G": 70e12,
    "L4": 121e12,
}
ROUTES = {
    "hf_plain": "HF Trainer + PEFT, padding per batch (DataCollatorForLanguageModeling)",
    "trl": "TRL SFTTrainer, padding_free=True",
    "trl_liger": "TRL SFTTrainer, padding_free=True, use_liger_kernel=True",
    "ft": "ft train (defaults)",
    "ft_compiled": "ft train train.compile=true",
}
CHECKS = ("qlora", "bf16", "device_map", "zero3_offload", "fsdp2")


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
                row = {"text": " ".join(f"w{i}" for i in ids), "input_ids": ids + [2]}
                handle.write(json.dumps(row) + "\n")

    write(work / "train.jsonl", rows)
    write(work / "validation.jsonl", 8)
    return params


# ---- the peers (in a child process each) ------------------------------------------------------
def run_peer(route: str, work: Path, shape: dict[str, int], steps: int, warmup: int) -> dict:
    """HF Trainer + PEFT or TRL's SFTTrainer on the rows in file order; tokens/s after warmup."""
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

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(str(work / "model"))
    model = AutoModelForCausalLM.from_pretrained(
        str(work / "model"),
        dtype=torch.bfloat16 if cuda else torch.float32,
        attn_implementation="sdpa",
    )
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS
    )
    dataset = load_dataset("json", data_files=str(work / "train.jsonl"), split="train")
    dataset = dataset.remove_columns("text")
    batches: list[list[int]] = []  # each row's length, batch by batch, in the loop's order
    order = iter(range(len(dataset)))
    lengths = [len(ids) for ids in dataset["input_ids"]]

    class Clock(TrainerCallback):
        """Times steps warmup+1 .. last (the device synchronised at both ends)."""

        start = end = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            batches.append([lengths[next(order)] for _ in range(shape["batch"])])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                sync(cuda)
                self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            sync(cuda)
            self.end = time.perf_counter()

    clock = Clock()
    common = {
        "output_dir": str(work / route),
        "per_device_train_batch_size": shape["batch"],
        "max_steps": warmup + steps,
        "learning_rate": 2e-4,
        "bf16": cuda,
        "use_cpu": not cuda,
        "logging_steps": warmup,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
        "train_sampling_strategy": "sequential",  # every route: the rows in file order
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if route == "hf_plain":
        trainer = Trainer(
            model=get_peft_model(model, lora),
            args=TrainingArguments(**common),
            train_dataset=dataset,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[clock],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(
            **common,
            padding_free=True,
            max_length=None,
            logging_nan_inf_filter=False,
            use_liger_kernel=route == "trl_liger",
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[clock],
        )
    trainer.train()
    logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "tokens": sum(sum(b) for b in batches[warmup : warmup + steps]),
        "seconds": clock.end - clock.start,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_at_end": logged[-1] if logged else None,
    }


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


# ---- ft (in a child process each) -------------------------------------------------------------
def ft_overrides(work: Path, run_dir: Path, steps: int, warmup: int, smoke: bool) -> list[str]:
    shape = SMOKE if smoke else FULL
    return [
        f"model.checkpoint={work / 'model'}",
        f"data.source.train={work / 'train.jsonl'}",
        f"data.source.validation={work / 'validation.jsonl'}",
        f"data.max_length={shape['max_len']}",
        f"train.batch_size={shape['batch']}",
        f"train.max_steps={warmup + steps}",
        f"train.log_every={warmup}",
        f"run_dir={run_dir}",
        "overwrite=true",
        *(["hardware=cpu"] if smoke else []),
    ]


def route_overrides(route: str, smoke: bool) -> list[str]:
    if route == "ft_compiled":
        # On CPU (smoke) the eager backend: dynamo traces and guards as for inductor, without
        # minutes of C++ code generation.
        return ["train.compile=true", *(["train.compile_backend=eager"] if smoke else [])]
    return []


def run_ft(route: str, work: Path, steps: int, warmup: int, smoke: bool, extra: list[str]) -> dict:
    """ft's CLI entry point in this process, then its train records after the warm-up."""
    import torch

    from framework.cli.app import main as ft_main

    run_dir = work / route
    overrides = ft_overrides(work, run_dir, steps, warmup, smoke) + route_overrides(route, smoke)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    code = ft_main(["train", str(RECIPE), *overrides, *extra])
    if code != 0:
        raise RuntimeError(f"ft train exited {code}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    timed = train[1:]  # the first record covers the warm-up steps (log_every = warmup)
    return {
        "tokens": sum(r["tokens"] for r in timed),
        "seconds": sum(r["seconds"] for r in timed),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
        "loss_at_end": train[-1]["loss"],
        "speed_line": next(
            (
                line.split("speed: ", 1)[1]
                for line in (run_dir / "train.log").read_text().splitlines()
                if "speed: " in line
            ),
            "",
        ),
        **{k: train[-1][k] for k in ("compiled_graphs", "compiled_frames") if k in train[-1]},
    }


def child(args: argparse.Namespace) -> int:
    """The routes named (comma-separated) in this process, one after another (bench/gpu.sh's
    parent starts it): each one's result JSON, with its seconds, into the work dir."""
    if args.smoke:
        import torch

        torch.set_num_threads(1)
    shape = SMOKE if args.smoke else FULL
    for route in args.route_child.split(","):
        begin = time.perf_counter()
        if route.startswith("ft"):
            result = run_ft(route, args.work, args.steps, args.warmup, args.smoke, args.ft_override)
        else:
            result = run_peer(route, args.work, shape, args.steps, args.warmup)
        result["wall_s"] = time.perf_counter() - begin
        (args.work / f"{route}.json").write_text(json.dumps(result))
    return 0


def start_child(routes: list[str], args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Run `routes` in one child process; {route: result}. On a GPU each route gets a process
    of its own (its peak memory is its own); under --smoke one process runs them all, so that
    make test pays the library imports once."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--route-child",
        ",".join(routes),
        "--work",
        str(work),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *(["--smoke"] if args.smoke else []),
        *[f"--ft-override={o}" for o in args.ft_override],
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"
    for route in routes:  # a kept work dir (--keep) may hold an earlier run's results
        (work / f"{route}.json").unlink(missing_ok=True)
    begin = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-12:])[-400:]
    results = {}
    for route in routes:
        path = work / f"{route}.json"
        if path.exists():  # finished, whatever a later route in the process did
            results[route] = {"ok": True, **json.loads(path.read_text())}
        else:
            results[route] = {"ok": False, "wall_s": seconds, "note": tail}
    return results


# ---- the checks ----------------------------------------------------------------------------------
def check_overrides(name: str, model_bytes: int) -> tuple[list[str], str]:
    """(overrides, what the log must say) of a check."""
    if name == "qlora":
        return ["hardware=gpu", "peft=qlora"], "base weights: 4-bit (bitsandbytes)"
    if name == "bf16":
        return ["hardware=gpu", "hardware.precision=bf16"], "mixed precision: bf16"
    if name == "device_map":
        budget = max(model_bytes // 2, 1)  # half the weights on the GPU: the rest on CPU
        return ["hardware=device_map", f"hardware.max_memory={{0:{budget},cpu:64GiB}}"], (
            "modules per device"
        )
    if name == "zero3_offload":
        return ["hardware=zero3_offload", "hardware.num_processes=1"], "speed: "
    return ["hardware=fsdp", "hardware.num_processes=1"], "speed: "


def run_check(name: str, args: argparse.Namespace, work: Path, model_bytes: int) -> dict:
    """ft train of a few steps with the check's hardware or method; on CPU (--smoke) the same
    command composed and validated only (dry_run=true: these need CUDA)."""
    overrides, expected = check_overrides(name, model_bytes)
    run_dir = work / f"check-{name}"
    steps = 2 if args.smoke else 6
    common = [o for o in ft_overrides(work, run_dir, steps, 1, False) if "max_steps" not in o] + [
        f"train.max_steps={steps}",
        "train.log_every=1",
    ]
    command = [sys.executable, "-m", "framework", "train", str(RECIPE), *common, *overrides]
    if args.smoke:
        command.append("dry_run=true")
        if name == "qlora" and not importable("bitsandbytes"):
            return {
                "check": name,
                "ok": True,
                "result": "NOT RUN (no GPU: no bitsandbytes)",
                "seconds": 0.0,
                "note": "its wheel travels to the GPU (bench/gpu_wheels.sh)",
            }
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    begin = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.check_timeout
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = 124, f"timed out after {args.check_timeout}s"
    seconds = time.perf_counter() - begin
    if args.smoke:
        ok = code == 0
        return {
            "check": name,
            "ok": ok,
            "result": "VALIDATED (no GPU)" if ok else "FAIL",
            "seconds": seconds,
            "note": "" if ok else output.strip().splitlines()[-1][:200],
        }
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("split") == "train"]
    speeds = [r["tokens_per_s"] for r in rows if r.get("split") == "train"][1:]
    finite = bool(losses) and all(v == v and abs(v) != float("inf") for v in losses)
    ok = code == 0 and finite and expected in log
    note = "" if ok else (output.strip().splitlines() or ["?"])[-1][:200]
    if ok and name == "device_map":
        note = log.split("modules per device ")[1].split(";")[0][:120]
    return {
        "check": name,
        "ok": ok,
        "result": "PASS" if ok else "FAIL",
        "seconds": seconds,
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "loss": f"{losses[0]:.3f}->{losses[-1]:.3f}" if losses else "",
        "note": note,
    }


# ---- report -------------------------------------------------------------------------------------
def card() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"name": "CPU", "peak_flops": None}
    name = torch.cuda.get_device_name(0)
    return {"name": name, "peak_flops": next((v for k, v in PEAK_BF16.items() if k in name), None)}


def report(results: dict[str, dict], checks: list[dict], params: int, info: dict) -> str:
    lines = [
        f"card: {info['name']}; model {params / 1e9:.3f}B parameters",
        "",
        "| route | configuration | tok/s | peak GiB | MFU (4N) | loss, last steps | ft / route |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        if r.get("ok"):
            r["tokens_per_s"] = r["tokens"] / max(r["seconds"], 1e-9)
            r["mfu"] = (
                4 * params * r["tokens_per_s"] / info["peak_flops"] if info["peak_flops"] else None
            )
    ft_speed = max(
        (results[k]["tokens_per_s"] for k in ("ft", "ft_compiled") if results.get(k, {}).get("ok")),
        default=None,
    )
    for route, r in results.items():
        if not r.get("ok"):
            lines.append(f"| {route} | {ROUTES[route]} | FAIL | | | | {r.get('note', '')[:160]} |")
            continue
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        ratio = (
            f"{ft_speed / r['tokens_per_s']:.2f}x"
            if ft_speed and not route.startswith("ft")
            else ""
        )
        loss = f"{r['loss_at_end']:.4f}" if r.get("loss_at_end") is not None else "-"
        lines.append(
            f"| {route} | {ROUTES[route]} | {r['tokens_per_s']:,.0f} | {peak} | {mfu} | {loss} | {ratio} |"
        )
    lines += ["", "| check | result | tok/s | loss | s | note |", "|---|---|---:|---|---:|---|"]
    for c in checks:
        speed = f"{c['tokens_per_s']:,.0f}" if c.get("tokens_per_s") else "-"
        lines.append(
            f"| {c['check']} | {c['result']} | {speed} | {c.get('loss', '')} | {c['seconds']:.0f} | "
            f"{c['note']} |"
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
    parser.add_argument("--only", nargs="*", help="only these routes and checks")
    parser.add_argument("--check-timeout", type=int, default=150, help="seconds per check")
    parser.add_argument("--ft-override", action="append", default=[], help="extra ft override")
    parser.add_argument("--keep", type=Path, help="build and run in this directory, kept")
    parser.add_argument("--route-child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 30)
    args.warmup = args.warmup or (1 if args.smoke else 5)
    if args.route_child:
        return child(args)

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU visible; bench/gpu.sh needs one (bench/gpu.sh --smoke runs the "
            "same script on a tiny model on CPU)",
            file=sys.stderr,
        )
        return 1
    if args.smoke:
        torch.set_num_threads(1)
    shape = SMOKE if args.smoke else FULL
    info = {"name": "CPU (smoke)", "peak_flops": None} if args.smoke else card()
    if args.peak_tflops:
        info["peak_flops"] = args.peak_tflops * 1e12
    wanted = set(args.only or [*ROUTES, *CHECKS])
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ft-gpu-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = shape["batch"] * (args.warmup + args.steps) * 2
        params = build(work, shape, rows, "cpu" if args.smoke else "cuda")
        model_bytes = sum(p.stat().st_size for p in (work / "model").glob("*.safetensors"))
        print(
            f"{info['name']}: {params / 1e9:.3f}B-parameter model built in "
            f"{time.perf_counter() - begin:.0f}s",
            flush=True,
        )
        results: dict[str, dict] = {}
        runnable = []
        for route in ROUTES:
            if route not in wanted:
                continue
            if route == "trl_liger" and not liger_available(args.smoke):
                results[route] = {
                    "ok": False,
                    "note": "not run: liger-kernel needs CUDA and the wheel",
                }
                continue
            runnable.append(route)
        batches = [runnable] if args.smoke else [[route] for route in runnable]
        for batch in batches:
            results.update(start_child(batch, args, work))
            for route in batch:
                result = results[route]
                status = (
                    f"{result.get('tokens', 0) / max(result.get('seconds', 0), 1e-9):,.0f} tok/s"
                    if result["ok"]
                    else "FAIL"
                )
                print(f"{route}: {status} ({time.perf_counter() - begin:.0f}s)", flush=True)
        checks = []
        for name in CHECKS:
            if name in wanted:
                checks.append(run_check(name, args, work, model_bytes))
                print(
                    f"check {name}: {checks[-1]['result']} ({time.perf_counter() - begin:.0f}s)",
                    flush=True,
                )
    table = report(results, checks, params, info)
    print(table)
    print(f"total {time.perf_counter() - begin:.0f}s")
    out = args.out or REPO / "outputs" / "bench" / (
        "gpu_smoke.json" if args.smoke else "gpu_bench.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "card": info,
        "params": params,
        "steps": args.steps,
        "warmup": args.warmup,
        "smoke": args.smoke,
        "results": results,
        "checks": checks,
        "table": table,
    }
    out.write_text(json.dumps(payload, indent=1))
    failed = [r for r, v in results.items() if not v["ok"] and r != "trl_liger"]
    return 1 if failed or not all(c["ok"] for c in checks) else 0


def liger_available(smoke: bool) -> bool:
    return not smoke and importable("liger_kernel")


def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
