"""TOKEN_CLS: tag every word of a pre-split sentence (NER, chunking, POS) in BIO/IOB2 or IOBES.

Input rows hold a list of words (`tokens`) and one tag per word (`tags`), from JSON/JSONL or from a
CoNLL token/tag file (data.source.train=FILE.conll). Word labels are aligned to subwords through
the fast tokenizer's word_ids(): the first subtoken of a word carries the word's label, the others
-100 (ignored by the loss), so each word is scored once. Evaluation is entity-level
precision/recall/F1 with seqeval's conventions (framework.core.metrics.entity_metrics).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.tasks.base import Task, TaskParams

IGNORE_INDEX = -100  # label value the loss skips
TAG_RE = re.compile(r"^(O|[BIES]-.+)$")  # IOB2 / IOBES tag spelling


@dataclass(kw_only=True)
class TokenClsParams(TaskParams):
    labels: list[str] | None = None  # tag names in id order; null = "O" then sorted train tags
    label_all_subtokens: bool = False  # true: every subtoken gets its word's tag (B- becomes I-)


@TASKS.register("token_cls")
class TokenCls(Task):
    Params = TokenClsParams
    auto_model = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    summary = "tag words (NER, BIO/IOBES; JSON or CoNLL); entity-level P/R/F1"
    primary_metric = "f1"  # entity-level micro F1
    greater_is_better = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.labels: list[str] = list(self.params.labels or [])

    def roles(self) -> dict[str, bool]:
        return {"tokens": True, "tags": True}

    # ---- labels ------------------------------------------------------------------------------
    def _tag_names(self, dataset: Any) -> list[str] | None:
        """Names for integer tags: the dataset's ClassLabel names (hub NER sets), else task.labels."""
        feature = dataset.features.get(self.column("tags"))
        inner = getattr(feature, "feature", None)
        if inner is None and isinstance(feature, list) and feature:
            inner = feature[0]
        names = getattr(inner, "names", None)
        return list(names) if names else (list(self.params.labels) if self.params.labels else None)

    def _as_strings(self, tags: list[Any], names: list[str] | None, where: str) -> list[str]:
        if tags and not isinstance(tags[0], str):
            if names is None:
                raise UserError(
                    f"task.labels: the tags of {where} are integers and the data has "
                    f"no label names. Fix: set task.labels to the tag names in id order"
                )
            try:
                return [names[int(t)] for t in tags]
            except IndexError:
                raise UserError(
                    f"task.labels: tag id {max(int(t) for t in tags)} in {where} is "
                    f"out of range for {len(names)} label names"
                ) from None
        return [str(t) for t in tags]

    def fit_labels(self, splits: Any, describe: Callable[[str], str]) -> None:
        tokens_col, tags_col = self.column("tokens"), self.column("tags")
        seen: set = set()
        converted = {}
        for split, dataset in splits.items():
            names = self._tag_names(dataset)
            rows = []
            for index, (words, tags) in enumerate(zip(dataset[tokens_col], dataset[tags_col])):
                where = f"split '{split}' row {index} of {describe(split)}"
                if not isinstance(words, list) or not isinstance(tags, list):
                    raise UserError(
                        f"data.columns.tokens: {where} must hold lists of words and "
                        f"tags (columns '{tokens_col}', '{tags_col}'), got "
                        f"{type(words).__name__} and {type(tags).__name__}"
                    )
                if len(words) != len(tags):
                    raise UserError(
                        f"data.columns.tags: {where} has {len(words)} words but "
                        f"{len(tags)} tags; every word needs exactly one tag"
                    )
                tags = self._as_strings(tags, names, where)
                bad = [t for t in tags if not TAG_RE.match(t)]
                if bad:
                    raise UserError(
                        f"data.columns.tags: tag '{bad[0]}' in {where} is not BIO/IOB2 "
                        f"or IOBES (O, B-TYPE, I-TYPE, E-TYPE, S-TYPE). Fix the data"
                    )
                rows.append(tags)
                if split == "train":
                    seen.update(tags)
            converted[split] = rows
        if not self.labels:
            self.labels = ["O"] + sorted(seen - {"O"})
        known = set(self.labels)
        for split, rows in converted.items():
            for index, tags in enumerate(rows):
                unknown = [t for t in tags if t not in known]
                if unknown:
                    raise UserError(
                        f"data.columns.tags: tag '{unknown[0]}' in split '{split}' row {index} of "
                        f"{describe(split)} is not in the label set {self.labels}. Fix: add it to "
                        f"task.labels or correct the data"
                    )
        if len(self.labels) < 2:
            raise UserError(
                f"task.labels: token classification needs at least 2 tags, found "
                f"{self.labels} in column '{tags_col}'"
            )

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": {name: i for i, name in enumerate(self.labels)},
        }

    def artifacts(self) -> dict[str, Any]:
        return {
            "task": "token_cls",
            "labels": self.labels,
            "label_all_subtokens": self.params.label_all_subtokens,
        }

    def restore_artifacts(self, extras: dict[str, Any]) -> None:
        self.labels = list(extras.get("labels", self.labels))

    # ---- data --------------------------------------------------------------------------------
    def _check_fast(self) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise UserError(
                "model.checkpoint: token_cls needs a fast (Rust) tokenizer to map "
                "subwords to words (word_ids); this checkpoint only has a slow one"
            )

    def _encode_words(self, words: list[list[str]]) -> Any:
        self._check_fast()
        try:
            return self.tokenizer(
                words,
                is_split_into_words=True,
                truncation=self.data.truncation,
                max_length=self.data.max_length,
            )
        except ValueError as error:  # e.g. byte-level BPE saved without add_prefix_space
            raise UserError(
                f"model.checkpoint: its tokenizer cannot encode pre-split words "
                f"({str(error).splitlines()[0]})"
            ) from None

    def align_labels(
        self, word_ids: list[int | None], tag_ids: list[int], all_subtokens: bool = False
    ) -> list[int]:
        """Subword labels: the word's tag on its first subtoken, -100 on the rest and on specials
        (with label_all_subtokens, later subtokens get the tag too, B-X turned into I-X)."""
        labels, previous = [], None
        for word in word_ids:
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous:
                labels.append(tag_ids[word])
            elif all_subtokens:
                name = self.labels[tag_ids[word]]
                inside = "I-" + name[2:] if name.startswith("B-") else name
                labels.append(self.labels.index(inside) if inside in self.labels else tag_ids[word])
            else:
                labels.append(IGNORE_INDEX)
            previous = word
        return labels

    def tokenize(self, splits: Any) -> Any:
        index = {name: i for i, name in enumerate(self.labels)}

        def encode(batch: dict[str, list[Any]], split: str, names: Any) -> dict[str, Any]:
            words = [[str(w) for w in ws] for ws in batch[self.column("tokens")]]
            encoded = self._encode_words(words)
            # label_all_subtokens changes what is trained, never what is scored: eval splits label
            # first subtokens only, so every word counts once.
            all_subtokens = self.params.label_all_subtokens and split == "train"
            out = dict(encoded)
            out["labels"] = []
            if split != "train":
                out["word_index"] = []
            for i, tags in enumerate(batch[self.column("tags")]):
                tag_names = self._as_strings(list(tags), names, f"split '{split}'")
                word_ids = encoded.word_ids(i)
                out["labels"].append(
                    self.align_labels(word_ids, [index[t] for t in tag_names], all_subtokens)
                )
                if split != "train":
                    out["word_index"].append(first_subtoken_words(word_ids))
            return out

        return {
            split: self.encode_split(
                dataset, split, encode, {"split": split, "names": self._tag_names(dataset)}
            )
            for split, dataset in splits.items()
        }

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad inputs with the tokenizer and labels with -100 (transformers' collator); eval
        batches also carry `word_index` (the word at each first subtoken, -1 elsewhere)."""
        import torch
        from transformers import DataCollatorForTokenClassification

        if not hasattr(self, "_collator"):
            self._collator = DataCollatorForTokenClassification(
                self.tokenizer, label_pad_token_id=IGNORE_INDEX
            )
        batch = dict(
            self._collator([{k: v for k, v in f.items() if k != "word_index"} for f in features])
        )
        if "word_index" in features[0]:
            width = batch["input_ids"].shape[1]
            word_index = torch.full((len(features), width), -1, dtype=torch.long)
            left = self.tokenizer.padding_side == "left"
            for i, f in enumerate(features):
                n = len(f["word_index"])
                if left:
                    word_index[i, width - n :] = torch.tensor(f["word_index"])
                else:
                    word_index[i, :n] = torch.tensor(f["word_index"])
            batch["word_index"] = word_index
        return batch

    # ---- training and evaluation -------------------------------------------------------------
    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return model(**model_inputs(batch)).loss

    def count_items(self, batch: dict[str, Any]) -> Any:
        """Labelled (sub)tokens: the model's loss is their mean."""
        return (batch["labels"] != IGNORE_INDEX).sum().float()

    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        import torch

        from framework.core import metrics

        pred_tags: list[list[str]] = []
        gold_tags: list[list[str]] = []
        loss_sum, count = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                out = model(**model_inputs(batch))
                n = batch["labels"].shape[0]
                loss_sum += float(out.loss) * n
                count += n
                tensors = [out.logits.argmax(-1), batch["labels"], batch["word_index"]]
                tensors = [
                    accelerator.pad_across_processes(t, dim=1, pad_index=-1) for t in tensors
                ]
                preds, labels, words = accelerator.gather_for_metrics(tuple(tensors))
                for p, g, w in zip(preds.tolist(), labels.tolist(), words.tolist()):
                    p_tags, g_tags = self.word_tags(p, g, w)
                    pred_tags.append(p_tags)
                    gold_tags.append(g_tags)
        if raw is not None and len(raw) == len(gold_tags):
            # Score against the full gold sentence: words cut off by data.max_length (or with no
            # subtoken at all) count as predicted "O", so truncation cannot hide entities.
            gold_tags = self._raw_tags(raw)
            pred_tags = [p + ["O"] * (len(g) - len(p)) for p, g in zip(pred_tags, gold_tags)]
        totals = accelerator.reduce(
            torch.tensor([loss_sum, float(count)], device=accelerator.device), reduction="sum"
        )
        result = {"eval_loss": float(totals[0] / totals[1].clamp(min=1))}
        result.update(metrics.entity_metrics(pred_tags, gold_tags))
        return result

    def word_tags(self, predictions: list[int], labels: list[int], words: list[int]) -> Any:
        """(predicted, gold) tags per word of one sequence, from its first-subtoken positions.
        Words without a subtoken in the sequence are predicted "O" (gold "O" too when the raw
        sentence is not available)."""
        n = max(words) + 1 if words else 0
        pred, gold = ["O"] * n, ["O"] * n
        for p, g, w in zip(predictions, labels, words):
            if w >= 0:
                pred[w] = self.labels[p] if 0 <= p < len(self.labels) else "O"
                gold[w] = self.labels[g] if g != IGNORE_INDEX else "O"
        return pred, gold

    def _raw_tags(self, raw: Any) -> list[list[str]]:
        names = self._tag_names(raw)
        return [
            self._as_strings(list(tags), names, "the eval split")
            for tags in raw[self.column("tags")]
        ]

    # ---- prediction --------------------------------------------------------------------------
    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """Per row: the tag of every word and the entity spans (type, word start/end, text).
        A row's tokens may be a list of words or a string (split on whitespace)."""
        import torch

        from framework.core.metrics import get_entities

        column = self.column("tokens")
        words = [
            r[column].split() if isinstance(r[column], str) else [str(w) for w in r[column]]
            for r in rows
        ]
        encoded = self._encode_words(words)
        batch = self.tokenizer.pad(dict(encoded), return_tensors="pt").to(device)
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1).tolist()
        results = []
        for i, ws in enumerate(words):
            tags = ["O"] * len(ws)
            seen = set()
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = self.labels[predicted[i][position]]
            entities = [
                {"type": t, "start": s, "end": e, "text": " ".join(ws[s : e + 1])}
                for t, s, e in get_entities(tags)
            ]
            results.append({"tags": tags, "entities": entities})
        return results


EXTRA_KEYS = ("word_index",)  # batch entries for evaluation only, never given to the model


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch without ft's evaluation-only entries."""
    return {k: v for k, v in batch.items() if k not in EXTRA_KEYS}


def first_subtoken_words(word_ids: list[int | None]) -> list[int]:
    """Per subtoken: the word index at a word's first subtoken, -1 elsewhere (specials, rest)."""
    out, previous = [], None
    for word in word_ids:
        out.append(word if word is not None and word != previous else -1)
        previous = word
    return out
