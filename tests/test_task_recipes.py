"""Every task type trains on CPU with LoRA and beats its untrained baseline on a held-out split.

train.eval_before=true evaluates the untrained model first: summary.json["baseline"] (and the
step-0 eval record of metrics.jsonl) is the baseline, summary.json["final"] the trained model.
The real-checkpoint recipes use MiniLM (token_cls, question_ans, feature_extraction); no
pretrained seq2seq model ships offline, so seq2seq_lm trains a tiny random-init T5. Then the
saved adapter is used by `ft predict` for each task, as a user would.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from conftest import metrics, train_losses, train_recipe, write_jsonl

# recipe -> (primary metric, overrides that keep the run short enough for CI)
RECIPES = {
    "token_cls_minilm_lora": ("f1", ["train.epochs=1"]),
    "qa_minilm_lora": ("f1", ["data.max_train_examples=600", "data.max_eval_examples=100"]),
    "seq2seq_tiny_t5_lora": ("rougeL", []),
    "embed_minilm_lora": ("recall@1", []),
}

_RUNS: dict = {}


def trained(recipe: str, tmp_path_factory) -> Path:
    """Train each recipe once per session (the predict tests reuse the run)."""
    if recipe not in _RUNS:
        _RUNS[recipe] = train_recipe(recipe, *RECIPES[recipe][1],
                                     output_root=tmp_path_factory.mktemp(recipe))
    return _RUNS[recipe]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_beats_untrained_baseline(recipe, tmp_path_factory):
    run_dir = trained(recipe, tmp_path_factory)
    metric = RECIPES[recipe][0]
    found = summary(run_dir)
    assert found["primary_metric"] == metric and found["greater_is_better"] is True
    before, after = found["baseline"][metric], found["final"][metric]
    print(f"{recipe}: {metric} {before:.4f} -> {after:.4f}")
    assert after > before, found
    assert metrics(run_dir, "eval")[0]["step"] == 0  # the baseline is the step-0 record
    losses = train_losses(run_dir)
    assert losses[-1] < losses[0], losses
    assert found["final"]["eval_loss"] < found["baseline"]["eval_loss"]


def predict(run_dir: Path, rows: list, tmp_path: Path) -> list:
    from framework.inference import cmd_predict

    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert cmd_predict(argparse.Namespace(run_dir=run_dir, input=source, output=output)) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


@pytest.mark.slow
def test_predict_token_cls_writes_tags_and_entities(tmp_path_factory, tmp_path):
    run_dir = trained("token_cls_minilm_lora", tmp_path_factory)
    labels = json.loads((run_dir / "adapter" / "ft_task.json").read_text())["labels"]
    assert labels[0] == "O" and "B-person" in labels
    out = predict(run_dir, [{"tokens": ["Justin", "Bieber", "played", "in", "London", "tonight"]},
                            {"tokens": "see you at the Empire State Building"}], tmp_path)
    assert [len(r["tags"]) for r in out] == [6, 7]
    assert all(tag in labels for r in out for tag in r["tags"])
    assert all(set(e) == {"type", "start", "end", "text"} for r in out for e in r["entities"])


@pytest.mark.slow
def test_predict_question_ans_answers_from_the_context(tmp_path_factory, tmp_path):
    run_dir = trained("qa_minilm_lora", tmp_path_factory)
    context = "Anna Novak was born in Lisbon in 1970. She works as a pilot at Bluepeak Motors."
    out = predict(run_dir, [{"question": "Where was Anna Novak born?", "context": context}], tmp_path)
    answer = out[0]["answer"]
    assert answer and answer in context and context[out[0]["start"]:].startswith(answer)


@pytest.mark.slow
def test_predict_seq2seq_generates_text(tmp_path_factory, tmp_path):
    run_dir = trained("seq2seq_tiny_t5_lora", tmp_path_factory)
    out = predict(run_dir, [{"source": "March 5, 2021"}, {"source": "the 1st of May, 1999"}], tmp_path)
    assert all(isinstance(r["generated"], str) and r["generated"] for r in out)


@pytest.mark.slow
def test_predict_feature_extraction_writes_embeddings(tmp_path_factory, tmp_path):
    import numpy as np

    run_dir = trained("embed_minilm_lora", tmp_path_factory)
    texts = ["Where was Anna Novak born?", "Anna Novak was born in Lisbon.",
             "Omar Sato plays the violin."]
    out = predict(run_dir, [{"text": t} for t in texts], tmp_path)
    vectors = np.array([r["embedding"] for r in out])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # The question is closer to its answer than to an unrelated fact.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
