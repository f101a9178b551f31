"""FEATURE_EXTRACTION: fine-tune an encoder (AutoModel, no head) to produce sentence embeddings.

Training rows are (anchor, positive) pairs, optionally with a hard `negative`. The embedding of a
text is the mean of its token states (or the first, [CLS], token state), L2-normalised. The loss
is the in-batch contrastive loss (InfoNCE / "multiple negatives ranking"): each anchor must pick
its own positive among all positives and hard negatives of the batch, with similarities divided
by a temperature. Evaluation ranks, for every held-out anchor, all held-out positives and
negatives (recall@k, MRR), and, when the data has a scored split (sentence1, sentence2, score),
reports the Spearman correlation of cosine similarity with the scores. `ft predict` writes each
row's embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from framework.core.errors import UserError
from framework.core.registry import TASKS
from framework.tasks.base import Task, TaskParams

GROUPS = ("anchor", "positive", "negative")  # text roles of a training row, in batch order
SCORED_ROLES = ("sentence1", "sentence2", "score")


@dataclass(kw_only=True)
class FeatureExtractionParams(TaskParams):
    # mean of token states (sentence-transformers) or [CLS]
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True  # L2-normalise embeddings: similarities are cosines
    temperature: float = 0.05  # softmax temperature of the contrastive loss (0.05 = scale 20)
    hard_negatives: bool = True  # use the `negative` column, when the data has one
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # recall@k reported
    scored_split: str = "scored"  # split of (sentence1, sentence2, score) pairs for Spearman


@TASKS.register("feature_extraction")
class FeatureExtraction(Task):
    Params = FeatureExtractionParams
    auto_model = "AutoModel"
    peft_task_type = "FEATURE_EXTRACTION"
    summary = "sentence embeddings, contrastive loss; recall@k, MRR, Spearman"
    primary_metric = "recall@1"
    greater_is_better = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._scored: Any | None = None  # tokenized scored split, evaluated beside validation

    def roles(self) -> dict[str, bool]:
        return {"anchor": True, "positive": True, "negative": False}

    def predict_roles(self) -> dict[str, bool]:
        return {"text": True}

    @classmethod
    def params_problems(cls, params: FeatureExtractionParams, run: Any) -> list[str]:
        found = []
        if params.temperature <= 0:
            found.append(f"task.temperature={params.temperature}: must be > 0 (try 0.05)")
        if not params.retrieval_ks or any(k < 1 for k in params.retrieval_ks):
            found.append(f"task.retrieval_ks={params.retrieval_ks}: must be positive integers")
        return found

    # ---- columns -----------------------------------------------------------------------------
    def check_columns(self, splits: Any, describe: Callable[[str], str]) -> None:
        pairs = {s: d for s, d in splits.items() if s != self.params.scored_split}
        super().check_columns(pairs, describe)
        if self.params.scored_split in splits:
            dataset = splits[self.params.scored_split]
            for role in SCORED_ROLES:
                col = self.column(role)
                if col not in dataset.column_names:
                    raise UserError(
                        f"data.columns.{role}: column '{col}' not found in split "
                        f"'{self.params.scored_split}' of {describe(self.params.scored_split)}; it "
                        f"has columns {dataset.column_names}. Fix: data.columns.{role}=<one of those>"
                    )

    def fit_labels(self, splits: Any, describe: Callable[[str], str]) -> None:
        """No labels; check that hard negatives, when used, are present on every row."""
        col = self.column("negative")
        for split, dataset in splits.items():
            if split == self.params.scored_split or not self._uses_negatives(dataset):
                continue
            for index, value in enumerate(dataset[col]):
                if value is None or not str(value).strip():
                    raise UserError(
                        f"data.columns.negative: split '{split}' row {index} of {describe(split)} "
                        f"has no hard negative in column '{col}'. Fix: fill it, or set "
                        f"task.hard_negatives=false"
                    )

    def _uses_negatives(self, dataset: Any) -> bool:
        return self.params.hard_negatives and self.column("negative") in dataset.column_names

    def artifacts(self) -> dict[str, Any]:
        return {
            "task": "feature_extraction",
            "pooling": self.params.pooling,
            "normalize": self.params.normalize,
        }

    # ---- data --------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> Any:
        return self.tokenizer(
            [str(t) for t in texts],
            truncation=self.data.truncation,
            max_length=self.data.max_length,
        )

    def tokenize(self, splits: Any) -> Any:
        def encode_pairs(batch: dict[str, list[Any]], roles: list[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for group, role in zip(GROUPS, roles):
                enc = self.encode(batch[self.column(role)])
                out[f"{group}_input_ids"] = enc["input_ids"]
                out[f"{group}_attention_mask"] = enc["attention_mask"]
            if self.column("score") in batch and roles[0] == "sentence1":
                out["score"] = [float(s) for s in batch[self.column("score")]]
            return out

        tokenized = {}
        for split, dataset in splits.items():
            if split == self.params.scored_split:
                roles = ["sentence1", "sentence2"]
            else:
                roles = ["anchor", "positive"] + (
                    ["negative"] if self._uses_negatives(dataset) else []
                )
            tokenized[split] = self.encode_split(
                dataset,
                split,
                encode_pairs,
                {"roles": roles},
                length_of=lambda ex: max(
                    len(ex[f"{g}_input_ids"]) for g in GROUPS if f"{g}_input_ids" in ex
                ),
            )
        self.use_tokenized(tokenized)
        return tokenized

    def use_tokenized(self, tokenized: dict[str, Any]) -> None:
        if self.params.scored_split in tokenized:
            self._scored = tokenized[self.params.scored_split]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """input_ids and attention_mask of shape [batch, groups, length]: group 0 is the anchor,
        1 the positive, 2 the hard negative (if any); every text padded to the batch's longest.
        Scored pairs also carry `score` [batch]."""
        import torch

        groups = [g for g in GROUPS if f"{g}_input_ids" in features[0]]
        width = max(len(f[f"{g}_input_ids"]) for f in features for g in groups)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(features), len(groups), width), pad, dtype=torch.long)
        mask = torch.zeros((len(features), len(groups), width), dtype=torch.long)
        for i, f in enumerate(features):
            for j, g in enumerate(groups):
                n = len(f[f"{g}_input_ids"])
                ids[i, j, :n] = torch.tensor(f[f"{g}_input_ids"])
                mask[i, j, :n] = torch.tensor(f[f"{g}_attention_mask"])
        batch = {"input_ids": ids, "attention_mask": mask}
        if "score" in features[0]:
            batch["score"] = torch.tensor([f["score"] for f in features], dtype=torch.float)
        return batch

    # ---- embeddings and loss -----------------------------------------------------------------
    def embed(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        """Pooled (and normalised) embeddings [N, hidden] of token ids [N, length]."""
        import torch

        out = model(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.params.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.params.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def embed_groups(self, model: Any, batch: dict[str, Any]) -> Any:
        """Embeddings [batch, groups, hidden], all texts of the batch in one forward pass."""
        b, g, t = batch["input_ids"].shape
        flat = self.embed(
            model, batch["input_ids"].reshape(b * g, t), batch["attention_mask"].reshape(b * g, t)
        )
        return flat.reshape(b, g, -1)

    def contrastive_loss(self, embeddings: Any) -> Any:
        """InfoNCE over the batch: anchor i's target is positive i among every positive and
        every hard negative of the batch."""
        import torch

        anchors = embeddings[:, 0]
        documents = embeddings[:, 1:].transpose(0, 1).reshape(-1, embeddings.shape[-1])
        logits = anchors @ documents.T / self.params.temperature
        targets = torch.arange(anchors.shape[0], device=anchors.device)
        return torch.nn.functional.cross_entropy(logits.float(), targets)

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        return self.contrastive_loss(self.embed_groups(model, batch))

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        import torch

        chunks, scores = [], []
        loss_sum, count = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                embeddings = self.embed_groups(model, batch)
                n = embeddings.shape[0]
                if "score" not in batch:
                    loss_sum += float(self.contrastive_loss(embeddings)) * n
                    count += n
                gathered = accelerator.gather_for_metrics(embeddings)
                chunks.append(gathered.float().cpu())
                if "score" in batch:
                    scores.append(accelerator.gather_for_metrics(batch["score"]).cpu())
        embeddings = torch.cat(chunks)
        result: dict[str, float] = {}
        if scores:  # this loader is itself a scored split
            return self._spearman(embeddings, torch.cat(scores))
        totals = accelerator.reduce(
            torch.tensor([loss_sum, float(count)], device=accelerator.device), reduction="sum"
        )
        result["eval_loss"] = float(totals[0] / totals[1].clamp(min=1))
        result.update(self.retrieval(embeddings, raw))
        if self._scored is not None:
            result.update(self.scored_metrics(accelerator.unwrap_model(model), accelerator.device))
        return result

    def retrieval(self, embeddings: Any, raw: Any = None) -> dict[str, float]:
        """Rank every positive and hard negative of the split for each anchor. Texts that occur
        twice (when the raw rows are at hand) are one document, so a duplicate of the positive is
        not counted as a miss."""
        import numpy as np

        from framework.core import metrics

        n, groups, _ = embeddings.shape
        anchors = embeddings[:, 0].numpy()
        documents = embeddings[:, 1:].transpose(0, 1).reshape(n * (groups - 1), -1).numpy()
        relevant = list(range(n))
        if raw is not None and len(raw) == n:
            texts = [str(t) for t in raw[self.column("positive")]]
            if groups == 3:
                texts += [str(t) for t in raw[self.column("negative")]]
            first: dict[str, int] = {}
            keep = [first.setdefault(t, i) == i for i, t in enumerate(texts)]
            documents = documents[np.asarray(keep)]
            position = {t: k for k, t in enumerate(t for t, kept in zip(texts, keep) if kept)}
            relevant = [position[texts[i]] for i in range(n)]
        similarity = anchors @ documents.T
        return metrics.retrieval_metrics(similarity, relevant, ks=self.params.retrieval_ks)

    def _spearman(self, embeddings: Any, scores: Any) -> dict[str, float]:
        from framework.core import metrics

        cosine = (embeddings[:, 0] * embeddings[:, 1]).sum(-1)
        if not self.params.normalize:
            cosine = cosine / (embeddings[:, 0].norm(dim=-1) * embeddings[:, 1].norm(dim=-1)).clamp(
                min=1e-9
            )
        return {
            "spearman": metrics.regression_metrics(cosine.tolist(), scores.tolist())["spearman"]
        }

    def scored_metrics(self, model: Any, device: Any, batch_size: int = 64) -> dict[str, float]:
        """Spearman of cosine similarity with the scored split's scores (every process computes
        it whole: the split is small)."""
        import torch

        chunks, scores = [], []
        with torch.no_grad():
            for start in range(0, len(self._scored), batch_size):
                rows = [
                    self._scored[i]
                    for i in range(start, min(start + batch_size, len(self._scored)))
                ]
                batch = self.collate(rows)
                chunks.append(
                    self.embed_groups(model, {k: v.to(device) for k, v in batch.items()})
                    .float()
                    .cpu()
                )
                scores.append(batch["score"])
        found = self._spearman(torch.cat(chunks), torch.cat(scores))
        return {f"{self.params.scored_split}_spearman": found["spearman"]}

    # ---- prediction --------------------------------------------------------------------------
    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """Per row: the embedding of its `text` column (data.columns.text), as a list of floats."""
        import torch

        enc = self.tokenizer.pad(
            dict(self.encode([r[self.column("text")] for r in rows])), return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            vectors = self.embed(model, enc["input_ids"], enc["attention_mask"])
        return [{"embedding": [round(float(x), 6) for x in v]} for v in vectors.float().cpu()]
