"""QUESTION_ANS: extractive QA in SQuAD form. The model scores each token as the start and the end
of the answer span; ft turns the scores back into a text span of the context.

Accepted data (any of):
- flat rows, as the hub's `squad`: `id`, `question`, `context`, `answers` =
  {"text": [...], "answer_start": [...]} (char offsets into the context);
- flat rows whose `answers` is a list of {"text", "answer_start"} objects;
- the official SQuAD JSON file ({"version", "data": [{"title", "paragraphs": [{"context",
  "qas": [...]}]}]}), flattened here.
An empty answer list is an unanswerable question (SQuAD 2.0); it needs task.allow_unanswerable.

Long contexts are cut into windows of data.max_length tokens that overlap by task.doc_stride
tokens (the tokenizer's return_overflowing_tokens + stride); offset mappings tie tokens back to
characters. Post-processing takes the n_best start and end scores of every window and keeps the
best valid span (inside the context, end >= start, at most max_answer_length tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.tasks.base import Task, TaskParams

EXTRA_KEYS = ("example_index", "offset_mapping")  # eval-only batch entries, never model inputs


@dataclass(kw_only=True)
class QuestionAnsParams(TaskParams):
    doc_stride: int = 64  # tokens shared by consecutive windows of a long context
    max_answer_length: int = 30  # longest answer span considered, in tokens
    n_best: int = 20  # start and end candidates per window searched for the best span
    allow_unanswerable: bool = False  # SQuAD 2.0: predict "" when no span beats the CLS score
    null_score_threshold: float = 0.0  # predict "" when null score > best span score + this


@dataclass
class Answer:
    """One predicted answer of post-processing."""

    text: str
    score: float
    start: int  # character offset in the context (-1 when unanswered)


def squad_rows(dataset: Any) -> Any:
    """Flatten the official nested SQuAD JSON layout into one row per question (idempotent)."""
    import datasets

    if "data" not in dataset.column_names or "question" in dataset.column_names:
        return dataset
    rows = []
    for articles in dataset["data"]:
        for article in articles if isinstance(articles, list) else [articles]:
            for paragraph in article.get("paragraphs", []):
                for qa in paragraph.get("qas", []):
                    answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                    rows.append(
                        {
                            "id": str(qa.get("id", len(rows))),
                            "title": article.get("title", ""),
                            "context": paragraph["context"],
                            "question": qa["question"],
                            "answers": {
                                "text": [a["text"] for a in answers],
                                "answer_start": [int(a["answer_start"]) for a in answers],
                            },
                        }
                    )
    return datasets.Dataset.from_list(rows)


def answer_lists(value: Any) -> tuple[list[str], list[int]]:
    """(texts, starts) from {"text": [...], "answer_start": [...]} or [{"text", "answer_start"}]."""
    if value is None:
        return [], []
    if isinstance(value, dict):
        texts, starts = value.get("text", []), value.get("answer_start", [])
        if isinstance(texts, str):
            texts, starts = [texts], [starts]
        return [str(t) for t in texts], [int(s) for s in starts]
    if isinstance(value, list):
        return [str(a["text"]) for a in value], [int(a["answer_start"]) for a in value]
    raise TypeError(type(value).__name__)


def best_answer(
    context: str,
    windows: Sequence[tuple[Sequence[Sequence[int]], Sequence[float], Sequence[float]]],
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_unanswerable: bool = False,
    null_score_threshold: float = 0.0,
    cls_index: int = 0,
) -> Answer:
    """Pick the best answer span of one example from the scores of its windows.

    `windows` holds, per window, the offset mapping (char (start, end) per token, (-1, -1) for
    tokens outside the context), the start logits and the end logits. A span is valid when both
    ends are context tokens, end >= start and it has at most max_answer_length tokens; its score
    is start logit + end logit. With allow_unanswerable, "" wins when the smallest CLS score
    (start + end at cls_index) over the windows beats the best span by null_score_threshold.
    """
    import numpy as np

    best = Answer(text="", score=float("-inf"), start=-1)
    null_score = float("inf")
    for offsets, start_logits, end_logits in windows:
        start_logits = np.asarray(start_logits, dtype=np.float64)
        end_logits = np.asarray(end_logits, dtype=np.float64)
        n = min(len(offsets), len(start_logits))
        null_score = min(null_score, float(start_logits[cls_index] + end_logits[cls_index]))
        starts = np.argsort(start_logits[:n])[::-1][:n_best]
        ends = np.argsort(end_logits[:n])[::-1][:n_best]
        for s in starts:
            if offsets[s][0] < 0:
                continue
            for e in ends:
                if offsets[e][0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if score > best.score:
                    begin, finish = int(offsets[s][0]), int(offsets[e][1])
                    best = Answer(text=context[begin:finish], score=score, start=begin)
    if allow_unanswerable and (
        best.score == float("-inf") or null_score > best.score + null_score_threshold
    ):
        return Answer(text="", score=null_score, start=-1)
    return best


@TASKS.register("question_ans")
class QuestionAns(Task):
    Params = QuestionAnsParams
    auto_model = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    summary = "extractive QA, SQuAD form, stride windows, n-best spans; EM / F1"
    primary_metric = "f1"  # SQuAD token F1 (normalised), 0..1
    greater_is_better = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Windows are padded on the right, so position 0 is the CLS (or first) token of every
        # window and offsets line up with logits without shifting.
        self.tokenizer.padding_side = "right"

    def roles(self) -> dict[str, bool]:
        return {"question": True, "context": True, "answers": True, "id": False}

    @classmethod
    def params_problems(cls, params: QuestionAnsParams, run: Any) -> list[str]:
        found = []
        if params.doc_stride < 0:
            found.append(f"task.doc_stride={params.doc_stride}: must be >= 0")
        elif params.doc_stride >= run.data.max_length // 2:
            found.append(
                f"task.doc_stride={params.doc_stride}: must be under half of "
                f"data.max_length={run.data.max_length} (windows must leave room for "
                f"the question and new context). Fix: lower task.doc_stride"
            )
        for key in ("max_answer_length", "n_best"):
            if getattr(params, key) < 1:
                found.append(f"task.{key}={getattr(params, key)}: must be >= 1")
        if not run.data.truncation:
            found.append(
                "data.truncation=false: question_ans never drops long contexts, it cuts "
                "them into stride windows. Fix: data.truncation=true"
            )
        return found

    # ---- columns and answers -----------------------------------------------------------------
    def check_columns(self, splits: Any, describe: Callable[[str], str]) -> None:
        for split in list(splits):
            splits[split] = squad_rows(splits[split])
        super().check_columns(splits, describe)

    def fit_labels(self, splits: Any, describe: Callable[[str], str]) -> None:
        """Check every answer: its text must be at answer_start in the context."""
        c_col, a_col = self.column("context"), self.column("answers")
        for split, dataset in splits.items():
            dataset = squad_rows(dataset)
            for index, (context, value) in enumerate(zip(dataset[c_col], dataset[a_col])):
                where = f"split '{split}' row {index} of {describe(split)}"
                try:
                    texts, starts = answer_lists(value)
                except (TypeError, KeyError, ValueError):
                    raise UserError(
                        f"data.columns.answers: {where} has answers {value!r}; expected "
                        f"{{'text': [...], 'answer_start': [...]}} (SQuAD form)"
                    ) from None
                if len(texts) != len(starts):
                    raise UserError(
                        f"data.columns.answers: {where} has {len(texts)} answer texts "
                        f"but {len(starts)} answer_start offsets"
                    )
                for text, start in zip(texts, starts):
                    if context[start : start + len(text)] != text:
                        raise UserError(
                            f"data.columns.answers: {where}: answer {text!r} is not at "
                            f"answer_start={start} of the context (found "
                            f"{context[start : start + len(text)]!r}). Fix the offset (characters, "
                            f"0-based)"
                        )
                if not texts and not self.params.allow_unanswerable:
                    raise UserError(
                        f"task.allow_unanswerable=false: {where} has no answer (a SQuAD 2.0 "
                        f"unanswerable question). Fix: task.allow_unanswerable=true, or drop it"
                    )

    def artifacts(self) -> dict[str, Any]:
        return {"task": "question_ans", "allow_unanswerable": self.params.allow_unanswerable}

    # ---- data --------------------------------------------------------------------------------
    def encode_windows(self, questions: list[str], contexts: list[str]) -> Any:
        """Tokenize (question, context) pairs into overlapping windows of the context."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise UserError(
                "model.checkpoint: question_ans needs a fast (Rust) tokenizer for "
                "offset mappings; this checkpoint only has a slow one"
            )
        # Questions are stripped: leading spaces waste window room (as in the HF examples).
        return self.tokenizer(
            [q.strip() for q in questions],
            contexts,
            truncation="only_second",
            max_length=self.data.max_length,
            stride=self.params.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )

    def _cls_index(self, input_ids: list[int]) -> int:
        cls = self.tokenizer.cls_token_id
        return input_ids.index(cls) if cls is not None and cls in input_ids else 0

    def _windows(self, batch: dict[str, list[Any]], with_positions: bool) -> dict[str, Any]:
        contexts = [str(c) for c in batch[self.column("context")]]
        enc = self.encode_windows([str(q) for q in batch[self.column("question")]], contexts)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets_all = enc.pop("offset_mapping")
        starts, ends, offsets_out = [], [], []
        for i, offsets in enumerate(offsets_all):
            sequence_ids = enc.sequence_ids(i)
            # Keep offsets of context tokens only; everything else is (-1, -1).
            offsets_out.append(
                [list(o) if sequence_ids[k] == 1 else [-1, -1] for k, o in enumerate(offsets)]
            )
            cls = self._cls_index(enc["input_ids"][i])
            texts, answer_starts = (
                answer_lists(batch[self.column("answers")][sample_map[i]])
                if with_positions
                else ([], [])
            )
            if not texts:
                starts.append(cls)
                ends.append(cls)
                continue
            char_start = answer_starts[0]
            char_end = char_start + len(texts[0])
            context_tokens = [k for k, s in enumerate(sequence_ids) if s == 1]
            first, last = context_tokens[0], context_tokens[-1]
            if offsets[first][0] > char_start or offsets[last][1] < char_end:
                starts.append(cls)  # the answer is not (fully) in this window
                ends.append(cls)
                continue
            token_start = first
            while token_start <= last and offsets[token_start][0] <= char_start:
                token_start += 1
            token_end = last
            while token_end >= first and offsets[token_end][1] >= char_end:
                token_end -= 1
            starts.append(token_start - 1)
            ends.append(token_end + 1)
        out = dict(enc)
        out["start_positions"] = starts
        out["end_positions"] = ends
        out["example_index"] = [int(batch["__index"][s]) for s in sample_map]
        out["offset_mapping"] = offsets_out
        return out

    def tokenize(self, splits: Any) -> Any:
        tokenized = {}
        for split, dataset in splits.items():
            dataset = squad_rows(dataset)
            indexed = dataset.add_column("__index", list(range(len(dataset))))
            encoded = indexed.map(
                self._windows,
                batched=True,
                remove_columns=indexed.column_names,
                fn_kwargs={"with_positions": True},
                desc=f"tokenizing {split}",
                **self.map_options(indexed, split, "encode"),
            )
            if split == "train":  # offsets and example ids only serve evaluation
                encoded = encoded.remove_columns(["example_index", "offset_mapping"])
            tokenized[split] = encoded
        return tokenized

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad windows; eval batches also carry example_index [B] and offset_mapping [B, T, 2]
        (padding offsets are -1), which compute_loss and evaluate keep away from the model."""
        import torch

        inputs = [
            {
                k: v
                for k, v in f.items()
                if k not in EXTRA_KEYS + ("start_positions", "end_positions")
            }
            for f in features
        ]
        batch = dict(self.tokenizer.pad(inputs, return_tensors="pt"))
        for key in ("start_positions", "end_positions"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        if "example_index" in features[0]:
            width = batch["input_ids"].shape[1]
            offsets = torch.full((len(features), width, 2), -1, dtype=torch.long)
            for i, f in enumerate(features):
                offsets[i, : len(f["offset_mapping"])] = torch.tensor(
                    f["offset_mapping"], dtype=torch.long
                )
            batch["offset_mapping"] = offsets
            batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        return batch

    # ---- training and evaluation -------------------------------------------------------------
    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**{k: v for k, v in batch.items() if k not in EXTRA_KEYS}).loss

    def _scores(self, model: Any, loader: Any, accelerator: Any) -> tuple[float, dict[int, list]]:
        """Mean loss and, per example index, its windows' (offsets, start, end logits)."""
        import torch

        windows: dict[int, list] = {}
        loss_sum, count = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                out = model(**{k: v for k, v in batch.items() if k not in EXTRA_KEYS})
                n = batch["input_ids"].shape[0]
                if getattr(out, "loss", None) is not None:
                    loss_sum += float(out.loss) * n
                    count += n
                tensors = (out.start_logits, out.end_logits, batch["offset_mapping"])
                tensors = tuple(
                    accelerator.pad_across_processes(t, dim=1, pad_index=-1) for t in tensors
                )
                start, end, offsets, index = accelerator.gather_for_metrics(
                    tensors + (batch["example_index"],)
                )
                for s, e, o, i in zip(
                    start.tolist(), end.tolist(), offsets.tolist(), index.tolist()
                ):
                    windows.setdefault(int(i), []).append((o, s, e))
        totals = accelerator.reduce(
            torch.tensor([loss_sum, float(count)], device=accelerator.device), reduction="sum"
        )
        return float(totals[0] / totals[1].clamp(min=1)), windows

    def _answer(self, context: str, windows: list) -> Answer:
        p = self.params
        return best_answer(
            context,
            windows,
            n_best=p.n_best,
            max_answer_length=p.max_answer_length,
            allow_unanswerable=p.allow_unanswerable,
            null_score_threshold=p.null_score_threshold,
            cls_index=0,
        )

    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        from framework.core import metrics

        loss, windows = self._scores(model, loader, accelerator)
        result = {"eval_loss": loss}
        if raw is None:
            return result
        raw = squad_rows(raw)
        contexts, answers = raw[self.column("context")], raw[self.column("answers")]
        predictions, references = [], []
        for index in range(len(raw)):
            predictions.append(self._answer(contexts[index], windows.get(index, [])).text)
            references.append(answer_lists(answers[index])[0])
        result.update(metrics.squad_metrics(predictions, references))
        return result

    # ---- prediction --------------------------------------------------------------------------
    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """Per row: the answer text, its character start in the context (-1: no answer) and score."""
        import torch

        batch = {
            self.column("question"): [str(r[self.column("question")]) for r in rows],
            self.column("context"): [str(r[self.column("context")]) for r in rows],
            self.column("answers"): [None] * len(rows),
            "__index": list(range(len(rows))),
        }
        features = self._windows(batch, with_positions=False)
        keys = [k for k in features if k not in EXTRA_KEYS + ("start_positions", "end_positions")]
        windows: dict[int, list] = {}
        encoded = self.tokenizer.pad({k: features[k] for k in keys}, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model(**encoded)
        for w, index in enumerate(features["example_index"]):
            n = len(features["offset_mapping"][w])
            windows.setdefault(index, []).append(
                (
                    features["offset_mapping"][w],
                    out.start_logits[w, :n].tolist(),
                    out.end_logits[w, :n].tolist(),
                )
            )
        results = []
        for index, row in enumerate(rows):
            answer = self._answer(str(row[self.column("context")]), windows.get(index, []))
            results.append({"answer": answer.text, "start": answer.start, "score": answer.score})
        return results
