"""Chat data for SFT: the dataset shapes users bring (TRL's conventions), rendered with the
tokenizer's own chat template, with labels on exactly the assistant tokens.

Shapes (task.format, or picked by the columns present):
  messages           a list of {role, content} turns, multi-turn, optional system turn; ShareGPT's
                     {from, value} turns (human/gpt/system, function_call/observation) are accepted
  prompt_completion  `prompt` and `completion` (or `response`) strings, or lists of turns
  text               plain text, every token trained (language modelling)

Tool calling (transformers' convention for apply_chat_template): a row's `tools` (a list of JSON
schemas, or that list as a JSON string) or task.tools for every row; assistant turns may carry
`tool_calls` ([{type: function, function: {name, arguments}}], arguments a mapping or a JSON
string) and `tool` turns hold the results. The template renders all of it; the labels cover the
assistant turns (their text and their call markup), never the tool results.

Labels: the template's own assistant masks where it marks them with `{% generation %}`;
otherwise the conversation is rendered once and each assistant turn spans from the template's
assistant header (what add_generation_prompt appends) to its end-of-turn marker (<|im_end|>,
<|eot_id|>, <end_of_turn>, ...), the whitespace around them left out: one render per
conversation, linear in its turns. Where that reading cannot be checked against the rendered
text (a template without a generation header or an end marker, or one that rewrites turns), the
spans come from prefix-diff rendering, which works for any template: assistant turn i spans what
render(turns[:i+1]) adds to render(turns[:i], add_generation_prompt=True); that costs one render
per assistant turn (quadratic in the turns). Tokens overlapping a span are labelled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError

IGNORE_INDEX = -100  # label value the loss skips

# ft's explicit fallback for tokenizers without a template (task.chat_template=chatml).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML}
NO_TEMPLATE = "none"  # prompt + completion + eos, no chat markup (TRL's plain prompt-completion)

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
    "observation": "tool",  # ShareGPT (LLaMA-Factory): a tool's result
    "function_call": "assistant",  # ShareGPT (LLaMA-Factory): value is the call as JSON
}
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
TURN_KEYS = ("name", "tool_call_id")  # kept on a turn when present (tool results name their call)


@dataclass
class Conversation:
    """Normalised turns; assistant turns from index `first_trained` on are the ones to learn.
    `tools`: the JSON schemas passed to the template (None: no tools)."""

    turns: list[dict[str, Any]]
    first_trained: int = 0
    tools: list[dict[str, Any]] | None = None

    def assistant_indices(self) -> list[int]:
        return [
            i
            for i, t in enumerate(self.turns)
            if t["role"] == "assistant" and i >= self.first_trained
        ]


def without_nulls(value: Any) -> Any:
    """Mappings without their null values, recursively: a column read from JSON Lines into Arrow
    has one schema for all rows, which fills the keys a row lacks with null (a tool's parameters,
    a call's arguments, `tool_calls` on turns without calls)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [without_nulls(v) for v in value]
    return value


def _json(value: Any, where: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        message = f"{where}: {what} is a string but not JSON ({error.msg}): {value[:60]!r}"
    raise UserError(message)


def normalize_tools(value: Any, where: str) -> list[dict[str, Any]] | None:
    """A row's or task's tools (a list of JSON schemas, or that list as a JSON string) -> the list
    apply_chat_template(tools=...) takes; None when there are none (templates render tool
    boilerplate for an empty list)."""
    tools = without_nulls(_json(value, where, "tools"))
    if not tools:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise UserError(
            f"{where}: tools must be a list of JSON schemas ({{type: function, function: "
            f"{{name, description, parameters}}}}), got {str(value)[:60]!r}"
        )
    return tools


def normalize_call(call: Any, where: str) -> dict[str, Any]:
    """One tool call as transformers' templates read it: {type, function: {name, arguments}}
    with arguments a mapping (a JSON string is parsed); an OpenAI `id` is kept."""
    call = without_nulls(_json(call, where, "a tool call"))
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise UserError(
            f"{where}: a tool call needs a function name ({{type: function, function: {{name, "
            f"arguments}}}}), got {str(call)[:60]!r}"
        )
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # not JSON: the template renders the string as it is
    normalized = {
        "type": "function",
        "function": {"name": str(function["name"]), "arguments": arguments},
    }
    if call.get("id") is not None:
        normalized["id"] = str(call["id"])
    return normalized


def normalize_turn(turn: Any, where: str) -> dict[str, Any]:
    """One {role, content} (or ShareGPT {from, value}) turn -> {role, content[, tool_calls,
    name, tool_call_id]}."""
    if not isinstance(turn, dict):
        raise UserError(
            f"{where}: a turn must be a mapping with role/content (or from/value), "
            f"got {str(turn)[:60]!r}"
        )
    role = turn.get("role", turn.get("from"))
    content = turn.get("content", turn.get("value"))
    calls = turn.get("tool_calls")
    if str(role).lower() == "function_call":  # ShareGPT: the value is the call (or calls)
        parsed = _json(content, where, "a function_call turn's value")
        calls, content = (parsed if isinstance(parsed, list) else [parsed]), ""
    if role is None or (content is None and not calls):
        raise UserError(
            f"{where}: a turn needs 'role' and 'content' (or ShareGPT 'from' and "
            f"'value'); it has keys {sorted(k for k, v in turn.items() if v is not None)}"
        )
    normalized_role = ROLE_ALIASES.get(str(role).lower())
    if normalized_role is None:
        raise UserError(
            f"{where}: unknown role '{role}'; use one of system, user, assistant, tool "
            f"(ShareGPT: system, human, gpt, function_call, observation)"
        )
    out: dict[str, Any] = {"role": normalized_role, "content": "" if content is None else content}
    if not isinstance(out["content"], str):  # a tool's result given as JSON
        out["content"] = json.dumps(out["content"])
    if calls:
        if normalized_role != "assistant":
            raise UserError(f"{where}: a {role} turn has tool_calls; only assistant turns call")
        out["tool_calls"] = [normalize_call(c, where) for c in calls]
    for key in TURN_KEYS:
        if turn.get(key) is not None:
            out[key] = str(turn[key])
    return out


def normalize_turns(value: Any, where: str) -> list[dict[str, Any]]:
    """A list of turns -> [{role, content, ...}, ...]."""
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(
            f"{where}: expected a non-empty list of turns ({{role, content}}), got "
            f"{str(value)[:60]!r}"
        )
    return [normalize_turn(turn, where) for turn in value]


def conversation_of(
    row: dict[str, Any],
    form: str,
    columns: dict[str, str],
    system_prompt: str | None,
    where: str,
    tools: list[dict[str, Any]] | None = None,
) -> Conversation:
    """One data row as a Conversation, per the dataset shape. `tools` (normalised): the task's
    tools, for a row whose own `tools` column is absent or empty."""
    if form == "messages":
        conversation = Conversation(normalize_turns(row[columns["messages"]], where))
    else:
        prompt, completion = row[columns["prompt"]], row[columns["completion"]]
        before = (
            normalize_turns(prompt, where)
            if isinstance(prompt, (list, tuple))
            else [{"role": "user", "content": str(prompt)}]
        )
        after = (
            normalize_turns(completion, where)
            if isinstance(completion, (list, tuple))
            else [{"role": "assistant", "content": str(completion)}]
        )
        conversation = Conversation(before + after, first_trained=len(before))
    conversation.tools = normalize_tools(row.get(columns.get("tools", "tools")), where) or tools
    if system_prompt and conversation.turns[0]["role"] != "system":
        conversation.turns.insert(0, {"role": "system", "content": system_prompt})
        conversation.first_trained += 1 if form != "messages" else 0
    return conversation


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def render(
    tokenizer: Any,
    turns: Sequence[dict[str, Any]],
    generation_prompt: bool,
    where: str,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The tokenizer's chat template applied to turns (and tools), as text."""
    try:
        return tokenizer.apply_chat_template(
            list(turns), tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as error:
        raise UserError(
            f"{where}: the chat template refused the conversation: {_first_line(error)}"
        ) from None


@dataclass(frozen=True)
class TurnMarkers:
    """What a template writes around an assistant turn: `header`, the text add_generation_prompt
    appends (e.g. '<|im_start|>assistant\\n'), and `end`, the end-of-turn marker after the
    content (e.g. '<|im_end|>'); '' where the template has none."""

    header: str
    end: str


def turn_markers(tokenizer: Any) -> TurnMarkers:
    """The template's assistant header and end-of-turn marker, found by rendering a probe."""
    probe = [{"role": "user", "content": "ping"}]
    try:
        bare = tokenizer.apply_chat_template(probe, tokenize=False)
        prompted = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:
        return TurnMarkers("", end_of_turn(tokenizer))
    header = prompted[len(bare) :] if prompted.startswith(bare) else ""
    return TurnMarkers(header, end_of_turn(tokenizer))


def _stripped(full: str, start: int, end: int) -> tuple[int, int]:
    text = full[start:end]
    return start + len(text) - len(text.lstrip()), end - (len(text) - len(text.rstrip()))


def _content_positions(full: str, turns: Sequence[dict[str, Any]]) -> list[int] | None:
    """Where each turn's (stripped) content starts in the rendered text, found in turn order; -1
    for an empty content; None when one is not found (a template that rewrites turns)."""
    positions, cursor = [], 0
    for turn in turns:
        content = str(turn.get("content") or "").strip()
        if not content:
            positions.append(-1)
            continue
        found = full.find(content, cursor)
        if found < 0:
            return None
        positions.append(found)
        cursor = found + len(content)
    return positions


def header_spans(
    conversation: Conversation, full: str, markers: TurnMarkers
) -> list[tuple[int, int]] | None:
    """Spans of the trained assistant turns from one rendering: each runs from the end of an
    assistant header to the end of the next end-of-turn marker. None when that reading does not
    hold for this conversation: the headers do not match the assistant turns one to one, or a
    turn's content (or the name of one of its calls) falls outside its span, or a span reaches
    into the turn after it."""
    if not markers.header or not markers.end:
        return None
    turns = conversation.turns
    assistants = [i for i, t in enumerate(turns) if t["role"] == "assistant"]
    headers, cursor = [], full.find(markers.header)
    while cursor >= 0:
        headers.append(cursor)
        cursor = full.find(markers.header, cursor + len(markers.header))
    positions = _content_positions(full, turns)
    if len(headers) != len(assistants) or positions is None:
        return None
    trained, spans = set(conversation.assistant_indices()), []
    for index, header_at in zip(assistants, headers):
        start = header_at + len(markers.header)
        marker_at = full.find(markers.end, start)
        if marker_at < 0:
            return None
        end = marker_at + len(markers.end)
        content = str(turns[index]["content"]).strip()
        if positions[index] >= 0 and not start <= positions[index] <= end - len(content):
            return None
        text = full[start:end]
        if any(c["function"]["name"] not in text for c in turns[index].get("tool_calls", [])):
            return None
        later = [p for p in positions[index + 1 :] if p >= 0]
        if later and later[0] < end:
            return None
        if index in trained:
            start, end = _stripped(full, start, end)
            if end > start:
                spans.append((start, end))
    return spans


def prefix_diff_spans(
    tokenizer: Any, conversation: Conversation, full: str, where: str
) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in `full` (content + end-of-turn marker),
    by prefix-diff rendering (one render per assistant turn)."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    tools = conversation.tools
    for index in conversation.assistant_indices():
        before = render(tokenizer, conversation.turns[:index], True, where, tools) if index else ""
        upto = render(tokenizer, conversation.turns[: index + 1], False, where, tools)
        if upto.startswith(before) and full.startswith(upto):
            start, end = len(before), len(upto)
        else:  # a template that rewrites earlier turns: find this turn's text after the last one
            piece = (
                upto[len(before) :]
                if upto.startswith(before)
                else conversation.turns[index]["content"]
            )
            found = full.find(piece.strip(), cursor)
            if found < 0:
                raise UserError(
                    f"{where}: assistant turn {index} is not found in the rendered "
                    f"conversation (the chat template rewrites earlier turns). Fix: "
                    f"task.train_on=last_assistant"
                )
            start, end = found, found + len(piece.strip())
        start, end = _stripped(full, start, end)
        if end > start:
            spans.append((start, end))
        cursor = end
    return spans


def assistant_spans(
    tokenizer: Any,
    conversation: Conversation,
    full: str,
    where: str,
    markers: TurnMarkers | None = None,
) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in `full`: from the template's markers in
    one rendering where they account for every turn, else by prefix-diff rendering."""
    spans = header_spans(conversation, full, markers or turn_markers(tokenizer))
    return spans if spans is not None else prefix_diff_spans(tokenizer, conversation, full, where)


def span_owners(offsets: Sequence[Sequence[int]], spans: list[tuple[int, int]]) -> list[int]:
    """Turn index per token (or -1) from character offsets: a token overlapping span k belongs
    to turn k. One pass over tokens and spans together (both in text order)."""
    owner, k = [], 0
    for start, end in offsets:
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        hit = k < len(spans) and end > start and start < spans[k][1] and end > spans[k][0]
        owner.append(k if hit else -1)
    return owner


def token_labels(
    tokenizer: Any, full: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """(input_ids, turn index per token or -1): tokens overlapping span k belong to turn k."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), span_owners(encoded["offset_mapping"], spans)
    # Slow tokenizers have no offsets: tokenize the pieces between span edges one by one.
    ids, owner = [], []
    edges = sorted({0, len(full), *[p for span in spans for p in span]})
    for left, right in zip(edges, edges[1:]):
        piece = tokenizer(full[left:right], add_special_tokens=False)["input_ids"]
        hit = next((k for k, (s, e) in enumerate(spans) if s <= left and right <= e), -1)
        ids += piece
        owner += [hit] * len(piece)
    return ids, owner


def generation_masks(
    tokenizer: Any, conversation: Conversation, where: str
) -> tuple[list[int], list[int]]:
    """(input_ids, turn index per token or -1) from the template's own assistant masks
    ({% generation %} blocks): each contiguous masked run is one assistant turn."""
    try:
        encoded = tokenizer.apply_chat_template(
            conversation.turns,
            tools=conversation.tools,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
    except Exception as error:
        raise UserError(
            f"{where}: the chat template refused the conversation: {_first_line(error)}"
        ) from None
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    all_assistant = [i for i, t in enumerate(conversation.turns) if t["role"] == "assistant"]
    trained = set(conversation.assistant_indices())
    owner, run, previous = [], -1, 0
    for flag in mask:
        if flag and not previous:
            run += 1
        index = all_assistant[run] if flag and run < len(all_assistant) else None
        owner.append(run if flag and index in trained else -1)
        previous = flag
    return ids, owner


def has_generation_tags(tokenizer: Any) -> bool:
    return bool(GENERATION_TAG.search(str(getattr(tokenizer, "chat_template", "") or "")))


def end_of_turn(tokenizer: Any) -> str:
    """The template's end-of-turn marker: what follows an assistant turn's content (stripped),
    e.g. <|im_end|>, <|eot_id|>, <end_of_turn>, </s>; '' if the template adds nothing."""
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:
        return ""
    after = text[text.rfind("pong") + len("pong") :].strip()
    return after.split()[0] if after else ""
