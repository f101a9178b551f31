"""Tool calling in chat SFT, and labels found from one rendering per conversation.

The two templates below are written the way Qwen2.5-Instruct's and Llama 3.1-Instruct's render
tools: Qwen2.5 lists the tools in its system turn, writes each call as a <tool_call> JSON block in
the assistant turn and the results as <tool_response> blocks in a user turn; Llama 3.1 puts the
tools in the first user turn, writes a call as bare JSON ("parameters") and results in an
`ipython` turn. Their markers are special tokens of a tiny BPE tokenizer, as in the real ones.
Expected label texts are written out by hand.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from framework.tasks import chat
from framework.tasks.chat import IGNORE_INDEX
from tests.tasks.test_chat import (
    CHAT,
    TEMPLATES,
    label_runs,
    make_task,
    tokenized,
    with_template,
)

QWEN25_TOOLS = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}
    {%- else %}{{- 'You are Qwen, a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions.\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools>\\n\\nReturn each call as <tool_call></tool_call> JSON.<|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}{{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
          or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.index0 == 0 or messages[loop.index0 - 1].role != "tool" %}
            {{- '<|im_start|>user' }}{%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != "tool" %}{{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

LLAMA31_TOOLS = """\
{{- bos_token }}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}
{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n" }}
{{- system_message }}{{- "<|eot_id|>" }}
{%- if tools is not none %}
    {%- set first_user_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, respond with a JSON for a function call.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
    {{- first_user_message + "<|eot_id|>" }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
            + message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", "parameters": ' }}
        {{- tool_call.arguments | tojson }}{{- "}" }}{{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

TOOL_TEMPLATES = {  # name -> (template, end-of-turn token, markers as special tokens)
    "qwen2_5": (QWEN25_TOOLS, "<|im_end|>", ["<tool_call>", "</tool_call>"]),
    "llama3_1": (
        LLAMA31_TOOLS,
        "<|eot_id|>",
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    ),
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def call(city: str, **more: str) -> dict[str, Any]:
    """An OpenAI-style call: arguments as a JSON string, as most tool datasets store them."""
    return {
        "id": f"call_{city}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city, **more})},
    }


TOOL_CHAT = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [call("Paris")]},
    {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_Paris"},
    {"role": "assistant", "content": "It is 18C and sunny in Paris."},
    {"role": "user", "content": "And in Rome, in celsius?"},
    {"role": "assistant", "content": None, "tool_calls": [call("Rome", unit="celsius")]},
    {"role": "tool", "content": "21C", "tool_call_id": "call_Rome"},
    {"role": "assistant", "content": "Rome: 21C."},
]
EXPECTED_LABELS = {  # the assistant turns' content and call markup, and the end-of-turn token
    "qwen2_5": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>",
        "It is 18C and sunny in Paris.<|im_end|>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}'
        "\n</tool_call><|im_end|>",
        "Rome: 21C.<|im_end|>",
    ],
    "llama3_1": [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
        "It is 18C and sunny in Paris.<|eot_id|>",
        '{"name": "get_weather", "parameters": {"city": "Rome", "unit": "celsius"}}<|eot_id|>',
        "Rome: 21C.<|eot_id|>",
    ],
}


def tool_task(tokenizer: Any, **params: Any) -> Any:
    """A causal_lm task with room for the tools' JSON (the tiny BPE spends a token per symbol)."""
    return make_task(tokenizer, max_length=4096, **params)


def with_tool_template(tokenizer: Any, name: str) -> Any:
    template, _, markers = TOOL_TEMPLATES[name]
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": markers})
    tokenizer.chat_template = template
    return tokenizer


def unlabelled_text(tokenizer: Any, example: dict[str, list[int]]) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]
    )


# ---- Must show 4: labels are the assistant's text and calls, never the tool results ----------
@pytest.mark.parametrize("name", list(TOOL_TEMPLATES))
def test_tool_calls_are_labelled_and_tool_results_are_not(name: str, base_tokenizer) -> None:
    """Rows as tool datasets store them (JSON Lines into Arrow): `tools` a JSON string, calls
    with JSON-string arguments, `content: null` on call turns, keys absent on other turns."""
    tokenizer = with_tool_template(base_tokenizer, name)
    row = {"messages": TOOL_CHAT, "tools": json.dumps([WEATHER_TOOL])}
    example = tokenized(tool_task(tokenizer), [row])[0]
    assert [tokenizer.decode(run) for run in label_runs(example)] == EXPECTED_LABELS[name]
    rest = unlabelled_text(tokenizer, example)
    assert '"name": "get_weather"' in rest and '"description": "The weather' in rest  # the tools
    assert "18C and sunny" in rest and "21C" in rest  # the tool results, unlabelled
    # the template saw exactly what apply_chat_template(tools=...) would render for these turns
    turns = chat.normalize_turns(TOOL_CHAT, "test")
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(
        turns, tools=[WEATHER_TOOL], tokenize=False
    )


def test_task_tools_serve_rows_without_their_own(base_tokenizer) -> None:
    tokenizer = with_tool_template(base_tokenizer, "qwen2_5")
    task = tool_task(tokenizer, tools=[WEATHER_TOOL])
    example = tokenized(task, [{"messages": TOOL_CHAT}])[0]
    assert [tokenizer.decode(run) for run in label_runs(example)] == EXPECTED_LABELS["qwen2_5"]
    assert '"name": "get_weather", "description"' in unlabelled_text(tokenizer, example)


def test_a_call_with_text_labels_both(base_tokenizer) -> None:
    tokenizer = with_tool_template(base_tokenizer, "qwen2_5")
    turns = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call("Oslo")]},
    ]
    example = tokenized(tool_task(tokenizer, tools=[WEATHER_TOOL]), [{"messages": turns}])[0]
    assert [tokenizer.decode(run) for run in label_runs(example)] == [
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        "</tool_call><|im_end|>"
    ]


def test_sharegpt_function_call_and_observation_turns(base_tokenizer) -> None:
    """LLaMA-Factory's ShareGPT tool rows: function_call (the call as JSON) and observation."""
    tokenizer = with_tool_template(base_tokenizer, "qwen2_5")
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {
                "from": "function_call",
                "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}',
            },
            {"from": "observation", "value": "18C and sunny"},
            {"from": "gpt", "value": "It is 18C and sunny in Paris."},
        ],
        "tools": json.dumps([WEATHER_TOOL]),
    }
    example = tokenized(tool_task(tokenizer, columns={"messages": "conversations"}), [row])[0]
    assert [tokenizer.decode(run) for run in label_runs(example)] == EXPECTED_LABELS["qwen2_5"][:2]


# ---- ft predict renders tools the same way -----------------------------------------------------
class RecordingModel:
    """generate() answers with scripted tokens and keeps the prompts' token ids (no weights)."""

    def __init__(self, answer_ids: list[int]):
        self.answer_ids = answer_ids
        self.inputs: list[list[int]] = []

    def generate(self, input_ids: Any, attention_mask: Any, max_new_tokens: int, **kw: Any) -> Any:
        import torch

        self.inputs += [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
        answer = torch.tensor([self.answer_ids[:max_new_tokens]] * input_ids.shape[0])
        return torch.cat([input_ids, answer], dim=1)


@pytest.mark.parametrize("name", list(TOOL_TEMPLATES))
def test_prediction_prompts_render_the_tools_as_training_does(name: str, base_tokenizer) -> None:
    tokenizer = with_tool_template(base_tokenizer, name)
    task = tool_task(tokenizer, tools=[WEATHER_TOOL], max_new_tokens=4)
    task.format = "messages"
    context = chat.normalize_turns(TOOL_CHAT[:4], "test")
    expected = tokenizer.apply_chat_template(
        context, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True
    )
    assert task.prompt_text(TOOL_CHAT[:4]) == expected
    # the prompt is what training renders before that assistant turn
    row = {"messages": TOOL_CHAT[:5], "tools": json.dumps([WEATHER_TOOL])}
    trained = tokenizer.decode(tokenized(tool_task(tokenizer), [row])[0]["input_ids"])
    assert trained.startswith(expected)
    model = RecordingModel(tokenizer("sunny", add_special_tokens=False)["input_ids"])
    other_tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    rows = [{"messages": TOOL_CHAT[:4]}, {"messages": TOOL_CHAT[:2], "tools": [other_tool]}]
    task.predict(model, rows, "cpu")
    prompts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in model.inputs]
    assert "get_weather" in prompts[0] and "get_time" not in prompts[0]
    assert "get_time" in prompts[1] and "get_weather" not in prompts[1]


# ---- labels from one rendering: the same spans as prefix-diff, linear in the turns -------------
def tool_free(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in turns if t["role"] != "tool" and not t.get("tool_calls")]


CASES = [(name, "chat") for name in TEMPLATES] + [(name, "tools") for name in TOOL_TEMPLATES]


@pytest.mark.parametrize("name,kind", CASES)
def test_one_rendering_gives_the_spans_of_prefix_diff(name: str, kind: str, base_tokenizer) -> None:
    if kind == "tools":
        tokenizer = with_tool_template(base_tokenizer, name)
        conversation = chat.Conversation(
            chat.normalize_turns(TOOL_CHAT, "test"), tools=[WEATHER_TOOL]
        )
    else:
        tokenizer = with_template(base_tokenizer, name)
        conversation = chat.Conversation(chat.normalize_turns(CHAT, "test"))
    full = chat.render(tokenizer, conversation.turns, False, "test", conversation.tools)
    reference = chat.prefix_diff_spans(tokenizer, conversation, full, "test")
    markers = chat.turn_markers(tokenizer)
    one_pass = chat.header_spans(conversation, full, markers)
    if name == "mistral":  # no generation header: it falls back to prefix-diff, same result
        assert markers.header == "" and one_pass is None
    else:
        assert one_pass == reference and len(reference) == 4 - (kind == "chat")
    assert chat.assistant_spans(tokenizer, conversation, full, "test", markers) == reference


def test_labels_cost_one_render_per_conversation(base_tokenizer, monkeypatch) -> None:
    """A 200-turn conversation is rendered once (prefix-diff would render it 200 times)."""
    tokenizer = with_template(base_tokenizer, "llama3")
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} says {i * 7}"}
        for i in range(200)
    ]
    renders = []
    real_render = chat.render
    monkeypatch.setattr(chat, "render", lambda *a, **k: renders.append(1) or real_render(*a, **k))
    task = make_task(tokenizer, max_length=100_000)
    task.format = "messages"
    example = task.encode_conversation(task.conversation({"messages": turns}, "test"))
    assert len(renders) == 1
    runs = [tokenizer.decode(run) for run in label_runs(example)]
    assert runs == [f"turn {i} says {i * 7}<|eot_id|>" for i in range(1, 200, 2)]


def test_a_template_that_rewrites_turns_falls_back_to_prefix_diff(base_tokenizer) -> None:
    """A template that drops earlier assistant turns' reasoning (as Qwen3's does): the one-pass
    reading cannot place every turn, so prefix-diff decides, and labels stay right."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'].split('</think>')[-1] }}"
        "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer = copy.deepcopy(base_tokenizer)
    tokenizer.chat_template = template
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>greet</think>Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    conversation = chat.Conversation(chat.normalize_turns(turns, "test"))
    full = chat.render(tokenizer, conversation.turns, False, "test")
    assert chat.header_spans(conversation, full, chat.turn_markers(tokenizer)) is None
    task = tool_task(tokenizer, train_on="last_assistant")
    task.format = "messages"
    example = task.encode_conversation(conversation)
    assert [tokenizer.decode(run) for run in label_runs(example)] == ["Goodbye.<|im_end|>"]


def test_tool_rows_that_are_malformed_are_named(base_tokenizer) -> None:
    from framework.core.errors import UserError

    tokenizer = with_tool_template(base_tokenizer, "qwen2_5")
    bad_tools = {"messages": TOOL_CHAT[:2], "tools": "[{not json"}
    with pytest.raises(UserError, match=r"row 0 of the data: tools is a string but not JSON"):
        tokenized(tool_task(tokenizer), [bad_tools])
    nameless = [{"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]}]
    with pytest.raises(UserError, match=r"row 0 of the data: a tool call needs a function name"):
        tokenized(tool_task(tokenizer), [{"messages": TOOL_CHAT[:2] + nameless}])
