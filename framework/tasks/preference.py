"""Preference data for a causal LM (task `preference`) and for a pairwise reward model (task
`reward_model`): the data side of the preference objectives (framework/objectives).

Rows come in TRL's formats, picked by their columns (task.format=auto):

  pairs            `prompt`, `chosen`, `rejected`: strings, or lists of role/content turns
  implicit_prompt  `chosen`, `rejected` only: full conversations (or texts) sharing a prefix, which
                   is the prompt
  unpaired         `prompt`, `completion`, `label` (true = desirable), for KTO; pairs given to KTO
                   are unpaired into one desirable and one undesirable row

Each prompt + completion is rendered with the model's chat template by the same code as SFT
(tasks/causal_lm.py, tasks/chat.py), and only the completion's assistant tokens are scored.
Truncation keeps the end of the prompt (task.max_prompt_length) and the start of each completion
(data.max_length in all); the counts are logged. Pairs with an empty completion or with the
same chosen and rejected text are dropped and counted (`ft validate --data` shows them).

A collated batch holds the chosen rows then the rejected rows (one concatenated forward); an
unpaired batch holds its rows, a `desirable` flag and mismatched `kl_*` rows (each prompt with
the previous row's completion, rotated within batch-sized chunks of the data, as TRL does)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from framework.core.batch_keys import DESIRABLE_KEY, IGNORE_INDEX, KL_PREFIX, TARGETS_KEY
from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.tasks import chat, token_loss
from framework.tasks.base import TaskParams
from framework.tasks.causal_lm import CausalLm, is_turn_list

log = logging.getLogger("ft")
PAIRS, UNPAIRED, SCORED_PAIRS = "pairs", "unpaired", "scored_pairs"  # objectives' data kinds
FORMATS = ("pairs", "implicit_prompt", "unpaired")
TRUE_LABELS = {"true", "1", "yes", "desirable", "good", "chosen"}
FALSE_LABELS = {"false", "0", "no", "undesirable", "bad", "rejected"}


@dataclass(kw_only=True)
class PreferenceParams(TaskParams):
    format: Literal["auto", "pairs", "implicit_prompt", "unpaired"] = "auto"  # auto: by columns
    # null: the tokenizer's own; chatml; none (plain); or Jinja text
    chat_template: str | None = None
    system_prompt: str | None = None  # system turn added to prompts that have none
    max_prompt_length: int | None = None  # prompt tokens kept (its end); null: data.max_length
    max_new_tokens: int = 64  # tokens `ft predict` generates per prompt
    train_on: Literal["assistant"] = "assistant"  # completions score their assistant tokens


@TASKS.register("preference")
class Preference(CausalLm):
    Params = PreferenceParams
    primary_metric = "rewards/accuracies"
    greater_is_better = True
    can_pack = False
    can_skip_logits = True
    data_kinds = frozenset({PAIRS, UNPAIRED})
    summary = (
        "preference pairs (or unpaired KTO rows) for DPO, IPO, SimPO, ORPO, KTO; chat template"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.wanted = PAIRS  # the objective's data kind (use_objective)
        self.kl_chunk = 0  # rows per KL rotation chunk (unpaired: train.batch_size)
        self.notes: dict[str, list[str]] = {}  # split -> what tokenization dropped or cut

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        limit = params.max_prompt_length
        if limit is not None and not 1 <= limit < run.data.max_length:
            found.append(
                f"task.max_prompt_length={limit}: must be >= 1 and below data.max_length="
                f"{run.data.max_length}, leaving room for the completion"
            )
        return found

    def use_objective(self, objective: Any, train: Any) -> None:
        self.wanted = objective.data_kind
        self.kl_chunk = train.batch_size if self.wanted == UNPAIRED else 0

    # ---- columns ---------------------------------------------------------------------------
    def roles(self) -> dict[str, bool]:
        if self.format == "pairs":
            return {"prompt": True, "chosen": True, "rejected": True}
        if self.format == "implicit_prompt":
            return {"chosen": True, "rejected": True}
        if self.format == "unpaired":
            return {"prompt": True, "completion": True, "label": True}
        return {}

    def column(self, role: str) -> str:
        return self.data.columns.get(role, role)

    def check_columns(self, splits: Any, describe: Any) -> None:
        """Resolve format=auto from the columns and check that the objective can read it."""
        names = set(next(iter(splits.values())).column_names)
        if self.format == "auto":
            col = self.column
            if {col("chosen"), col("rejected")} <= names:
                self.format = "pairs" if col("prompt") in names else "implicit_prompt"
            elif {col("prompt"), col("completion"), col("label")} <= names:
                self.format = "unpaired"
            else:
                raise UserError(
                    f"task.format=auto: no preference columns in {describe(next(iter(splits)))}: "
                    f"it has {sorted(names)}. Give `prompt` + `chosen` + `rejected`, `chosen` + "
                    f"`rejected` (sharing their prompt), or `prompt` + `completion` + `label`, or "
                    f"map yours: data.columns.chosen=better"
                )
        if self.format == "unpaired" and self.wanted != UNPAIRED:
            raise UserError(
                f"task.format=unpaired: rows with one completion and a label cannot be paired; "
                f"the objective reads {self.wanted}. Fix: objective=kto, or give `chosen` and "
                f"`rejected` columns"
            )
        first = next(iter(splits.values()))
        # conversational rows (lists of turns) need a chat template; strings go plain without one
        self._turn_lists = any(
            is_turn_list(first.features.get(self.column(r))) for r in self.roles()
        )
        super(CausalLm, self).check_columns(splits, describe)

    @classmethod
    def needs_chat_template(
        cls, params: Any, data: Any, first_row: dict[str, Any] | None
    ) -> bool | None:
        """Rows whose prompt or completions are lists of turns need the tokenizer's chat
        template unless task.chat_template gives one (or `none`); None when no row is known."""
        if params.chat_template is not None:
            return False
        if first_row is None:
            return None
        roles = ("prompt", "chosen", "rejected", "completion")
        return any(isinstance(first_row.get(data.columns.get(r, r)), (list, tuple)) for r in roles)

    def artifacts(self) -> dict[str, Any]:
        return {"task": self.registry_name, "format": self.format, "kl_chunk": self.kl_chunk}

    def restore_artifacts(self, extras: dict[str, Any]) -> None:
        if self.format == "auto" and extras.get("format") in FORMATS:
            self.format = extras["format"]

    def predict_roles(self) -> dict[str, bool]:
        return {"prompt": True}

    # ---- rows -> turns ---------------------------------------------------------------------
    def _turns(self, value: Any, role: str, where: str) -> list[dict[str, str]]:
        if isinstance(value, (list, tuple)):
            return chat.normalize_turns(value, where)
        return [{"role": role, "content": "" if value is None else str(value)}]

    def prompt_and_completions(self, row: dict[str, Any], where: str) -> tuple[list, list[list]]:
        """(prompt turns, [completion turns, ...]) of a row: [chosen, rejected], or [completion]."""
        if self.format == "implicit_prompt":
            chosen = self._turns(row[self.column("chosen")], "assistant", where)
            rejected = self._turns(row[self.column("rejected")], "assistant", where)
            shared = 0
            while (
                shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]
            ):
                shared += 1
            prompt, completions = chosen[:shared], [chosen[shared:], rejected[shared:]]
            if not prompt:
                raise UserError(
                    f"{where}: task.format=implicit_prompt: chosen and rejected share no leading "
                    f"turn to be the prompt. Fix: add a `prompt` column (format pairs)"
                )
        else:
            prompt = self._turns(row[self.column("prompt")], "user", where)
            keys = ("completion",) if self.format == "unpaired" else ("chosen", "rejected")
            completions = [self._turns(row[self.column(k)], "assistant", where) for k in keys]
        if self.params.system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": self.params.system_prompt}, *prompt]
        return prompt, completions

    # ---- encoding --------------------------------------------------------------------------
    def encode_completion(
        self, prompt: list, completion: list, where: str
    ) -> tuple[list[int], list[int], list[bool]] | None:
        """(prompt ids, completion ids, scored flag per completion id) of one prompt + completion,
        untruncated; None when the completion renders no scored token (empty)."""
        if not "".join(turn["content"] for turn in completion).strip():
            return None
        conversation = chat.Conversation([*prompt, *completion], first_trained=len(prompt))
        ids, owner = self.conversation_ids(conversation, where)
        first = next((i for i, k in enumerate(owner) if k >= 0), None)
        if first is None:
            return None
        return ids[:first], ids[first:], [k >= 0 for k in owner[first:]]

    def truncate(self, prompt: list[int], completion: list[int], scored: list[bool]) -> Any:
        """Keep the end of the prompt and the start of the completion; (ids, labels, prompt cut,
        completion cut, prompt tokens kept)."""
        limit = self.params.max_prompt_length or self.data.max_length
        prompt_cut = len(prompt) > limit
        prompt = prompt[-limit:] if prompt_cut else prompt
        room = max(0, self.data.max_length - len(prompt))
        completion_cut = len(completion) > room
        completion, scored = completion[:room], scored[:room]
        ids = prompt + completion
        labels = [IGNORE_INDEX] * len(prompt) + [
            i if keep else IGNORE_INDEX for i, keep in zip(completion, scored)
        ]
        return ids, labels, prompt_cut, completion_cut, len(prompt)

    def encode_row(self, row: dict[str, Any], where: str) -> list[dict[str, Any]]:
        """The tokenized examples of one raw row (a pair, or unpaired rows), with counters."""
        prompt, completions = self.prompt_and_completions(row, where)
        texts = ["".join(t["content"] for t in c).strip() for c in completions]
        encoded = [self.encode_completion(prompt, c, where) for c in completions]
        if any(e is None for e in encoded):
            return [{"dropped": "an empty completion"}]
        if len(texts) == 2 and texts[0] == texts[1]:
            return [{"dropped": "identical chosen and rejected"}]
        if self.format == "unpaired":
            desirable = [self.desirable(row[self.column("label")], where)]
        elif self.wanted == UNPAIRED:
            desirable = [True, False]  # a pair given to KTO: one row of each
        else:
            desirable = []
        sides = [self.truncate(*e) for e in encoded if e is not None]
        cut = {
            "prompt_cut": int(any(s[2] for s in sides)),
            "completion_cut": sum(int(s[3]) for s in sides),
        }
        if any(all(label == IGNORE_INDEX for label in s[1]) for s in sides):
            return [{"dropped": "a prompt that fills data.max_length"}]
        if desirable:  # unpaired rows: the prompt and completion ids too, for the KL rows
            return [
                {
                    "input_ids": s[0],
                    "labels": s[1],
                    DESIRABLE_KEY: d,
                    **cut,
                    "prompt_ids": s[0][: s[4]],
                }
                for s, d in zip(sides, desirable)
            ]
        (chosen, chosen_labels, *_), (rejected, rejected_labels, *_) = sides
        return [
            {
                "chosen_input_ids": chosen,
                "chosen_labels": chosen_labels,
                "rejected_input_ids": rejected,
                "rejected_labels": rejected_labels,
                **cut,
            }
        ]

    def desirable(self, value: Any, where: str) -> bool:
        """A KTO label: true/false (or 1/0, desirable/undesirable)."""
        text = str(value).strip().lower()
        if text in TRUE_LABELS or text in FALSE_LABELS:
            return text in TRUE_LABELS
        raise UserError(
            f"{where}: data.columns.label: '{value}' is not a KTO label. Fix: true (desirable) "
            f"or false (undesirable)"
        )

    def tokenize(self, splits: Any) -> Any:
        if self.format == "auto":
            raise UserError("task.format=auto: check_columns must resolve the format first")
        tokenized = {}
        for split, dataset in splits.items():
            tokenized[split] = self.tokenize_split(dataset, split)
        return tokenized

    def tokenize_split(self, dataset: Any, split: str) -> Any:
        """One split: encode, drop and count, then (unpaired) add the KL rows."""

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            out: list[dict[str, Any]] = []
            for offset, index in enumerate(indices):
                row = {k: v[offset] for k, v in batch.items()}
                out += self.encode_row(row, f"row {index} of split '{split}'")
            keys = [k for k in self.example_keys() if k != "kl_keys"]
            return {
                k: [o.get(k) for o in out]
                for k in [*keys, "prompt_cut", "completion_cut", "dropped"]
            }

        encoded = dataset.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            desc=f"tokenizing {split}",
            **self.map_options(dataset, split, "encode"),
        )
        dropped = [d for d in encoded["dropped"] if d]
        kept = encoded.filter(
            lambda ex: not ex["dropped"], **self.map_options(encoded, split, "keep")
        )
        prompt_cut, completion_cut = sum(kept["prompt_cut"]), sum(kept["completion_cut"])
        notes = [f"{dropped.count(reason)} dropped: {reason}" for reason in sorted(set(dropped))]
        if prompt_cut or completion_cut:
            notes.append(
                f"{prompt_cut} prompts cut to their last {self.params.max_prompt_length or self.data.max_length} "
                f"tokens, {completion_cut} completions cut at data.max_length={self.data.max_length}"
            )
        self.notes[split] = notes
        if notes:
            log.info("%s: %s; %d examples kept", split, "; ".join(notes), len(kept))
        if len(kept) == 0:
            raise UserError(
                f"split '{split}': no preference example is left ({'; '.join(notes) or 'empty'}). "
                f"Fix: check the data (`ft validate --data`), or raise data.max_length"
            )
        kept = kept.remove_columns(["prompt_cut", "completion_cut", "dropped"])
        if self.wanted == UNPAIRED:
            # one process: the KL rotation runs in batch-sized chunks counted from the first row
            options = {**self.map_options(kept, split, "kl"), "num_proc": None}
            kept = kept.map(self.add_kl_rows, batched=True, batch_size=self.kl_chunk, **options)
            kept = kept.remove_columns("prompt_ids")
        return kept

    def example_keys(self) -> list[str]:
        if self.wanted == UNPAIRED:
            return ["input_ids", "labels", DESIRABLE_KEY, "prompt_ids"]
        return ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]

    def add_kl_rows(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """KL rows of a chunk: prompt i with the completion of row i - 1 (the last row's for the
        first), cut at data.max_length."""
        completions = [
            (ids[len(prompt) :], labels[len(prompt) :])
            for ids, labels, prompt in zip(batch["input_ids"], batch["labels"], batch["prompt_ids"])
        ]
        rotated = completions[-1:] + completions[:-1]
        kl_ids, kl_labels = [], []
        for prompt, (ids, labels) in zip(batch["prompt_ids"], rotated):
            kl_ids.append((prompt + ids)[: self.data.max_length])
            kl_labels.append(([IGNORE_INDEX] * len(prompt) + labels)[: self.data.max_length])
        return {**batch, f"{KL_PREFIX}input_ids": kl_ids, f"{KL_PREFIX}labels": kl_labels}

    # ---- collation -------------------------------------------------------------------------
    def padded(self, rows: list[list[int]], labels: list[list[int]], prefix: str = "") -> dict:
        """Right-padded input_ids / attention_mask / labels (and LM-head positions) of rows."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, label) in enumerate(zip(rows, labels)):
            ids[i, : len(row)] = torch.tensor(row)
            targets[i, : len(row)] = torch.tensor(label)
            mask[i, : len(row)] = 1
        batch = {
            f"{prefix}input_ids": ids,
            f"{prefix}attention_mask": mask,
            f"{prefix}labels": targets,
        }
        if self.logits_only:
            batch[f"{prefix}{TARGETS_KEY}"] = token_loss.target_positions(targets)
        return batch

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pairs: the chosen rows, then the rejected rows; unpaired: the rows, their desirable
        flags and their KL rows."""
        import torch

        if "chosen_input_ids" in features[0]:
            rows = [f["chosen_input_ids"] for f in features] + [
                f["rejected_input_ids"] for f in features
            ]
            labels = [f["chosen_labels"] for f in features] + [
                f["rejected_labels"] for f in features
            ]
            return self.padded(rows, labels)
        batch = self.padded([f["input_ids"] for f in features], [f["labels"] for f in features])
        batch.update(
            self.padded(
                [f[f"{KL_PREFIX}input_ids"] for f in features],
                [f[f"{KL_PREFIX}labels"] for f in features],
                KL_PREFIX,
            )
        )
        batch[DESIRABLE_KEY] = torch.tensor([bool(f[DESIRABLE_KEY]) for f in features])
        return batch

    def data_notes(self, split: str) -> list[str]:
        return self.notes.get(split, [])


@dataclass(kw_only=True)
class RewardModelParams(PreferenceParams):
    format: Literal["auto", "pairs", "implicit_prompt"] = "auto"  # type: ignore[assignment]


@TASKS.register("reward_model")
class RewardModel(Preference):
    """Pairs scored by a sequence-classification head with one output (Bradley-Terry)."""

    Params = RewardModelParams
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    model_kinds = None
    can_skip_logits = False
    data_kinds = frozenset({SCORED_PAIRS})
    summary = "pairwise reward model: prompt + completion scored by a one-output head"

    def model_kwargs(self) -> dict[str, Any]:
        # One score; the head reads the last real token, found from the pad token.
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        return {"num_labels": 1, "pad_token_id": pad}

    def predict_roles(self) -> dict[str, bool]:
        return {"prompt": True, "completion": True}

    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """`ft predict`: the reward of each row's prompt + completion."""
        import torch

        features = []
        for number, row in enumerate(rows, 1):
            where = f"--input row {number}"
            prompt = self._turns(row.get(self.column("prompt")), "user", where)
            completion = self._turns(row.get(self.column("completion")), "assistant", where)
            ids, _ = self.conversation_ids(
                chat.Conversation([*prompt, *completion], first_trained=len(prompt)), where
            )
            features.append(ids[: self.data.max_length])
        batch = self.padded(features, features)
        with torch.no_grad():
            scores = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits[:, 0]
        return [{"score": float(s)} for s in scores.float().tolist()]
