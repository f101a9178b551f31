"""`make bench`: ft against the strongest peers on CPU, side by side, in one invocation.

For each workload (an ft recipe in recipes/), every route trains the same examples in the same
order with the same checkpoint, LoRA settings, lr, clipping, schedule, lengths and steps, each in
its own process, the routes rotating who goes first round after round:
  hf_plain  bench/hf_baseline.py: HF Trainer + PEFT written the plain documented way
  hf_tuned  the same with the speed options a speed-minded user sets (hf_baseline.CONFIGURATIONS)
  trl       SFT only: TRL SFTTrainer with padding_free=True
  trl_dpo   preference (smollm2_dpo) only, its one peer: bench/trl_baseline.py, TRL's DPOTrainer
            + PEFT; its metric is held-out preference accuracy against the base
  ft        ft train RECIPE [BENCH_FT_OVERRIDES]  (python -m framework train ...)
The order: ft's own, exported here with ft's loader code (ft_order) and written into the peers'
train file, which they read sequentially. The plain route gets ft's order without length
grouping (ft's seeded shuffle), the tuned route the order ft trains (length-grouped when the
recipe groups). Then this process scores every saved adapter with one evaluator (same code, same
held-out rows).

Printed: a markdown table of medians over the rounds; written: BENCH_OUT/cpu_bench.json.
  real tok/s   non-pad tokens of the epoch / seconds of the training loop (model loading,
               tokenization, evaluation and saving excluded; the same span for both routes)
  train s      seconds of the training loop; wall s: the whole process, start to exit
  peak RSS     ru_maxrss of the route's process (os.wait4), MiB
  metric       accuracy on held-out rows (classification); assistant-token perplexity (SFT)
  ratio        ft / route of the median real tok/s; the headline ratio is ft / the best peer

Knobs (environment):
  BENCH_ROUNDS=3                      rounds (each runs both routes once)
  BENCH_WORKLOADS=minilm_cls,smollm2_sft,smollm2_dpo
  BENCH_ROUTES=hf_tuned,trl           only these peers (ft and ft@other always run); default: all
  BENCH_EXAMPLES=N                    training examples of every workload (default: the recipe's),
                                      or per workload: minilm_cls=1000,smollm2_sft=32
  BENCH_EVAL_EXAMPLES=N               held-out rows the evaluator scores (default 500 / 64)
  BENCH_FT_OVERRIDES="a=b c=d"        extra overrides of the ft route only (e.g. to switch a
                                      speed option off and measure what it moves)
  BENCH_OUT=outputs/bench             where runs and cpu_bench.json go
  BENCH_THREADS=N                     torch intra-op threads of both routes (OMP_NUM_THREADS;
                                      default: torch's own, one per core). On a machine other
                                      jobs load, 1 avoids the threads' spin-waits
  BENCH_FT_REPO=DIR                   the ft checkout the ft route runs (default: this one), to
                                      measure another version against the same HF baseline
  BENCH_ALSO_FT_REPO=DIR              a third route, "ft@other": ft from another checkout (e.g.
                                      before a change) in the same rounds, rotating with the others
  BENCH_ALSO_FT_OVERRIDES="a=b"       the third route's extra overrides instead of
                                      BENCH_FT_OVERRIDES (BENCH_ALSO_FT_REPO defaults to this
                                      checkout when only this is set): two ft settings side by side
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Workload:
    name: str
    recipe: str
    eval_examples: int  # held-out rows the shared evaluator scores
    title: str
    # The peer routes ft is compared with; None: by task (HF plain and tuned, + TRL for SFT).
    peers: tuple[str, ...] | None = None


WORKLOADS = {
    "minilm_cls": Workload(
        "minilm_cls",
        "bench_minilm_cls",
        500,
        "MiniLM-L6 + LoRA r8 (query, value), Rotten Tomatoes, batch 32, len<=128",
    ),
    "smollm2_sft": Workload(
        "smollm2_sft",
        "bench_smollm2_sft",
        32,
        "SmolLM2-135M + LoRA r8 (7 proj.), chatterbot chats SFT, batch 8",
    ),
    "smollm2_dpo": Workload(
        "smollm2_dpo",
        "bench_smollm2_dpo",
        64,
        "SmolLM2-135M + LoRA r8 (7 proj.), chatterbot preference pairs DPO, batch 8",
        peers=("trl_dpo",),
    ),
}
# Routes run by bench/trl_baseline.py rather than bench/hf_baseline.py, with their configuration.
TRL_BASELINE_ROUTES = {"trl_dpo": "TRL DPOTrainer + PEFT (its documented quickstart)"}


def env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else default


# ---- preparation: one resolved config, the examples, the HF route's spec ---------------------
class Prepared:
    """The workload's resolved ft config, its train examples and held-out rows (tokenized by ft's
    task code, so both routes and the evaluator see the same token ids)."""

    def __init__(self, workload: Workload, work: Path, overrides: list[str]):
        from framework.config.path import load_run
        from framework.core.registry import MODELS, TASKS
        from framework.data.loading import load_raw_splits
        from framework.models.loading import load_tokenizer, resolve_checkpoint

        self.workload = workload
        self.overrides = overrides
        eval_rows = env_int("BENCH_EVAL_EXAMPLES", workload.eval_examples)
        run = load_run(workload.recipe, [*overrides, f"data.max_eval_examples={eval_rows}"])
        self.run = run
        self.checkpoint = resolve_checkpoint(run.plugins.family, run.model)
        self.tokenizer = load_tokenizer(run.plugins.family, run.model, self.checkpoint)
        task = TASKS.get(run.task.name)(
            run.task, run.data, self.tokenizer, MODELS.get(run.model.name)
        )
        task.use_objective(run.plugins.objective(run.objective, task), run.train)
        raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
        task.check_columns(raw.splits, raw.describe)
        task.fit_labels(raw.splits, raw.describe)
        splits = {"train": raw.splits["train"], "validation": raw.splits["validation"]}
        self.task = task
        self.tokenized = task.tokenize(splits)
        self.raw_train = raw.splits["train"]
        train_split = self.tokenized["train"]
        id_columns = [c for c in train_split.column_names if c.endswith("input_ids")]
        self.tokens = (  # a pair counts its chosen and its rejected sequence
            sum(len(ids) for c in id_columns for ids in train_split[c]) * run.train.epochs
        )
        self.examples = len(self.tokenized["train"])
        self.spec_path = self.write_spec(work)

    def steps(self) -> int:
        import math

        train = self.run.train
        return (
            math.ceil(math.ceil(self.examples / train.batch_size) / train.grad_accum) * train.epochs
        )

    def peers(self) -> list[str]:
        """The peer routes of this workload (bench/hf_baseline.py, bench/trl_baseline.py)."""
        if self.workload.peers is not None:
            return list(self.workload.peers)
        return ["hf_plain", "hf_tuned"] + (["trl"] if self.run.task.name != "seq_cls" else [])

    @property
    def preference(self) -> bool:
        """Whether the workload trains preference pairs (its peer: TRL's DPOTrainer)."""
        return any(route in TRL_BASELINE_ROUTES for route in self.peers())

    def write_rows(self, path: Path, order: list[int]) -> None:
        """The train examples, in `order`, as the peers read them: raw text + label id for
        classification (they tokenize as the tutorial does), ft's token ids + labels for SFT, the
        raw pairs as conversations for preference (TRL renders them)."""
        task = self.task
        with path.open("w") as handle:
            if self.preference:
                for index in order:
                    handle.write(json.dumps(conversation_pair(self.raw_train[index], task)) + "\n")
            elif self.run.task.name == "seq_cls":
                text, label = task.column("text"), task.column("label")
                ids = {name: i for i, name in enumerate(task.labels)}
                for index in order:
                    row = self.raw_train[index]
                    handle.write(
                        json.dumps({"text": row[text], "label": ids[str(row[label])]}) + "\n"
                    )
            else:
                rows = self.tokenized["train"]
                for index in order:
                    row = rows[index]
                    handle.write(
                        json.dumps({"input_ids": row["input_ids"], "labels": row["labels"]}) + "\n"
                    )

    def write_spec(self, work: Path) -> Path:
        """The peers' inputs: the same examples, order and settings as the ft recipe resolves.
        train_file: ft's order (length-grouped when the recipe groups); plain_train_file: ft's
        order without length grouping, for the plain route."""
        run = self.run
        work.mkdir(parents=True, exist_ok=True)
        grouped = run.train.group_by_length
        self.order = ft_order(run, self.tokenized["train"], grouped)
        self.plain_order = ft_order(run, self.tokenized["train"], False) if grouped else self.order
        if self.preference and len(self.tokenized["train"]) != len(self.raw_train):
            # Tokenizing dropped pairs: ft's indices no longer name raw rows; the raw order then.
            self.order = self.plain_order = list(range(len(self.raw_train)))
        self.write_rows(work / "train.jsonl", self.order)
        if grouped:
            self.write_rows(work / "train_plain.jsonl", self.plain_order)
        peft, train = run.peft, run.train
        spec = {
            "task": run.task.name,
            "checkpoint": str(self.checkpoint),
            "train_file": str(work / "train.jsonl"),
            "plain_train_file": str(work / ("train_plain.jsonl" if grouped else "train.jsonl")),
            "max_length": run.data.max_length,
            "num_labels": len(getattr(self.task, "labels", [])) or None,
            "pad_token_id": self.tokenizer.pad_token_id,
            "beta": getattr(run.objective, "beta", None),
            "lora": {
                "r": peft.r,
                "alpha": peft.alpha,
                "dropout": peft.dropout,
                "target_modules": list(peft.target_modules),
            },
            "train": {
                "batch_size": train.batch_size,
                "grad_accum": train.grad_accum,
                "epochs": train.epochs,
                "lr": train.lr,
                "weight_decay": train.weight_decay,
                "warmup_steps": int(train.warmup_ratio * self.steps()),  # as ft rounds it
                "max_grad_norm": train.max_grad_norm,
                "scheduler": train.scheduler,
                "seed": run.seed,
            },
        }
        path = work / "hf_spec.json"
        path.write_text(json.dumps(spec, indent=1))
        return path

    def padding(self) -> dict[str, float]:
        """Real / padded tokens of the epoch's batches in ft's order, in its plain order, and in
        the order transformers' own LengthGroupedSampler (train_sampling_strategy=
        "group_by_length") would draw: the tuned route's grouped batches are not easier than HF's
        own grouping would make them."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        lengths = [len(ids) for ids in self.tokenized["train"]["input_ids"]]
        batch = self.run.train.batch_size

        def real_fraction(order: list[int]) -> float:
            padded = sum(
                max(lengths[i] for i in order[k : k + batch]) * len(order[k : k + batch])
                for k in range(0, len(order), batch)
            )
            return sum(lengths) / padded

        import torch

        hf_grouped = list(
            LengthGroupedSampler(
                batch, lengths=lengths, generator=torch.Generator().manual_seed(self.run.seed)
            )
        )
        return {
            "ft_order": real_fraction(self.order),
            "ft_plain_order": real_fraction(self.plain_order),
            "hf_group_by_length": real_fraction(hf_grouped),
        }


def ft_order(run: Any, dataset: Any, group_by_length: bool) -> list[int]:
    """The example indices of epoch 0 in the order ft's trainer draws them: ft's own loader
    (training/loaders.build_loader) prepared by Accelerate as trainer.set_up prepares it (seeded
    sampler, seed set first), over the dataset's rows tagged with their index."""
    from dataclasses import replace
    from types import SimpleNamespace

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from framework.training.loaders import build_loader

    view = SimpleNamespace(train=replace(run.train, group_by_length=group_by_length), seed=run.seed)
    tagged = dataset.add_column("bench_index", list(range(len(dataset))))
    set_seed(run.seed)
    loader = build_loader(
        view,
        tagged,
        lambda rows: [row["bench_index"] for row in rows],
        True,
        run.train.batch_size,
        1,
        False,
    )
    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)
    )
    loader = accelerator.prepare(loader)
    loader.set_epoch(0)
    return [index for batch in loader for index in batch]


# ---- the routes -------------------------------------------------------------------------------
def run_process(command: list[str], log_path: Path, cwd: Path = REPO) -> dict[str, float]:
    """Run a route's process; its wall seconds and peak RSS (MiB, from os.wait4's rusage)."""
    env = dict(os.environ, PYTHONPATH=str(cwd), TOKENIZERS_PARALLELISM="false")
    if os.environ.get("BENCH_THREADS"):
        env["OMP_NUM_THREADS"] = os.environ["BENCH_THREADS"]
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-15:]
        raise RuntimeError(
            f"{' '.join(command[:5])} ... exited {process.returncode}; "
            f"log {log_path}:\n" + "\n".join(tail)
        )
    # Linux reports ru_maxrss in KiB.
    return {"wall_seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def conversation_pair(row: dict[str, Any], task: Any) -> dict[str, Any]:
    """A preference row as TRL's conversational format: prompt, chosen, rejected turn lists."""
    prompt, (chosen, rejected) = task.prompt_and_completions(row, "bench row")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def run_peer(route: str, prepared: Prepared, out: Path) -> dict[str, Any]:
    """A peer route: bench/hf_baseline.py, or bench/trl_baseline.py for preference (trl_dpo)."""
    spec = json.loads(prepared.spec_path.read_text())
    spec["output_dir"] = str(out)
    spec["route"] = route
    if route == "hf_plain":
        spec["train_file"] = spec["plain_train_file"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    script = "trl_baseline.py" if route in TRL_BASELINE_ROUTES else "hf_baseline.py"
    stats = run_process(
        [sys.executable, str(REPO / "bench" / script), str(out / "spec.json")],
        out / "log.txt",
    )
    result = json.loads((out / "result.json").read_text())
    return {
        **stats,
        "train_seconds": result["train_seconds"],
        "steps": result["steps"],
        "tokens": prepared.tokens,
        "adapter": str(out / "adapter"),
    }


def run_ft(prepared: Prepared, out: Path, repo: Path | None = None) -> dict[str, Any]:
    overrides = [*prepared.overrides, f"run_dir={out}"]
    if repo is not None and "BENCH_ALSO_FT_OVERRIDES" in os.environ:  # the third route
        extra = shlex.split(os.environ.get("BENCH_FT_OVERRIDES", ""))
        overrides = (
            [o for o in prepared.overrides if o not in extra]
            + shlex.split(os.environ["BENCH_ALSO_FT_OVERRIDES"])
            + [f"run_dir={out}"]
        )
    stats = run_process(
        [sys.executable, "-m", "framework", "train", prepared.workload.recipe, *overrides],
        out.parent / f"{out.name}.log.txt",
        repo or ft_repo(),
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    # The train records' intervals tile the step loop (framework/training/meter.py).
    seconds = sum(r["seconds"] for r in train)
    counted = sum(r["tokens"] for r in train)
    return {
        **stats,
        "train_seconds": seconds,
        "steps": train[-1]["step"],
        "tokens": prepared.tokens,
        "tokens_counted_by_ft": counted,
        "adapter": str(out / "adapter"),
    }


def ft_repo() -> Path:
    return Path(os.environ.get("BENCH_FT_REPO", REPO)).resolve()


def other_repo() -> Path | None:
    value = os.environ.get("BENCH_ALSO_FT_REPO")
    if not value and "BENCH_ALSO_FT_OVERRIDES" in os.environ:
        value = str(ft_repo())
    return Path(value).resolve() if value else None


def run_route(route: str, prepared: Prepared, out: Path) -> dict[str, Any]:
    if route.startswith("ft"):
        return run_ft(prepared, out, other_repo() if route == "ft@other" else None)
    return run_peer(route, prepared, out)


# ---- one evaluator for every route ---------------------------------------------------------------
def evaluate(prepared: Prepared, adapter: str) -> dict[str, float]:
    """The same metric, computed the same way, for either route's saved adapter: accuracy on the
    held-out rows (classification) or the assistant-token mean loss and perplexity (SFT)."""
    import math

    import torch
    import transformers
    from peft import PeftModel

    transformers.logging.set_verbosity_error()
    run, task = prepared.run, prepared.task
    if prepared.preference:
        return preference_accuracy(prepared, adapter)
    kwargs = {"num_labels": len(task.labels)} if run.task.name == "seq_cls" else {}
    auto = getattr(transformers, task.auto_model)
    base = auto.from_pretrained(str(prepared.checkpoint), dtype=torch.float32, **kwargs)
    model = PeftModel.from_pretrained(base, adapter).eval()
    rows = prepared.tokenized["validation"]
    pad = prepared.tokenizer.pad_token_id
    correct = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            chunk = rows.select(range(start, min(start + 16, len(rows))))
            width = max(len(ids) for ids in chunk["input_ids"])
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, row in enumerate(chunk):
                n = len(row["input_ids"])
                ids[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), 1
                if run.task.name != "seq_cls":
                    labels[i, :n] = torch.tensor(row["labels"])
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            if run.task.name == "seq_cls":
                gold = torch.tensor(chunk["labels"])
                correct += int((logits.argmax(-1) == gold).sum())
                total += len(chunk)
            else:  # next-token loss over the labelled (assistant) positions, summed per token
                shifted = labels[:, 1:]
                loss_sum += float(
                    torch.nn.functional.cross_entropy(
                        logits[:, :-1].reshape(-1, logits.shape[-1]),
                        shifted.reshape(-1),
                        ignore_index=-100,
                        reduction="sum",
                    )
                )
                total += int((shifted != -100).sum())
    if run.task.name == "seq_cls":
        return {"accuracy": correct / total}
    mean = loss_sum / max(total, 1)
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50.0))}


def preference_accuracy(prepared: Prepared, adapter: str) -> dict[str, float]:
    """Held-out preference accuracy of a DPO adapter: the fraction of pairs whose implicit reward
    (log-ratio against the base, the adapter disabled) is higher for chosen (ties count 1/2),
    and the mean margin, in log-prob units."""
    import torch
    import transformers
    from peft import PeftModel

    base = transformers.AutoModelForCausalLM.from_pretrained(
        str(prepared.checkpoint), dtype=torch.float32
    )
    model = PeftModel.from_pretrained(base, adapter).eval()
    rows = prepared.tokenized["validation"]
    pad = prepared.tokenizer.pad_token_id

    def logps(ids: Any, mask: Any, labels: Any) -> Any:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = labels[:, 1:]
        picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return (picked * (targets != -100)).sum(-1)

    accurate, margins = 0.0, []
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            chunk = rows.select(range(start, min(start + 8, len(rows))))
            seqs = list(chunk["chosen_input_ids"]) + list(chunk["rejected_input_ids"])
            labs = list(chunk["chosen_labels"]) + list(chunk["rejected_labels"])
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
            for i, (seq, lab) in enumerate(zip(seqs, labs)):
                ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
                labels[i, : len(seq)] = torch.tensor(lab)
            policy = logps(ids, mask, labels)
            with model.disable_adapter():
                reference = logps(ids, mask, labels)
            ratio = policy - reference
            half = len(chunk)
            margin = ratio[:half] - ratio[half:]
            accurate += float((margin > 0).sum() + 0.5 * (margin == 0).sum())
            margins += margin.tolist()
    return {"accuracy": accurate / len(margins), "margin": sum(margins) / len(margins)}


# ---- table and JSON ------------------------------------------------------------------------------
def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(prepared: Prepared, rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    classes = prepared.run.task.name == "seq_cls" or prepared.preference
    metric = "accuracy" if classes else "perplexity"
    routes = {}
    for route, runs in rounds.items():
        for r in runs:
            r["tokens_per_s"] = r["tokens"] / r["train_seconds"]
        routes[route] = {
            "tokens_per_s": median_of(runs, "tokens_per_s"),
            "train_seconds": median_of(runs, "train_seconds"),
            "wall_seconds": median_of(runs, "wall_seconds"),
            "peak_rss_mib": median_of(runs, "peak_rss_mib"),
            "metric": median_of(runs, metric),
            "metric_range": [min(r[metric] for r in runs), max(r[metric] for r in runs)],
            "steps": runs[0]["steps"],
            "runs": runs,
        }
    peers = [route for route in routes if not route.startswith("ft")]
    best = max(peers, key=lambda route: routes[route]["tokens_per_s"])
    ratios = {
        route: routes["ft"]["tokens_per_s"] / routes[route]["tokens_per_s"]
        for route in routes
        if route != "ft"
    }
    per_round = [f["tokens_per_s"] / p["tokens_per_s"] for p, f in zip(rounds[best], rounds["ft"])]
    return {
        "workload": prepared.workload.name,
        "title": prepared.workload.title,
        "recipe": prepared.workload.recipe,
        "ft_overrides": prepared.overrides,
        "examples": prepared.examples,
        "real_tokens_per_epoch": prepared.tokens,
        "real_token_fraction": prepared.padding() if prepared.run.task.name == "seq_cls" else None,
        "metric": metric,
        "routes": routes,
        "best_peer": best,
        "ratio": ratios[best],  # ft / the best peer
        "ratio_per_round": per_round,
        "ratios": ratios,  # ft / each route
    }


def route_label(route: str, result: dict[str, Any]) -> str:
    """Each route with its configuration."""
    sys.path.insert(0, str(REPO / "bench"))
    from hf_baseline import CONFIGURATIONS

    if route == "ft":
        own = os.environ.get("BENCH_FT_OVERRIDES", "")
        return f"ft train {result['recipe']} {own}".strip()
    if route == "ft@other":
        if "BENCH_ALSO_FT_OVERRIDES" in os.environ:
            return f"ft train {os.environ['BENCH_ALSO_FT_OVERRIDES']}"
        return f"ft train @ {result.get('other_commit', 'x other').split(' ', 1)[-1]}"
    return {**CONFIGURATIONS, **TRL_BASELINE_ROUTES}[route]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | route (configuration) | real tok/s | train s | wall s | peak RSS MiB | "
        "metric | ft / route |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for result in results:
        for route, r in result["routes"].items():
            if route == "ft":
                ratio = f"**{result['ratio']:.2f}x the best peer**"
            else:
                ratio = f"{result['ratios'][route]:.2f}x"
            low, high = r["metric_range"]
            lines.append(
                f"| {result['workload']} ({result['examples']} ex.) | {route}: "
                f"{route_label(route, result)} | {r['tokens_per_s']:,.0f} | "
                f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['peak_rss_mib']:,.0f} | "
                f"{result['metric']} {r['metric']:.4f} ({low:.4f}-{high:.4f}) | {ratio} |"
            )
    return "\n".join(lines)


def examples_per_workload(value: str) -> dict[str, int]:
    """BENCH_EXAMPLES: '1000' (every workload) or 'minilm_cls=1000,smollm2_sft=32'."""
    if value and "=" not in value:
        return {"*": int(value)}
    return {k.strip(): int(v) for k, v in (part.split("=") for part in value.split(",") if part)}


def machine() -> dict[str, Any]:
    import torch

    def commit(repo: Path | None) -> str:
        return (
            subprocess.run(
                ["git", "-C", str(repo), "log", "-1", "--format=%h %s"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if repo
            else ""
        )

    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "ft_repo": str(ft_repo()),
        "ft_commit": commit(ft_repo()),
        "other_repo": str(other_repo() or ""),
        "other_commit": commit(other_repo()),
        "threads": os.environ.get("BENCH_THREADS", "torch default"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main() -> int:
    rounds = env_int("BENCH_ROUNDS", 3)
    names = os.environ.get("BENCH_WORKLOADS", ",".join(WORKLOADS)).split(",")
    out_root = Path(os.environ.get("BENCH_OUT", REPO / "outputs" / "bench")).resolve()
    examples = examples_per_workload(os.environ.get("BENCH_EXAMPLES", ""))
    extra = shlex.split(os.environ.get("BENCH_FT_OVERRIDES", ""))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    work = out_root / stamp
    if os.environ.get("BENCH_THREADS"):  # the evaluator in this process too
        import torch

        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    info = machine()
    print(
        f"# make bench: {rounds} rounds, load average at start {info['load_average']}, "
        f"{info['cpus']} CPUs, threads {info['threads']}; ft from {info['ft_repo']} "
        f"({info['ft_commit']}); runs in {work}",
        flush=True,
    )
    results = []
    for name in names:
        workload = WORKLOADS[name.strip()]
        count = examples.get(workload.name, examples.get("*"))
        overrides = ([f"data.max_train_examples={count}"] if count else []) + extra
        prepared = Prepared(workload, work / workload.name, overrides)
        print(
            f"\n## {workload.name}: {prepared.examples} examples, {prepared.tokens} real tokens, "
            f"{prepared.steps()} steps",
            flush=True,
        )
        routes = prepared.peers() + ["ft"] + (["ft@other"] if other_repo() else [])
        if os.environ.get("BENCH_ROUTES"):  # a subset of the peers (ft and ft@other stay)
            chosen = os.environ["BENCH_ROUTES"].split(",")
            routes = [r for r in routes if r in chosen or r.startswith("ft")]
        runs: dict[str, list[dict[str, Any]]] = {route: [] for route in routes}
        for index in range(rounds):
            # Each route goes first, second, ... in turn.
            order = routes[index % len(routes) :] + routes[: index % len(routes)]
            for route in order:
                out = work / workload.name / f"{route.replace('@', '-')}-{index}"
                result = run_route(route, prepared, out)
                result.update(evaluate(prepared, result["adapter"]))
                result["load_average"] = os.getloadavg()[0]
                runs[route].append(result)
                print(
                    f"  round {index} {route}: {result['tokens'] / result['train_seconds']:.0f} "
                    f"real tok/s, train {result['train_seconds']:.1f}s, wall "
                    f"{result['wall_seconds']:.1f}s, RSS {result['peak_rss_mib']:.0f} MiB, "
                    f"{ {k: round(v, 4) for k, v in result.items() if k in ('accuracy', 'perplexity')} }",
                    flush=True,
                )
        results.append(summarize(prepared, runs))
        if other_repo():
            results[-1]["other_commit"] = info["other_commit"]
    info["load_average_end"] = os.getloadavg()
    print("\n" + table(results))
    for result in results:
        best = result["routes"][result["best_peer"]]
        print(
            f"{result['workload']}: ft {result['ratio']:.2f}x the best peer "
            f"({result['best_peer']}) in real tok/s; peak RSS ft / {result['best_peer']} "
            f"{result['routes']['ft']['peak_rss_mib'] / best['peak_rss_mib']:.2f}; "
            f"real-token fraction of the batches {result['real_token_fraction']}"
        )
    print(
        f"\nmedian of {rounds} alternating rounds; load average start {info['load_average']}, "
        f"end {info['load_average_end']}; {info['date_utc']} UTC"
    )
    report = {"machine": info, "rounds": rounds, "results": results, "table": table(results)}
    (out_root / "cpu_bench.json").write_text(json.dumps(report, indent=1))
    shutil.copy(out_root / "cpu_bench.json", work / "cpu_bench.json")
    print(f"JSON: {out_root / 'cpu_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
