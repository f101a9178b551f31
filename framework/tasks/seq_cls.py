"""SEQ_CLS: single-label, multi-label (sigmoid/BCE) and regression (num_labels=1, MSE), on one
text or a pair of texts (premise/hypothesis)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.tasks.base import Task, TaskParams


@dataclass(kw_only=True)
class SeqClsParams(TaskParams):
    problem_type: Literal["single_label", "multi_label", "regression"] = "single_label"
    labels: list[str] | None = None  # label names in id order; null = sorted labels of train


@TASKS.register("seq_cls")
class SeqCls(Task):
    Params = SeqClsParams
    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    summary = "classify texts or text pairs: single-label, multi-label, regression"
    can_pool_first_only = True  # BERT-style heads pool the first token (checked on the model)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.labels: list[str] = list(self.params.labels or [])
        kind = self.params.problem_type
        self.primary_metric = {
            "single_label": "accuracy",
            "multi_label": "micro_f1",
            "regression": "spearman",
        }[kind]
        self.greater_is_better = True

    def roles(self) -> dict[str, bool]:
        return {"text": True, "text_pair": False, "label": True}

    # ---- labels ------------------------------------------------------------------------------
    def _label_values(self, value: Any) -> list[str]:
        if self.params.problem_type == "multi_label":
            return [str(v) for v in (value if isinstance(value, list) else str(value).split(","))]
        return [str(value)]

    def _distinct_labels(self, dataset: Any) -> set[str]:
        """The label names a split uses, from its distinct column values (found by Arrow, so a
        million rows cost what a few do)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = dataset.with_format("arrow")[self.column("label")]
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            return {str(v) for v in pc.unique(pc.list_flatten(column)).to_pylist()}
        return {v for value in pc.unique(column).to_pylist() for v in self._label_values(value)}

    def fit_labels(self, splits: Any, describe: Callable[[str], str]) -> None:
        if self.params.problem_type == "regression":
            self.labels = ["score"]
            return
        col = self.column("label")
        if not self.labels:
            self.labels = sorted(self._distinct_labels(splits["train"]))
        known = set(self.labels)
        for split, dataset in splits.items():
            if self._distinct_labels(dataset) <= known:
                continue
            for index, value in enumerate(dataset[col]):  # only to name the first bad row
                bad = [v for v in self._label_values(value) if v not in known]
                if bad:
                    raise UserError(
                        f"data.columns.label: label '{bad[0]}' in split '{split}' row {index} of "
                        f"{describe(split)} (column '{col}') is not in the label set "
                        f"{self.labels}. Fix: add it to task.labels or correct the data"
                    )
        if self.params.problem_type == "single_label" and len(self.labels) < 2:
            raise UserError(
                f"task.labels: single-label classification needs at least 2 labels, "
                f"found {self.labels} in column '{col}'"
            )

    def model_kwargs(self) -> dict[str, Any]:
        problem = {
            "single_label": "single_label_classification",
            "multi_label": "multi_label_classification",
            "regression": "regression",
        }[self.params.problem_type]
        return {
            "num_labels": len(self.labels),
            "problem_type": problem,
            "id2label": dict(enumerate(self.labels)),
            "label2id": {name: i for i, name in enumerate(self.labels)},
        }

    def artifacts(self) -> dict[str, Any]:
        return {"task": "seq_cls", "problem_type": self.params.problem_type, "labels": self.labels}

    def restore_artifacts(self, extras: dict[str, Any]) -> None:
        self.labels = list(extras.get("labels", self.labels))

    # ---- data --------------------------------------------------------------------------------
    def _encode_label(self, value: Any, index: dict[str, int]) -> Any:
        """A label value as the model's target; index: label name -> id."""
        if self.params.problem_type == "regression":
            return float(value)
        if self.params.problem_type == "multi_label":
            vector = [0.0] * len(self.labels)
            for v in self._label_values(value):
                vector[index[v]] = 1.0
            return vector
        return index[str(value)]

    def _encode_texts(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair_col = self.column("text_pair")
        pair = batch.get(pair_col)
        return self.tokenizer(
            batch[self.column("text")],
            pair,
            truncation=self.data.truncation,
            max_length=self.data.max_length,
        )

    def tokenize(self, splits: Any) -> Any:
        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            out = dict(self._encode_texts(batch))
            index = {name: i for i, name in enumerate(self.labels)}
            out["labels"] = [self._encode_label(v, index) for v in batch[self.column("label")]]
            return out

        return {
            split: self.encode_split(dataset, split, encode) for split, dataset in splits.items()
        }

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        labels = [f["labels"] for f in features]
        inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        batch = self.tokenizer.pad(inputs, return_tensors="pt")
        dtype = torch.long if self.params.problem_type == "single_label" else torch.float
        batch["labels"] = torch.tensor(labels, dtype=dtype)
        return dict(batch)

    # ---- evaluation --------------------------------------------------------------------------
    def _outputs(self, logits: Any) -> Any:
        import torch

        if self.params.problem_type == "single_label":
            return logits.argmax(-1)
        if self.params.problem_type == "multi_label":
            return (torch.sigmoid(logits) > 0.5).long()
        return logits.squeeze(-1)

    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        import torch

        from framework.core import metrics

        preds, golds, loss_sum, count = [], [], 0.0, 0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                p, g = accelerator.gather_for_metrics((self._outputs(out.logits), batch["labels"]))
                n = batch["labels"].shape[0]
                loss_sum += float(out.loss) * n
                count += n
                preds.extend(p.tolist())
                golds.extend(g.tolist())
        totals = accelerator.reduce(
            torch.tensor([loss_sum, float(count)], device=accelerator.device), reduction="sum"
        )
        result = {"eval_loss": float(totals[0] / totals[1].clamp(min=1))}
        if self.params.problem_type == "single_label":
            result.update(metrics.classification_metrics(preds, golds, len(self.labels)))
        elif self.params.problem_type == "multi_label":
            result.update(
                metrics.multilabel_metrics(
                    [[int(x) for x in p] for p in preds], [[int(x) for x in g] for g in golds]
                )
            )
        else:
            result.update(metrics.regression_metrics(preds, golds))
        return result

    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        import torch

        batch = {self.column("text"): [r[self.column("text")] for r in rows]}
        if self.column("text_pair") in rows[0]:
            batch[self.column("text_pair")] = [r[self.column("text_pair")] for r in rows]
        enc = self.tokenizer.pad(self._encode_texts(batch), return_tensors="pt").to(device)
        with torch.no_grad():
            logits = model(**enc).logits
        results = []
        for row_logits in logits:
            if self.params.problem_type == "regression":
                results.append({"score": float(row_logits[0])})
            elif self.params.problem_type == "multi_label":
                probs = torch.sigmoid(row_logits).tolist()
                results.append(
                    {
                        "labels": [name for name, p in zip(self.labels, probs) if p > 0.5],
                        "probabilities": dict(zip(self.labels, probs)),
                    }
                )
            else:
                probs = torch.softmax(row_logits, -1).tolist()
                results.append(
                    {
                        "label": self.labels[int(row_logits.argmax())],
                        "probabilities": dict(zip(self.labels, probs)),
                    }
                )
        return results
