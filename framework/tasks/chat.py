"""Chat data for SFT: the dataset shapes users bring (TRL's conventions), rendered with the
tokenizer's own chat template, with labels on exactly the assistant tokens.

Shapes (task.format, or picked by the columns present):
  messages           a list of {role, content} turns, multi-turn, optional system turn; ShareGPT's
                     {from, value} turns (human/gpt/system) are accepted as they are
  prompt_completion  `prompt` and `completion` (or `response`) strings, or lists of turns
  text               plain text, every token trained (language modelling)

Labels: the template's own assistant masks where it marks them with `{% generation %}`;
otherwise prefix-diff rendering, which works for any template: assistant turn i spans what
render(turns[:i+1]) adds to render(turns[:i], add_generation_prompt=True), i.e. its content and
the template's end-of-turn marker (<|im_end|>, <|eot_id|>, <end_of_turn>, </s>), with the
whitespace around them left out. Tokens overlapping a span are labelled.
"""

from __future__ import annotations

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
}
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


@dataclass
class Conversation:
    """Normalised turns; assistant turns from index `first_trained` on are the ones to learn."""

    turns: list[dict[str, str]]
    first_trained: int = 0

    def assistant_indices(self) -> list[int]:
        return [
            i
            for i, t in enumerate(self.turns)
            if t["role"] == "assistant" and i >= self.first_trained
        ]


def normalize_turns(value: Any, where: str) -> list[dict[str, str]]:
    """A list of {role, content} (or ShareGPT {from, value}) dicts -> [{role, content}, ...]."""
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(
            f"{where}: expected a non-empty list of turns ({{role, content}}), got "
            f"{str(value)[:60]!r}"
        )
    turns = []
    for turn in value:
        if not isinstance(turn, dict):
            raise UserError(
                f"{where}: a turn must be a mapping with role/content (or from/value), "
                f"got {str(turn)[:60]!r}"
            )
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None or content is None:
            raise UserError(
                f"{where}: a turn needs 'role' and 'content' (or ShareGPT 'from' and "
                f"'value'); it has keys {sorted(turn)}"
            )
        normalized = ROLE_ALIASES.get(str(role).lower())
        if normalized is None:
            raise UserError(
                f"{where}: unknown role '{role}'; use one of system, user, assistant "
                f"(ShareGPT: system, human, gpt)"
            )
        turns.append({"role": normalized, "content": str(content)})
    return turns


def conversation_of(
    row: dict[str, Any], form: str, columns: dict[str, str], system_prompt: str | None, where: str
) -> Conversation:
    """One data row as a Conversation, per the dataset shape."""
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
    if system_prompt and conversation.turns[0]["role"] != "system":
        conversation.turns.insert(0, {"role": "system", "content": system_prompt})
        conversation.first_trained += 1 if form != "messages" else 0
    return conversation


def render(
    tokenizer: Any, turns: Sequence[dict[str, str]], generation_prompt: bool, where: str
) -> str:
    """The tokenizer's chat template applied to turns, as text."""
    try:
        return tokenizer.apply_chat_template(
            list(turns), tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{where}: the chat template refused the conversation: {first}") from None


def assistant_spans(
    tokenizer: Any, conversation: Conversation, full: str, where: str
) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in `full` (content + end-of-turn marker),
    by prefix-diff rendering."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index in conversation.assistant_indices():
        before = render(tokenizer, conversation.turns[:index], True, where) if index else ""
        upto = render(tokenizer, conversation.turns[: index + 1], False, where)
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
        text = full[start:end]
        start += len(text) - len(text.lstrip())
        end -= len(text) - len(text.rstrip())
        if end > start:
            spans.append((start, end))
        cursor = end
    return spans


def token_labels(
    tokenizer: Any, full: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """(input_ids, turn index per token or -1): tokens overlapping span k belong to turn k."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        owner = []
        for start, end in offsets:
            hit = next(
                (k for k, (s, e) in enumerate(spans) if start < e and end > s and end > start), -1
            )
            owner.append(hit)
        return list(ids), owner
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
            conversation.turns, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{where}: the chat template refused the conversation: {first}") from None
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
