"""Shared test helpers: run the CLI as a user would, train a recipe in-process, read metrics,
write toy data. Fixtures and pytest hooks live in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def ft_cli(*args: str, cwd: Path = REPO, timeout: int = 600, env: dict[str, str] = None):
    """Run `python -m framework ARGS` in a subprocess; return CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_recipe(recipe: str, *overrides: str, output_root: Path) -> Path:
    """Compose, validate and train in this process; return the run directory."""
    from framework.config.path import load_run
    from framework.run.execute import execute

    run = load_run(recipe, [f"output_root={output_root}", *overrides])
    return execute(run).run_dir


def metrics(run_dir: Path, split: str = None) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if split is None or r.get("split") == split]


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in metrics(run_dir, "train")]


def write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Short texts whose label is decided by one word: a tiny model learns it in a few dozen steps."""
    import random

    rng = random.Random(seed)
    good = ["great", "wonderful", "beautiful", "funny", "fresh", "moving"]
    bad = ["terrible", "dull", "weak", "rotten", "boring", "long"]
    fillers = ["the film was", "this movie is", "the story felt", "I think it was", "the cast was"]
    rows = []
    for _ in range(n):
        label = rng.random() < 0.5
        word = rng.choice(good if label else bad)
        rows.append({"text": f"{rng.choice(fillers)} {word}", "label": "pos" if label else "neg"})
    return rows


def toy_sentiment_files(folder: Path, train: int = 32, validation: int = 8) -> dict[str, Path]:
    """train.jsonl and val.jsonl of toy sentiment rows in `folder` (seeds 0 and 1)."""
    return {
        "train": write_jsonl(folder / "train.jsonl", toy_sentiment_rows(train, 0)),
        "validation": write_jsonl(folder / "val.jsonl", toy_sentiment_rows(validation, 1)),
    }


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def tiny_presets() -> dict[str, str]:
    """family name -> the model preset of its tiny random-init model (conf/model/tiny_*.yaml)."""
    from framework.core.plugins import load_all
    from framework.core.registry import MODELS

    load_all()
    found = {}
    for path in sorted((REPO / "conf" / "model").glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        if node.get("random_init") is not None and node.get("name") in MODELS:
            found.setdefault(node["name"], path.stem)
    return found


TOY_CLS_RECIPE = "seq_cls_tiny_bert_lora"


def toy_cls_overrides(files: dict[str, Path], *extra: str) -> list[str]:
    """Overrides that train TOY_CLS_RECIPE on toy sentiment files (16 tokens, a log every step)."""
    return [
        "data=files",
        f"+data.source.train={files['train']}",
        f"data.source.validation={files['validation']}",
        "data.max_length=16",
        "train.log_every=1",
        "train.lr=3e-3",
        "peft.dropout=0.1",
        *extra,
    ]


def method_params(method_name: str, preset: str | None = None, **overrides: Any) -> Any:
    """Typed Params of a PEFT method from its preset (conf/peft/<preset>.yaml), as validation
    builds them."""
    from framework.config.typecheck import check_dataclass
    from framework.core.plugins import load_all
    from framework.core.registry import PEFT_METHODS

    load_all()
    path = REPO / "conf" / "peft" / f"{preset or method_name}.yaml"
    node = yaml.safe_load(path.read_text()) if path.is_file() else {"name": method_name}
    assert node["name"] == method_name
    node.update(overrides)
    problems: list[str] = []
    params = check_dataclass(
        PEFT_METHODS.get(method_name).Params, node, "peft", lambda k: str(path), problems
    )
    assert not problems, problems
    return params


def tiny_llama_lora(vocab: int, targets: tuple[str, ...] = ("q_proj", "v_proj", "lm_head")) -> Any:
    """A 2-layer fp32 Llama (SDPA) with LoRA (r 4, dropout off) on `targets`, seeded; its B
    matrices drawn non-zero (B = 0 at init would make the adapters no-ops in a comparison)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets))
    model = get_peft_model(LlamaForCausalLM(config), lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model
