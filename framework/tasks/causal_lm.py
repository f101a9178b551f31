"""CAUSAL_LM: supervised fine-tuning on chat data, or plain language modelling.

Rows come in TRL's three shapes (see tasks/chat.py): multi-turn `messages` (ShareGPT's
`conversations` through data.columns.messages=conversations), `prompt`/`completion` (or
`response`) pairs, or plain `text`; conversations may offer `tools` and carry tool calls.
Conversations are rendered with the tokenizer's own chat template (or one chosen explicitly with
task.chat_template) and the loss covers the assistant turns only: every one, the last one, or
every token (task.train_on). String prompt/completion rows for a tokenizer without a chat
template are plain text, prompt + completion + eos (TRL's standard prompt-completion); lists of
turns need a template, and `ft validate` says so before anything is loaded. Generation (eval and
`ft predict`) uses the same template, tools included, and stops at its end-of-turn marker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.core.streams import is_stream
from framework.tasks import blocks, chat, packing, token_loss
from framework.tasks.base import Task, TaskParams, column_sum, safe_exp
from framework.tasks.chat import IGNORE_INDEX

log = logging.getLogger("ft")
FORMATS = ("messages", "prompt_completion", "text")
LABELLED = "labelled_tokens"  # a column of the tokenizing pass: label tokens per example


def is_turn_list(feature: Any) -> bool:
    """Whether a datasets feature holds lists (of turns), not strings."""
    return feature is not None and (isinstance(feature, list) or hasattr(feature, "feature"))


def format_of(names: set[str], columns: dict[str, str], completion: str) -> str | None:
    """format=auto by the columns present: messages, then prompt + completion/response, then
    text (data.columns maps a role to the data's column name); None when none of them is."""
    if columns.get("messages", "messages") in names:
        return "messages"
    if columns.get("prompt", "prompt") in names and completion in names:
        return "prompt_completion"
    if columns.get("text", "text") in names:
        return "text"
    return None


def last_only(conversation: chat.Conversation) -> chat.Conversation:
    """The conversation with only its last assistant turn trained."""
    trained = conversation.assistant_indices()
    return replace(conversation, first_trained=trained[-1]) if trained else conversation


def no_template_problem(checkpoint: str) -> str:
    """The one line for conversational rows and a tokenizer without a chat template."""
    return (
        f"task.chat_template: the tokenizer of {checkpoint} has no chat template, and the "
        f"data's rows are conversational (lists of turns), which need one to mark the turns. "
        f"Fix: task.chat_template=chatml (ft's ChatML markup) or a Jinja template string, or "
        f"give prompt/completion as strings (plain prompt + completion + eos)"
    )


@dataclass(kw_only=True)
class CausalLmParams(TaskParams):
    # auto: by the columns
    format: Literal["auto", "messages", "prompt_completion", "text"] = "auto"
    # which tokens carry the loss
    train_on: Literal["assistant", "last_assistant", "all"] = "assistant"
    # null: the tokenizer's own; chatml; none (plain); or Jinja text
    chat_template: str | None = None
    system_prompt: str | None = None  # system turn added to conversations that have none
    # tools (JSON schemas, as apply_chat_template(tools=...) takes them) offered in every
    # conversation whose row has no `tools` of its own
    tools: list[dict[str, Any]] | None = None
    generate_eval: bool = False  # also generate answers on eval and score exact match / ROUGE-L
    max_new_tokens: int = 32  # tokens generated per eval example when generate_eval
    max_generate_examples: int = 64  # eval examples scored by generation (it is slow)


@TASKS.register("causal_lm")
class CausalLm(Task):
    Params = CausalLmParams
    auto_model = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    model_kinds = frozenset({"decoder"})
    primary_metric = "perplexity"
    greater_is_better = False
    can_pack = True
    can_skip_logits = True
    can_fuse_loss = True  # loss_terms: token_loss.causal_lm_loss takes the fused head
    can_stream = True
    takes_blocks = True  # data.block_size: text documents cut into blocks (tasks/blocks.py)
    summary = "SFT on chat data (assistant tokens only, the model's chat template) or plain LM; perplexity"

    @staticmethod
    def upgrade_saved(params: dict[str, Any]) -> dict[str, Any]:
        """Saved configs of ft before chat data: mode sft|lm and use_chat_template."""
        mode = params.pop("mode", None)
        if mode is not None:
            params.setdefault("format", "text" if mode == "lm" else "prompt_completion")
        if params.pop("use_chat_template", True) is False:
            params.setdefault("chat_template", "none")
        return params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.format = self.params.format  # "auto" until the data's columns are seen
        # `completion` and `response` name the same role (TRL's name, and ft's older one)
        self._completion = (
            self.data.columns.get("completion") or self.data.columns.get("response") or "completion"
        )
        self._tools = chat.normalize_tools(getattr(self.params, "tools", None), "task.tools")
        self._turn_lists = False  # prompt/completion rows hold lists of turns (check_columns)
        self._markers: tuple[str, chat.TurnMarkers] | None = None  # (template, its markers)
        if self.tokenizer is not None:
            self._choose_template()

    # ---- dataset shape -------------------------------------------------------------------------
    @classmethod
    def params_problems(cls, params: CausalLmParams, run: Any) -> list[str]:
        found = []
        template = params.chat_template
        if (
            template is not None
            and template not in (*chat.TEMPLATES, chat.NO_TEMPLATE)
            and "{{" not in template
            and "{%" not in template
        ):
            found.append(
                f"task.chat_template={template}: not a template; use null (the "
                f"tokenizer's own), {', '.join(chat.TEMPLATES)}, {chat.NO_TEMPLATE}, or a "
                f"Jinja template string"
            )
        if params.max_new_tokens < 1:
            found.append(f"task.max_new_tokens={params.max_new_tokens}: must be >= 1")
        if run.data.block_size and params.format not in ("auto", "text"):
            found.append(
                f"data.block_size={run.data.block_size}: continued pretraining cuts `text` "
                f"documents into blocks, not task.format={params.format}; set task.format=text"
            )
        return found

    def roles(self) -> dict[str, bool]:
        if self.format == "messages":
            return {"messages": True, "tools": False}
        if self.format == "prompt_completion":
            return {"prompt": True, "completion": True, "tools": False}
        if self.format == "text":
            return {"text": True}
        return {}

    def column(self, role: str) -> str:
        return self._completion if role in ("completion", "response") else super().column(role)

    def check_columns(self, splits: Any, describe: Any) -> None:
        """Resolve format=auto from the columns (messages, then prompt + completion/response,
        then text) and check that every split has them."""
        first = next(iter(splits.values()))
        names = set(first.column_names)
        if self._completion not in names and "response" in names:
            self._completion = "response"
        if self.format == "auto":
            found = format_of(names, self.data.columns, self._completion)
            if found is not None:
                self.format = found
            else:
                raise UserError(
                    f"task.format=auto: no chat columns in {describe(next(iter(splits)))}: it has "
                    f"{sorted(names)}. Give `messages` (list of role/content turns), `prompt` + "
                    f"`completion` (or `response`), or `text`, or map yours: "
                    f"data.columns.messages=conversations"
                )
        super().check_columns(splits, describe)
        self._turn_lists = self.format == "prompt_completion" and any(
            is_turn_list(first.features.get(self.column(r))) for r in ("prompt", "completion")
        )
        log.info("causal_lm: %s", self.rendering())

    @classmethod
    def needs_chat_template(
        cls, params: CausalLmParams, data: Any, first_row: dict[str, Any] | None
    ) -> bool | None:
        """Lists of turns (messages, or conversational prompt/completion) need the tokenizer's
        chat template unless task.chat_template gives one (or `none`); format=auto and
        prompt_completion decide by the data's first row (None when it is not known)."""
        if params.chat_template is not None or params.format == "text":
            return False
        if params.format == "messages":
            return True
        if first_row is None:
            return None
        completion = data.columns.get("completion") or data.columns.get("response") or "completion"
        if completion not in first_row and "response" in first_row:
            completion = "response"
        form = params.format
        if form == "auto":
            form = format_of(set(first_row), data.columns, completion)
        if form == "messages":
            return True
        if form != "prompt_completion":
            return False
        prompt = data.columns.get("prompt", "prompt")
        return any(isinstance(first_row.get(c), (list, tuple)) for c in (prompt, completion))

    @classmethod
    def no_template_problem(
        cls, params: CausalLmParams, data: Any, first_row: dict[str, Any] | None, checkpoint: str
    ) -> str | None:
        if not cls.needs_chat_template(params, data, first_row):
            return None
        return no_template_problem(checkpoint)

    @property
    def conversational(self) -> bool:
        """Whether rows are lists of turns (TRL's conversational format), not strings."""
        return self.format == "messages" or self._turn_lists

    def rendering(self) -> str:
        """How rows become text (the log says it): which template, or plain text."""
        if self.format == "text":
            return "text rows as they are + eos, every token trained"
        choice = self.params.chat_template
        if not self._templated():
            why = "task.chat_template=none" if choice == chat.NO_TEMPLATE else "no chat template"
            return (
                f"plain text: prompt + completion + eos ({why}; TRL's standard prompt-completion)"
            )
        which = (
            "the tokenizer's chat template"
            if choice is None
            else f"task.chat_template={choice}"
            if choice in chat.TEMPLATES
            else "the task.chat_template Jinja string"
        )
        labels = (
            "the template's {% generation %} masks"
            if chat.has_generation_tags(self.tokenizer)
            else "its assistant header and end-of-turn marker"
        )
        return f"{self.format} rows rendered with {which}; assistant labels from {labels}"

    def artifacts(self) -> dict[str, Any]:
        return {"task": "causal_lm", "format": self.format}

    def restore_artifacts(self, extras: dict[str, Any]) -> None:
        if self.format == "auto" and extras.get("format") in FORMATS:
            self.format = extras["format"]

    def predict_roles(self) -> dict[str, bool]:
        """A conversation (`messages`) or a `prompt` string; `text` to continue in text format."""
        return {"text": True} if self.format == "text" else {"messages": False, "prompt": False}

    # ---- template --------------------------------------------------------------------------------
    def _choose_template(self) -> None:
        """task.chat_template replaces the tokenizer's template (saved with the adapter, so that
        `ft predict` renders the same way); none means plain prompt + completion + eos."""
        choice = self.params.chat_template
        if choice is None or choice == chat.NO_TEMPLATE:
            return
        self.tokenizer.chat_template = chat.TEMPLATES.get(choice, choice)

    def _templated(self) -> bool:
        """Whether conversations go through a chat template: the tokenizer's (or task's) when
        there is one; without one, string prompt/completion rows are plain text (TRL's
        convention) and conversational rows cannot be rendered."""
        if self.params.chat_template == chat.NO_TEMPLATE:
            return False
        if getattr(self.tokenizer, "chat_template", None):
            return True
        if self.format == "text" or not self.conversational:
            return False
        raise UserError(no_template_problem("this checkpoint"))

    def markers(self) -> chat.TurnMarkers:
        """The template's assistant header and end-of-turn marker (found once per template)."""
        template = str(self.tokenizer.chat_template)
        if self._markers is None or self._markers[0] != template:
            self._markers = (template, chat.turn_markers(self.tokenizer))
        return self._markers[1]

    def end_of_turn_ids(self) -> list[int]:
        """Token ids that end an assistant turn: eos, and the template's end-of-turn marker when
        it is one token (<|im_end|>, <|eot_id|>, <end_of_turn>)."""
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        if self.format != "text" and self._templated():
            marker = chat.end_of_turn(self.tokenizer)
            marker_ids = self._ids(marker) if marker else []
            if len(marker_ids) == 1 and marker_ids[0] not in ids:
                ids.append(marker_ids[0])
        return ids

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def conversation(self, row: dict[str, Any], where: str) -> chat.Conversation:
        columns = {
            role: self.column(role) for role in ("messages", "prompt", "completion", "tools")
        }
        return chat.conversation_of(
            row, self.format, columns, self.params.system_prompt, where, self._tools
        )

    # ---- encoding ----------------------------------------------------------------------------------
    def encode_conversation(
        self, conversation: chat.Conversation, where: str = "row"
    ) -> dict[str, Any]:
        """input_ids and labels of one conversation (see encode_conversations)."""
        return self.encode_conversations([conversation], [where])[0]

    def conversation_ids(
        self, conversation: chat.Conversation, where: str = "row"
    ) -> tuple[list[int], list[int]]:
        """(input_ids, trained assistant turn per token or -1) of a whole conversation, rendered
        with the chat template (or plain prompt + completion + eos without one); not truncated."""
        return self._owned([conversation], [where])[0]

    def encode_conversations(
        self, conversations: list[chat.Conversation], wheres: list[str]
    ) -> list[dict[str, Any]]:
        """input_ids and labels of each conversation (labels on the trained assistant turns, or
        on everything with train_on=all), truncated to data.max_length. A turn the cut goes
        through is left out of the loss entirely and counted in `cut_turns`."""
        return [self._labelled(ids, owner) for ids, owner in self._owned(conversations, wheres)]

    def _owned(
        self, conversations: list[chat.Conversation], wheres: list[str]
    ) -> list[tuple[list[int], list[int]]]:
        """(input_ids, trained turn per token or -1) of each conversation: one render each, and
        one batched call of the fast tokenizer for them all."""
        if not self._templated():
            if self.format == "messages":
                raise UserError(
                    "task.chat_template=none: plain text has no turn markers, so it "
                    "serves prompt/completion rows only; multi-turn messages need a "
                    "template. Fix: task.chat_template=chatml (or null for the "
                    "tokenizer's own)"
                )
            return [self._plain(c) for c in conversations]
        if self.params.train_on == "last_assistant":  # only the last turn's span is looked for
            conversations = [last_only(c) for c in conversations]
        if chat.has_generation_tags(self.tokenizer):
            return [
                chat.generation_masks(self.tokenizer, c, w) for c, w in zip(conversations, wheres)
            ]
        markers = self.markers()
        fulls = [
            chat.render(self.tokenizer, c.turns, False, w, c.tools)
            for c, w in zip(conversations, wheres)
        ]
        spans = [
            chat.assistant_spans(self.tokenizer, c, full, w, markers)
            for c, full, w in zip(conversations, fulls, wheres)
        ]
        if not getattr(self.tokenizer, "is_fast", False):
            return [chat.token_labels(self.tokenizer, f, s) for f, s in zip(fulls, spans)]
        encoded = self.tokenizer(fulls, add_special_tokens=False, return_offsets_mapping=True)
        return [
            (list(ids), chat.span_owners(offsets, turn_spans))
            for ids, offsets, turn_spans in zip(
                encoded["input_ids"], encoded["offset_mapping"], spans
            )
        ]

    def _labelled(self, ids: list[int], owner: list[int]) -> dict[str, Any]:
        """Labels from token owners under task.train_on, and the data.max_length cut."""
        trained_turns = sorted({k for k in owner if k >= 0})
        if self.params.train_on == "last_assistant" and trained_turns:
            owner = [k if k == trained_turns[-1] else -1 for k in owner]
            trained_turns = trained_turns[-1:]
        cut = 0
        if self.data.truncation and len(ids) > self.data.max_length:
            beyond = {k for k in owner[self.data.max_length :] if k >= 0}  # turns the cut reaches
            cut = len(beyond)
            ids = ids[: self.data.max_length]
            owner = [-1 if k in beyond else k for k in owner[: self.data.max_length]]
        if self.params.train_on == "all":
            labels = list(ids)
        else:
            labels = [i if k >= 0 else IGNORE_INDEX for i, k in zip(ids, owner)]
        return {"input_ids": ids, "labels": labels, "cut_turns": cut}

    def _end_of_text(self) -> list[int]:
        """The token that ends a plain text: eos; an encoder's tokenizer (a reward model on
        BERT-style checkpoints) has none and ends with its separator; else nothing."""
        for token_id in (self.tokenizer.eos_token_id, self.tokenizer.sep_token_id):
            if token_id is not None:
                return [token_id]
        return []

    def _plain(self, conversation: chat.Conversation) -> Any:
        """task.chat_template=none: prompt + completion + eos, the completion trained."""
        prompt = "".join(t["content"] for t in conversation.turns[: conversation.first_trained])
        answer = "".join(t["content"] for t in conversation.turns[conversation.first_trained :])
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        prompt_ids = bos + self._ids(prompt)
        answer_ids = self._ids(answer) + self._end_of_text()
        return prompt_ids + answer_ids, [-1] * len(prompt_ids) + [0] * len(answer_ids)

    def encode_sft(self, prompt: str, response: str) -> dict[str, Any]:
        """One prompt/response pair, as a user turn and an assistant turn."""
        return self.encode_conversation(
            chat.Conversation(
                (
                    [{"role": "system", "content": self.params.system_prompt}]
                    if self.params.system_prompt
                    else []
                )
                + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                first_trained=1 + bool(self.params.system_prompt),
            )
        )

    def encode_texts(self, texts: list[str]) -> list[dict[str, Any]]:
        """format=text: each text + eos, every token trained (one batched tokenizer call); cut
        at data.max_length unless the documents go into blocks."""
        eos = self._end_of_text()
        out = []
        for ids in self.tokenizer(texts)["input_ids"]:
            ids = list(ids) + eos
            if self.data.truncation and not self.data.block_size:  # blocks: never cut here
                ids = ids[: self.data.max_length]
            out.append({"input_ids": ids, "labels": list(ids), "cut_turns": 0})
        return out

    def tokenize(self, splits: Any) -> Any:
        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            if self.format == "text":
                out = self.encode_texts([str(t) for t in batch[self.column("text")]])
            else:
                wheres = [f"row {i} of the data" for i in indices]
                rows = [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]
                conversations = [self.conversation(r, w) for r, w in zip(rows, wheres)]
                out = self.encode_conversations(conversations, wheres)
            columns = {key: [o[key] for o in out] for key in ("input_ids", "labels", "cut_turns")}
            columns[LABELLED] = [sum(x != IGNORE_INDEX for x in o["labels"]) for o in out]
            return columns

        if self.format == "auto":
            raise UserError("task.format=auto: check_columns must resolve the format first")
        if self.data.block_size and self.format != "text":
            raise UserError(
                f"data.block_size={self.data.block_size}: continued pretraining cuts `text` "
                f"documents into blocks; this data reads as task.format={self.format}. Fix: "
                f"task.format=text with data.columns.text=COLUMN, or no data.block_size"
            )
        tokenized = {}
        for split, dataset in splits.items():
            if self.data.block_size:  # documents are never cut or dropped for length here
                encoded = self.encode_split(
                    dataset, split, encode, length_of=lambda ex: 0, with_indices=True
                )
                columns = ["input_ids", "labels", "cut_turns", LABELLED]
                tokenized[split] = blocks.cut_into_blocks(
                    encoded, columns, self.data.block_size, split
                )
                continue
            encoded = self.encode_split(dataset, split, encode, with_indices=True)
            if is_stream(encoded):  # read lazily: nothing to count before training
                tokenized[split] = encoded.filter(lambda ex: ex[LABELLED] > 0).remove_columns(
                    ["cut_turns", LABELLED]
                )
                continue
            encoded = self.encode_split(dataset, split, encode, with_indices=True)
            cut = column_sum(encoded, "cut_turns")
            # An example whose trained turns were all cut off teaches nothing: drop it.
            kept = self.keep_where(encoded, LABELLED, lambda labelled: labelled > 0)
            if cut or len(kept) < len(encoded):
                log.info(
                    "%s: data.max_length=%d cut %d assistant turns (left out of the loss); "
                    "%d of %d examples kept",
                    split,
                    self.data.max_length,
                    cut,
                    len(kept),
                    len(encoded),
                )
            tokenized[split] = kept.remove_columns(["cut_turns", LABELLED])
        return tokenized

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """One padding-free row when packed (tasks/packing.py), else right-padded rows; with
        logits_only, also the positions where the LM head must run (computed here, on the host)."""
        import torch

        if self.packed:
            real = sum(len(f["input_ids"]) for f in features)
            multiple = self.row_multiple
            batch = packing.pack(
                features,
                with_lengths=self.packed_lengths,
                with_offsets=self.packed_offsets,
                pad_to=-(-real // multiple) * multiple if multiple else None,
                pad_id=self.tokenizer.pad_token_id or 0,
            )
        else:
            width = max(len(f["input_ids"]) for f in features)
            pad = self.tokenizer.pad_token_id
            ids = torch.full((len(features), width), pad, dtype=torch.long)
            labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(features), width), dtype=torch.long)
            for i, f in enumerate(features):  # right padding for training
                n = len(f["input_ids"])
                ids[i, :n] = torch.tensor(f["input_ids"])
                labels[i, :n] = torch.tensor(f["labels"])
                mask[i, :n] = 1
            batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if self.logits_only:
            batch[token_loss.TARGETS_KEY] = token_loss.target_positions(batch["labels"])
        return batch

    # ---- loss and evaluation -------------------------------------------------------------------
    def count_items(self, batch: dict[str, Any]) -> Any:
        """Label tokens (after the shift: position t predicts label t+1)."""
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum().float()

    def loss_terms(self, model: Any, batch: dict[str, Any]) -> Any:
        return token_loss.causal_lm_loss(model, batch, self.logits_only, self.fused_head)

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        total, count = self.loss_terms(model, batch)
        return total / count.clamp(min=1)

    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        import torch

        # Token-weighted mean loss, so perplexity is per token, not per batch.
        totals = torch.zeros(2, device=accelerator.device)
        with torch.no_grad():
            for batch in loader:
                total, tokens = self.loss_terms(model, batch)
                totals += torch.stack([total.float(), tokens.float()])
        totals = accelerator.reduce(totals, reduction="sum")
        mean = float(totals[0] / totals[1].clamp(min=1))
        result = {"eval_loss": mean, "perplexity": safe_exp(mean)}
        if self.params.generate_eval and self.format != "text" and raw is not None:
            result.update(
                self.generation_metrics(accelerator.unwrap_model(model), raw, accelerator.device)
            )
        return result

    # ---- generation ------------------------------------------------------------------------------
    def prompt_text(self, prompt: Any, tools: list[dict[str, Any]] | None = None) -> str:
        """The text the model continues: the conversation so far (a prompt string or a list of
        turns) rendered with the generation prompt and the tools (default: task.tools), as
        training renders it; the plain prompt without a template."""
        turns = (
            chat.normalize_turns(prompt, "prompt")
            if isinstance(prompt, (list, tuple))
            else [{"role": "user", "content": str(prompt)}]
        )
        if self.params.system_prompt and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": self.params.system_prompt})
        if self.format == "text" or not self._templated():
            return "".join(t["content"] for t in turns if t["role"] != "system")
        return chat.render(self.tokenizer, turns, True, "prompt", tools or self._tools)

    def generate_turns(
        self,
        model: Any,
        contexts: list[Any],
        device: Any,
        tools: list[list[dict[str, Any]] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Greedy answers for conversations (or prompt strings), batched with left padding;
        generation stops at eos or the template's end-of-turn token. `tools`: each context's
        tools (None: task.tools). Each answer: its text and whether it ended its turn before
        max_new_tokens."""
        import torch

        stops = self.end_of_turn_ids()
        marker = (
            chat.end_of_turn(self.tokenizer) if self.format != "text" and self._templated() else ""
        )
        self.tokenizer.padding_side = "left"
        try:
            texts = [
                self.prompt_text(c, t) for c, t in zip(contexts, tools or [None] * len(contexts))
            ]
            enc = self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                add_special_tokens=self.format == "text" or not self._templated(),
            ).to(device)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=self.params.max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops or None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
        finally:
            self.tokenizer.padding_side = "right"
        answers = []
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            ended = any(token in stops for token in row)
            end = next((i for i, token in enumerate(row) if token in stops), len(row))
            text = self.tokenizer.decode(row[:end], skip_special_tokens=True)
            answers.append(
                {
                    "generated": (text.split(marker)[0] if marker else text).strip(),
                    "ended_turn": ended,
                }
            )
        return answers

    def generate(self, model: Any, prompts: list[Any], device: Any) -> list[str]:
        """Greedy answer texts for prompts (strings or lists of turns)."""
        return [a["generated"] for a in self.generate_turns(model, prompts, device)]

    def _context_and_gold(self, row: dict[str, Any], where: str) -> Any:
        """The conversation up to its last assistant turn, and that turn's content."""
        conversation = self.conversation(row, where)
        last = conversation.assistant_indices()[-1] if conversation.assistant_indices() else None
        if last is None:
            return None
        return conversation.turns[:last], conversation.turns[last]["content"], conversation.tools

    def generation_metrics(self, model: Any, raw: Any, device: Any) -> dict[str, float]:
        """Exact match and ROUGE-L of generated last assistant turns against the data's, and the
        fraction of generations that ended their turn (emitted the end-of-turn token)."""
        from framework.core import metrics

        rows = raw.select(range(min(len(raw), self.params.max_generate_examples)))
        pairs = [
            p for p in (self._context_and_gold(r, f"row {i}") for i, r in enumerate(rows)) if p
        ]
        answers: list[dict[str, Any]] = []
        for start in range(0, len(pairs), 16):
            batch = pairs[start : start + 16]
            answers += self.generate_turns(
                model, [c for c, _, _ in batch], device, [t for _, _, t in batch]
            )
        texts, golds = [a["generated"] for a in answers], [g for _, g, _ in pairs]
        scores = metrics.squad_metrics(texts, [[g] for g in golds])
        return {
            "exact_match": scores["exact_match"],
            "rougeL": metrics.rouge_scores(texts, golds)["rougeL"],
            "ended_turn": sum(a["ended_turn"] for a in answers) / max(1, len(answers)),
        }

    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """`ft predict`: the next assistant turn of each row's conversation (`messages`, a
        `prompt`), or a continuation of `text`; rendered with the same template as training, with
        the row's `tools` (or task.tools)."""
        contexts, tools = [], []
        for number, row in enumerate(rows, 1):
            column = next(
                (self.column(r) for r in ("messages", "prompt", "text") if self.column(r) in row),
                None,
            )
            if column is None:
                raise UserError(
                    f"--input row {number}: needs a '{self.column('messages')}', "
                    f"'{self.column('prompt')}' or '{self.column('text')}' column"
                )
            value = row[column]
            if isinstance(value, list):
                turns = chat.normalize_turns(value, f"--input row {number}")
                value = turns[:-1] if turns[-1]["role"] == "assistant" else turns
            contexts.append(value)
            tools.append(
                chat.normalize_tools(row.get(self.column("tools")), f"--input row {number}")
            )
        answers = self.generate_turns(model, contexts, device, tools)
        return [{"generated": a["generated"]} for a in answers]
