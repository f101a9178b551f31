"""Every task type trains on CPU with LoRA and beats its untrained baseline on a held-out split.

train.eval_before=true evaluates the untrained model first: summary.json["baseline"] (and the
step-0 eval record of metrics.jsonl) is the baseline, summary.json["final"] the trained model.
Sized for CI (about four minutes in all on 2 idle cores): MiniLM for token_cls (on generated NER
sentences; WNUT-16 needs two epochs, see docs/tasks.md), question_ans, feature_extraction and
seq_cls multi-label/regression; a tiny random-init T5 for seq2seq_lm (the MiniLM bert2bert takes
minutes: its numbers are in docs/tasks.md). Causal LM (SmolLM2) and single-label seq_cls
(MiniLM) are in test_e2e.py. Then each saved adapter is used by `ft predict`, as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import metrics, train_losses, train_recipe, write_jsonl

# Entities for generated NER sentences; validation uses other names than train, so the model
# must tag unseen entities from context and from what MiniLM already knows.
_PEOPLE = (
    [
        "Anna Novak",
        "Omar Haddad",
        "Kenji Sato",
        "Maria Rossi",
        "David Okafor",
        "Lars Jensen",
        "Priya Singh",
        "Hugo Moreau",
        "Elena Petrov",
        "Samuel Mensah",
    ],
    ["Grace Walsh", "Ivan Horvat", "Yuki Tanaka", "Felix Schmidt", "Amara Adeyemi"],
)
_PLACES = (
    ["Lisbon", "Oslo", "New York", "Nairobi", "Kyoto", "Buenos Aires", "Hamburg", "Toronto"],
    ["Melbourne", "Cape Town", "Seville", "Chicago"],
)
_ORGS = (
    ["Google", "the Red Cross", "Toyota", "Microsoft", "Real Madrid", "the BBC"],
    ["Nike", "Amazon", "the United Nations"],
)
_TEMPLATES = [
    "{PER} flew to {LOC} last week .",
    "I saw {PER} in {LOC} today",
    "{PER} works for {ORG} in {LOC}",
    "we love {LOC} so much !",
    "{ORG} hired {PER}",
    "nothing much happened today lol",
    "great game by {ORG} tonight",
    "has anyone seen {PER} ?",
    "{PER} and {PER} met at {ORG}",
]


def toy_ner_rows(n: int, seed: int, held_out: bool) -> list:
    """Tweet-like sentences with BIO tags for PER, LOC and ORG entities."""
    import random

    rng = random.Random(seed)
    pools = {"PER": _PEOPLE[held_out], "LOC": _PLACES[held_out], "ORG": _ORGS[held_out]}
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for word in rng.choice(_TEMPLATES).split():
            kind = word.strip("{}") if word.startswith("{") else None
            if kind is None:
                tokens.append(word)
                tags.append("O")
                continue
            for i, part in enumerate(rng.choice(pools[kind]).split()):
                tokens.append(part)
                tags.append(("B-" if i == 0 else "I-") + kind)
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def _toy_ner_files(tmp_path_factory) -> list:
    return toy_ner_overrides(tmp_path_factory.mktemp("toy_ner"))


def toy_ner_overrides(folder: Path) -> list:
    """Toy NER train (480 rows) and held-out (64 rows) files written into `folder`, as overrides
    (bench/group_by_length.py trains the same)."""
    train = write_jsonl(folder / "train.jsonl", toy_ner_rows(480, 0, held_out=False))
    validation = write_jsonl(folder / "validation.jsonl", toy_ner_rows(64, 1, held_out=True))
    return [
        "data=files",
        f"+data.source.train={train}",
        f"data.source.validation={validation}",
        "data.max_length=32",
    ]


# recipe -> (primary metric, least gain over the baseline, least final value, overrides that keep
# the run short enough for CI). The floors sit below the values measured here (docs/tasks.md,
# "runs inside make test"): token_cls F1 0.785, QA F1 0.696, T5 ROUGE-L 0.219, recall@1 0.970.
RECIPES = {
    "token_cls_minilm_lora": ("f1", 0.5, 0.6, ["train.epochs=2"]),  # + toy NER files, see trained()
    # 60 steps of 16 windows at lr 3e-3, ~2 min: F1 0.014 -> 0.696 (40 steps only reach 0.11).
    "qa_minilm_lora": (
        "f1",
        0.3,
        0.65,
        ["data.max_train_examples=960", "data.max_eval_examples=100", "train.lr=3e-3"],
    ),
    "seq2seq_tiny_t5_lora": ("rougeL", 0.08, 0.15, []),
    "embed_minilm_lora": (
        "recall@1",
        0.02,
        0.95,
        ["train.max_steps=20", "data.max_eval_examples=100", "data.source.num_scored=100"],
    ),
}

_RUNS: dict = {}


def trained(recipe: str, tmp_path_factory) -> Path:
    """Train each recipe once per session (the predict tests reuse the run)."""
    if recipe not in _RUNS:
        extra = _toy_ner_files(tmp_path_factory) if recipe == "token_cls_minilm_lora" else []
        _RUNS[recipe] = train_recipe(
            recipe, *RECIPES[recipe][3], *extra, output_root=tmp_path_factory.mktemp(recipe)
        )
    return _RUNS[recipe]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_beats_untrained_baseline(recipe, tmp_path_factory):
    run_dir = trained(recipe, tmp_path_factory)
    metric, least_gain, floor, _ = RECIPES[recipe]
    found = summary(run_dir)
    assert found["primary_metric"] == metric and found["greater_is_better"] is True
    before, after = found["baseline"][metric], found["final"][metric]
    print(f"{recipe}: {metric} {before:.4f} -> {after:.4f}")
    assert after > before + least_gain, found
    assert after >= floor, found
    assert metrics(run_dir, "eval")[0]["step"] == 0  # the baseline is the step-0 record
    losses = train_losses(run_dir)
    assert losses[-1] < losses[0], losses
    assert found["final"]["eval_loss"] < found["baseline"]["eval_loss"]


def predict(run_dir: Path, rows: list, tmp_path: Path) -> list:
    from framework.commands.inference import predict_file

    source = write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert predict_file(run_dir, source, output) == len(rows)
    return [json.loads(line) for line in output.read_text().splitlines()]


@pytest.mark.slow
def test_predict_token_cls_writes_tags_and_entities(tmp_path_factory, tmp_path):
    run_dir = trained("token_cls_minilm_lora", tmp_path_factory)
    labels = json.loads((run_dir / "adapter" / "ft_task.json").read_text())["labels"]
    assert labels == ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
    out = predict(
        run_dir,
        [
            {"tokens": ["Justin", "Bieber", "played", "in", "London", "tonight"]},
            {"tokens": "see you at the Empire State Building"},
        ],
        tmp_path,
    )
    assert [len(r["tags"]) for r in out] == [6, 7]
    assert all(tag in labels for r in out for tag in r["tags"])
    assert all(set(e) == {"type", "start", "end", "text"} for r in out for e in r["entities"])


@pytest.mark.slow
def test_predict_question_ans_answers_from_the_context(tmp_path_factory, tmp_path):
    run_dir = trained("qa_minilm_lora", tmp_path_factory)
    context = (
        "Anna Novak was born in 1970 in the city of Lisbon. She works as a pilot at Bluepeak "
        "Motors, where she has been for 12 years. Her favourite colour is teal, and she "
        "plays the cello on weekends."
    )
    questions = [
        "Where was Anna Novak born?",
        "Which company does Anna Novak work for?",
        "What instrument does Anna Novak play?",
    ]
    out = predict(run_dir, [{"question": q, "context": context} for q in questions], tmp_path)
    for row in out:  # every answer is a span of the context, at the offset it claims
        assert row["answer"] and context[row["start"] :].startswith(row["answer"])
    answers = [row["answer"] for row in out]
    assert (
        sum(a == want for a, want in zip(answers, ["Lisbon", "Bluepeak Motors", "cello"])) >= 2
    ), answers


@pytest.mark.slow
def test_predict_seq2seq_generates_text(tmp_path_factory, tmp_path):
    run_dir = trained("seq2seq_tiny_t5_lora", tmp_path_factory)
    out = predict(
        run_dir, [{"source": "March 5, 2021"}, {"source": "the 1st of May, 1999"}], tmp_path
    )
    assert all(isinstance(r["generated"], str) and r["generated"] for r in out)


@pytest.mark.slow
def test_predict_feature_extraction_writes_embeddings(tmp_path_factory, tmp_path):
    import numpy as np

    run_dir = trained("embed_minilm_lora", tmp_path_factory)
    texts = [
        "Where was Anna Novak born?",
        "Anna Novak was born in Lisbon.",
        "Omar Sato plays the violin.",
    ]
    out = predict(run_dir, [{"text": t} for t in texts], tmp_path)
    vectors = np.array([r["embedding"] for r in out])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # The question is closer to its answer than to an unrelated fact.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def toy_multilabel_rows(n: int, seed: int) -> list:
    """Sentences naming zero to three topics; the labels are the topics named."""
    import random

    rng = random.Random(seed)
    words = {
        "city": ["berlin", "madrid", "tokyo"],
        "colour": ["red", "green", "blue"],
        "job": ["teacher", "doctor", "painter"],
    }
    rows = []
    for _ in range(n):
        topics = sorted(t for t in words if rng.random() < 0.4) or ["none"]
        named = [rng.choice(words[t]) for t in topics if t != "none"]
        rng.shuffle(named)
        rows.append({"text": " ".join(["I think"] + (named or ["nothing"])), "label": topics})
    return rows


def toy_regression_rows(n: int, seed: int) -> list:
    """Premise/hypothesis pairs scored by how many of the hypothesis words the premise shares."""
    import random

    rng = random.Random(seed)
    vocab = ["red", "blue", "cat", "dog", "big", "small", "run", "sleep"]
    rows = []
    for _ in range(n):
        a = rng.sample(vocab, 3)
        shared = rng.randint(0, 3)
        b = a[:shared] + rng.sample([w for w in vocab if w not in a], 3 - shared)
        rows.append({"text": " ".join(a), "text_pair": " ".join(b), "label": shared / 3})
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "problem_type, metric, floor, make_rows",
    [
        ("multi_label", "micro_f1", 0.9, toy_multilabel_rows),  # measured 0.986 (docs/tasks.md)
        ("regression", "spearman", 0.9, toy_regression_rows),  # measured 0.949
    ],
)
def test_seq_cls_multilabel_and_regression_beat_baseline(
    problem_type, metric, floor, make_rows, tmp_path
):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(480, 0))
    validation = write_jsonl(tmp_path / "validation.jsonl", make_rows(96, 1))
    run_dir = train_recipe(
        "seq_cls_minilm_lora",
        "data=files",
        f"+data.source.train={train}",
        f"data.source.validation={validation}",
        f"task.problem_type={problem_type}",
        "train.max_steps=30",
        "train.batch_size=16",
        "data.max_length=32",
        output_root=tmp_path / "out",
    )
    found = summary(run_dir)
    assert found["primary_metric"] == metric
    print(
        f"seq_cls {problem_type}: {metric} {found['baseline'][metric]:.4f} -> "
        f"{found['final'][metric]:.4f}"
    )
    assert found["final"][metric] > found["baseline"][metric] + 0.1, found
    assert found["final"][metric] >= floor, found
    losses = train_losses(run_dir)
    assert losses[-1] < losses[0], losses
    saved = json.loads((run_dir / "adapter" / "ft_task.json").read_text())
    assert saved["problem_type"] == problem_type
    if problem_type == "multi_label":
        assert saved["labels"] == ["city", "colour", "job", "none"]
