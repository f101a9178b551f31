"""Continued pretraining (data.block_size): text documents joined with the end-of-document token
and cut into blocks of exactly block_size tokens, every token a label; from jsonl, .txt and
parquet files, as tables and as streams."""

from __future__ import annotations

import json

import pytest

from framework.core.params import DataConfig


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny Llama's byte-level BPE tokenizer (trained on the fly, built once)."""
    from framework.core.plugins import load_all
    from framework.core.registry import MODELS
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.models.params import ModelParams, TinySpec

    load_all()
    family, params = MODELS.get("llama"), ModelParams(name="llama", random_init=TinySpec())
    return load_tokenizer(family, params, resolve_checkpoint(family, params))


DOCUMENTS = [
    "The river ran past the mill and on to the sea.",
    "A short one.",
    "Bread, salt and water were all the travellers carried over the pass that winter. " * 3,
    "Counting stars is slow work.",
]


def block_task(tokenizer, block_size: int, **data):
    from framework.core.registry import MODELS, TASKS

    entry = TASKS.get("causal_lm")
    config = DataConfig(name="files", block_size=block_size, max_length=16, **data)
    return entry(
        entry.Params(name="causal_lm", format="text"), config, tokenizer, MODELS.get("llama")
    )


def expected_stream(tokenizer, documents):
    """Each document's tokens (as the tokenizer encodes it) followed by the end-of-document token."""
    ids = []
    for text in documents:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    return ids


@pytest.mark.parametrize("block_size", [8, 16, 37])
def test_blocks_are_block_size_tokens_with_eos_between_documents(tokenizer, block_size):
    import datasets

    task = block_task(tokenizer, block_size)
    split = datasets.Dataset.from_list([{"text": t} for t in DOCUMENTS])
    task.check_columns({"train": split}, lambda s: "test data")
    blocks = task.tokenize({"train": split})["train"]
    joined = expected_stream(tokenizer, DOCUMENTS)
    assert len(blocks) == len(joined) // block_size  # only the tail shorter than a block goes
    for index, block in enumerate(blocks):
        assert len(block["input_ids"]) == block_size
        assert block["input_ids"] == joined[index * block_size : (index + 1) * block_size]
        assert block["labels"] == block["input_ids"]  # loss on every token
    # Documents are not cut at data.max_length=16 (a document of ~50 tokens spans blocks), and
    # every end of a document inside the blocks is an eos token.
    flat = [t for block in blocks for t in block["input_ids"]]
    assert flat == joined[: len(flat)]
    ends = [i for i, t in enumerate(flat) if t == tokenizer.eos_token_id]
    assert len(ends) == sum(
        1 for i, t in enumerate(joined[: len(flat)]) if t == tokenizer.eos_token_id
    )
    assert len(ends) >= 2


def test_blocks_from_txt_parquet_and_a_stream(tokenizer, tmp_path):
    from framework.core.registry import DATASETS
    from framework.data.loading import load_raw_splits
    from framework.data.sources import FilesParams

    (tmp_path / "corpus.txt").write_text("\n\n".join(DOCUMENTS) + "\n")
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCUMENTS))
    import datasets

    datasets.Dataset.from_list([{"text": t} for t in DOCUMENTS]).to_parquet(
        str(tmp_path / "corpus.parquet")
    )
    cases = {
        "txt (a document per paragraph)": (
            FilesParams(train=str(tmp_path / "corpus.txt"), sample_by="paragraph"),
            False,
        ),
        "parquet": (FilesParams(train=str(tmp_path / "corpus.parquet")), False),
        "jsonl, streamed": (FilesParams(train=str(jsonl)), True),
    }
    for case, (params, streaming) in cases.items():
        task = block_task(tokenizer, 8, streaming=streaming, max_eval_examples=1)
        raw = load_raw_splits(
            DATASETS.get("files"),
            DataConfig(
                name="files", streaming=streaming, max_eval_examples=1, validation_split=0.25
            ),
            params,
        )
        train = raw.splits["train"]
        documents = [row["text"] for row in train]  # the training documents, in reading order
        held = raw.splits["validation"]
        assert len(documents) + len(held) == len(DOCUMENTS), case  # a document per row
        task.check_columns({"train": train}, lambda s, where=case: where)
        blocks = list(task.tokenize({"train": train})["train"])
        assert blocks and all(len(b["input_ids"]) == 8 for b in blocks), case
        flat = [t for b in blocks for t in b["input_ids"]]
        assert flat == expected_stream(tokenizer, documents)[: len(flat)], case
        if streaming:  # a stream holds out its first rows and keeps the order of the rest
            assert documents == DOCUMENTS[1:], case


def test_block_size_refusals_name_the_key():
    from framework.config.path import load_run
    from framework.core.errors import UserError

    with pytest.raises(UserError) as caught:
        load_run("sft_tiny_llama_lora", ["data.block_size=4", "task.format=messages"])
    text = str(caught.value)
    assert "data.block_size=4: must be at least 8 tokens" in text
    assert "data.block_size=4: continued pretraining cuts `text` documents" in text
    with pytest.raises(UserError, match=r"data.block_size=64: task=seq_cls does not cut text"):
        load_run("seq_cls_tiny_bert_lora", ["data.block_size=64"])
