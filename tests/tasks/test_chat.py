"""Chat data for SFT: TRL's dataset shapes, real chat templates, assistant-only labels.

The templates below are the real ones of SmolLM2 (ChatML), Llama 3, Gemma and Mistral, written out
as strings; their markers are added to a tiny BPE tokenizer as special tokens, as the real
tokenizers have them. For each, the labels cover exactly every assistant turn's content plus the
template's own end-of-turn token, and truncation never leaves a turn half in the loss.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from framework.core.errors import UserError
from framework.core.params import DataConfig
from framework.core.plugins import load_all
from framework.core.registry import MODELS, TASKS
from framework.tasks.chat import IGNORE_INDEX
from tests.helpers import train_recipe, write_jsonl

load_all()

SMOLLM2 = (  # SmolLM2-135M-Instruct's template (ChatML with a default system turn)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (  # Llama 3.x Instruct, without the tool-calling branches
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (  # Mistral-7B-Instruct v0.1/v0.2
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
# ChatML whose assistant turns are marked for transformers' return_assistant_tokens_mask.
CHATML_GENERATION = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TEMPLATES = {  # name -> (template, its end-of-turn token, its markers as special tokens)
    "chatml_smollm2": (SMOLLM2, "<|im_end|>", []),
    "llama3": (LLAMA3, "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "gemma": (GEMMA, "<end_of_turn>", ["<start_of_turn>", "<end_of_turn>"]),
    "mistral": (MISTRAL, "</s>", ["[INST]", "[/INST]"]),
}
CHAT = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Spain?"},
    {"role": "assistant", "content": "Madrid, on the Manzanares river."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome. Ask me anything else."},
]


def with_template(tokenizer: Any, name: str) -> Any:
    template, _, markers = TEMPLATES[name]
    tokenizer = copy.deepcopy(tokenizer)
    if markers:
        tokenizer.add_special_tokens({"additional_special_tokens": markers})
    tokenizer.chat_template = template
    return tokenizer


def make_task(
    tokenizer: Any,
    max_length: int = 512,
    truncation: bool = True,
    columns: dict[str, str] = None,
    **params: Any,
) -> Any:
    entry = TASKS.get("causal_lm")
    task_params = entry.Params(name="causal_lm", **params)
    data = DataConfig(
        name="files", max_length=max_length, truncation=truncation, columns=columns or {}
    )
    return entry(task_params, data, tokenizer, MODELS.get("llama"))


def label_runs(example: dict[str, list[int]]) -> list[list[int]]:
    """Contiguous runs of labelled positions (their token ids)."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def encode_messages(task: Any, turns: list[dict[str, str]]) -> dict[str, Any]:
    task.format = "messages"
    return task.encode_conversation(task.conversation({"messages": turns}, "test row"))


# ---- labels under real templates -------------------------------------------------------------
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_labels_are_exactly_the_assistant_turns_and_their_end_token(
    name: str, base_tokenizer
) -> None:
    tokenizer = with_template(base_tokenizer, name)
    end = TEMPLATES[name][1]
    example = encode_messages(make_task(tokenizer), CHAT)
    runs = label_runs(example)
    answers = [t["content"] for t in CHAT if t["role"] == "assistant"]
    assert [tokenizer.decode(run).strip() for run in runs] == [a + end for a in answers]
    assert all(tokenizer.convert_ids_to_tokens(run[-1]) == end for run in runs)  # one token
    # what is not labelled is everything else: the user turns, headers, BOS, newlines
    unlabelled = tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]
    )
    assert "capital of France" in unlabelled and "Paris" not in unlabelled


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_train_on_last_assistant_and_all(name: str, base_tokenizer) -> None:
    tokenizer = with_template(base_tokenizer, name)
    last = encode_messages(make_task(tokenizer, train_on="last_assistant"), CHAT)
    assert [tokenizer.decode(r).strip() for r in label_runs(last)] == [
        CHAT[-1]["content"] + TEMPLATES[name][1]
    ]
    everything = encode_messages(make_task(tokenizer, train_on="all"), CHAT)
    assert everything["labels"] == everything["input_ids"]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_truncation_never_leaves_a_turn_half_in_the_loss(name: str, base_tokenizer) -> None:
    """At every cut, each assistant turn is either wholly labelled (content + end token) or wholly
    out of the loss, and the turns the cut reaches are counted."""
    tokenizer = with_template(base_tokenizer, name)
    full = encode_messages(make_task(tokenizer), CHAT)
    turns, start = [], None  # [start, end) of each labelled turn in the untruncated example
    for position, label in enumerate(full["labels"] + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            turns.append((start, position))
            start = None
    assert len(turns) == 3
    for max_length in range(8, len(full["input_ids"]) + 1):
        cut = encode_messages(make_task(tokenizer, max_length=max_length), CHAT)
        assert cut["input_ids"] == full["input_ids"][:max_length]
        for begin, end in turns:
            labels = cut["labels"][begin : min(end, max_length)]
            if end <= max_length:
                assert labels == full["input_ids"][begin:end], (max_length, begin, end)
            else:
                assert all(label == IGNORE_INDEX for label in labels), (max_length, begin, end)
        assert cut["cut_turns"] == sum(end > max_length for _, end in turns), max_length


def test_generation_tags_use_the_template_s_own_assistant_mask(base_tokenizer, monkeypatch) -> None:
    from framework.tasks import chat

    tokenizer = copy.deepcopy(base_tokenizer)
    tokenizer.chat_template = CHATML_GENERATION

    def not_used(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("prefix-diff rendering used despite {% generation %}")

    monkeypatch.setattr(chat, "assistant_spans", not_used)
    example = encode_messages(make_task(tokenizer), CHAT)
    mask = tokenizer.apply_chat_template(
        CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )["assistant_masks"]
    assert [label != IGNORE_INDEX for label in example["labels"]] == [bool(m) for m in mask]
    assert [tokenizer.decode(r) for r in label_runs(example)] == [
        t["content"] + "<|im_end|>" for t in CHAT if t["role"] == "assistant"
    ]


# ---- dataset shapes -----------------------------------------------------------------------------
def tokenized(task: Any, rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    splits = {"train": Dataset.from_list(rows)}
    task.check_columns(splits, lambda split: "test data")
    return task.tokenize(splits)["train"]


def test_shapes_are_picked_by_their_columns(base_tokenizer) -> None:
    tokenizer = with_template(base_tokenizer, "chatml_smollm2")
    answer = "Paris.<|im_end|>"
    pair = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    cases = {
        "messages": [{"messages": pair}],
        "prompt_completion": [{"prompt": "Capital of France?", "completion": "Paris."}],
        "response": [{"prompt": "Capital of France?", "response": "Paris."}],
        "conversational prompt_completion": [{"prompt": pair[:1], "completion": pair[1:]}],
    }
    for case, rows in cases.items():
        task = make_task(tokenizer)
        data = tokenized(task, rows)
        assert task.format == ("messages" if case == "messages" else "prompt_completion"), case
        assert [tokenizer.decode(r) for r in label_runs(data[0])] == [answer], case
    task = make_task(tokenizer)
    data = tokenized(task, [{"text": "The capital of France is Paris."}])
    assert task.format == "text" and data[0]["labels"] == data[0]["input_ids"]


def test_sharegpt_conversations_through_a_column_mapping(base_tokenizer) -> None:
    tokenizer = with_template(base_tokenizer, "chatml_smollm2")
    task = make_task(tokenizer, columns={"messages": "conversations"})
    data = tokenized(
        task,
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello!"},
                    {"from": "human", "value": "Bye"},
                    {"from": "gpt", "value": "Goodbye."},
                ]
            }
        ],
    )
    assert [tokenizer.decode(r) for r in label_runs(data[0])] == [
        "Hello!<|im_end|>",
        "Goodbye.<|im_end|>",
    ]
    assert "<|im_start|>system\nBe brief." in tokenizer.decode(data[0]["input_ids"])


def test_conversational_prompt_completion_trains_the_completion_only(base_tokenizer) -> None:
    tokenizer = with_template(base_tokenizer, "chatml_smollm2")
    data = tokenized(make_task(tokenizer), [{"prompt": CHAT[:3], "completion": CHAT[3:4]}])
    assert [tokenizer.decode(r) for r in label_runs(data[0])] == [CHAT[3]["content"] + "<|im_end|>"]


def test_bad_rows_and_missing_columns_are_named(base_tokenizer) -> None:
    tokenizer = with_template(base_tokenizer, "chatml_smollm2")
    with pytest.raises(
        UserError,
        match=r"task.format=auto: no chat columns .*\['question'\].*"
        r"data.columns.messages=conversations",
    ):
        tokenized(make_task(tokenizer), [{"question": "x"}])
    with pytest.raises(UserError, match=r"row 0 of the data: unknown role 'robot'"):
        tokenized(make_task(tokenizer), [{"messages": [{"role": "robot", "content": "x"}]}])
    gemma = with_template(base_tokenizer, "gemma")
    with pytest.raises(
        UserError, match="the chat template refused the conversation: System role not supported"
    ):
        tokenized(make_task(gemma, system_prompt="Be brief."), [{"messages": CHAT[:2]}])


# ---- no template: TRL's conventions for strings ----------------------------------------------
def test_without_a_template_strings_are_plain_text_and_turns_need_one(
    base_tokenizer, caplog
) -> None:
    """TRL's standard prompt-completion: plain strings and no chat template give prompt +
    completion + eos with no extra key (the log says so); lists of turns need a template."""
    bare = copy.deepcopy(base_tokenizer)
    bare.chat_template = None
    rows = [{"prompt": "Capital of France?", "completion": "Paris."}]
    with caplog.at_level("INFO", logger="ft"):
        plain = tokenized(make_task(bare), rows)[0]
    assert bare.decode(plain["input_ids"]) == "<s>Capital of France?Paris.</s>"
    assert bare.decode(label_runs(plain)[0]) == "Paris.</s>"
    assert "plain text: prompt + completion + eos (no chat template" in caplog.text
    explicit = tokenized(make_task(copy.deepcopy(bare), chat_template="none"), rows)[0]
    assert explicit == plain
    chatml = make_task(copy.deepcopy(bare), chat_template="chatml")
    assert [bare.decode(r) for r in label_runs(tokenized(chatml, rows)[0])] == ["Paris.<|im_end|>"]
    fix = r"has no chat template, and the data's rows are conversational.*task.chat_template=chatml"
    with pytest.raises(UserError, match=fix):
        tokenized(make_task(bare), [{"messages": CHAT[:2]}])
    with pytest.raises(UserError, match=fix):
        tokenized(make_task(bare), [{"prompt": CHAT[:1], "completion": CHAT[1:2]}])


def test_unknown_chat_template_is_refused_at_validation() -> None:
    from framework.config.path import load_run

    with pytest.raises(UserError, match=r"task.chat_template=chatlm: not a template; use null"):
        load_run("sft_tiny_llama_lora", ["task.chat_template=chatlm"])


# ---- generation with the same template --------------------------------------------------------
class ScriptedModel:
    """generate() answers every prompt with the same scripted tokens (no weights involved)."""

    def __init__(self, answer_ids: list[int]):
        self.answer_ids = answer_ids
        self.prompts: list[str] = []

    def generate(
        self,
        input_ids: Any,
        attention_mask: Any,
        max_new_tokens: int,
        eos_token_id: Any,
        **kwargs: Any,
    ) -> Any:
        import torch

        answer = torch.tensor([self.answer_ids[:max_new_tokens]] * input_ids.shape[0])
        self.eos = eos_token_id
        return torch.cat([input_ids, answer], dim=1)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_generation_renders_the_template_and_stops_at_its_end_token(
    name: str, base_tokenizer
) -> None:
    tokenizer = with_template(base_tokenizer, name)
    end = TEMPLATES[name][1]
    task = make_task(tokenizer, max_new_tokens=12)
    task.format = "messages"
    end_id = tokenizer.convert_tokens_to_ids(end)
    assert end_id in task.end_of_turn_ids()
    context = CHAT[:3]
    assert task.prompt_text(context) == tokenizer.apply_chat_template(
        context, tokenize=False, add_generation_prompt=True
    )
    words = tokenizer("Madrid", add_special_tokens=False)["input_ids"]
    model = ScriptedModel(
        words + [end_id] + tokenizer("junk after", add_special_tokens=False)["input_ids"]
    )
    finished = task.generate_turns(model, [context], "cpu")[0]
    assert finished == {"generated": "Madrid", "ended_turn": True} and end_id in model.eos
    unfinished = task.generate_turns(ScriptedModel(words * 12), [context], "cpu")[0]
    assert unfinished["ended_turn"] is False
    assert task.predict(model, [{"messages": CHAT[:4]}], "cpu") == [{"generated": "Madrid"}]


@pytest.mark.slow
def test_tiny_chat_run_scores_generations_and_predicts_with_its_template(
    tmp_path: Path, one_torch_thread
) -> None:
    """A multi-turn run end to end on the tiny Llama: the format is saved with the adapter, eval
    reports generation metrics, and `ft predict` answers a conversation."""
    from framework.cli.app import main

    run_dir = train_recipe(
        "sft_tiny_llama_lora",
        "data=chatterbot_chat",
        "train.max_steps=2",
        "data.max_train_examples=16",
        "data.max_eval_examples=4",
        "task.generate_eval=true",
        "task.max_new_tokens=4",
        output_root=tmp_path / "out",
    )
    assert json.loads((run_dir / "adapter" / "ft_task.json").read_text())["format"] == "messages"
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert {"exact_match", "rougeL", "ended_turn"} <= set(final) and 0 <= final["ended_turn"] <= 1
    rows = write_jsonl(tmp_path / "in.jsonl", [{"messages": CHAT[:3]}, {"prompt": "Hello?"}])
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(run_dir), "--input", str(rows), "--output", str(out)]) == 0
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predictions) == 2 and all(isinstance(p["generated"], str) for p in predictions)
