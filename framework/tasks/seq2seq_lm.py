"""SEQ_2_SEQ_LM: encoder-decoder generation (T5, BART, or an EncoderDecoderModel warm-started from
two encoders, model family bert2bert). Rows hold a `source` and a `target` text (JSONL, CSV, ...).
Training is teacher-forced cross-entropy on the target tokens; evaluation also generates from the
sources with configurable settings and scores ROUGE-1/2/L, BLEU and chrF against the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import TASKS
from framework.tasks.base import Task, TaskParams, safe_exp

IGNORE_INDEX = -100  # label value the loss skips


@dataclass(kw_only=True)
class Seq2SeqLmParams(TaskParams):
    source_prefix: str = ""  # prepended to every source, e.g. "summarize: " for T5 checkpoints
    max_target_length: int = 64  # target tokens kept for training (longer targets are cut)
    generate_eval: bool = True  # generate on eval and score ROUGE / BLEU / chrF (slower)
    max_generate_examples: int = 200  # eval examples scored by generation (the rest: loss only)
    max_new_tokens: int = 32  # generation length limit, in tokens
    num_beams: int = 1  # 1 = greedy; more = beam search (slower, often better)
    translation_metrics: bool = True  # also BLEU and chrF (meaningful for translation-like data)


@TASKS.register("seq2seq_lm")
class Seq2SeqLm(Task):
    Params = Seq2SeqLmParams
    auto_model = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    summary = "encoder-decoder source -> target; ROUGE-1/2/L, BLEU, chrF by generation"
    primary_metric = "rougeL"
    greater_is_better = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not self.params.generate_eval:  # no generated text to score: fall back on the loss
            self.primary_metric, self.greater_is_better = "eval_loss", False

    def roles(self) -> dict[str, bool]:
        return {"source": True, "target": True}

    @classmethod
    def params_problems(cls, params: Seq2SeqLmParams, run: Any) -> list[str]:
        found = []
        for key in ("max_target_length", "max_new_tokens", "num_beams", "max_generate_examples"):
            if getattr(params, key) < 1:
                found.append(f"task.{key}={getattr(params, key)}: must be >= 1")
        return found

    def artifacts(self) -> dict[str, Any]:
        return {"task": "seq2seq_lm", "source_prefix": self.params.source_prefix}

    # ---- data --------------------------------------------------------------------------------
    def encode_sources(self, sources: list[str]) -> Any:
        return self.tokenizer(
            [self.params.source_prefix + s for s in sources],
            truncation=self.data.truncation,
            max_length=self.data.max_length,
        )

    def encode_targets(self, targets: list[str]) -> list[list[int]]:
        """Target token ids. Encoder tokenizers (bert2bert) start every text with [CLS]; the
        decoder is started with that token already, so it is dropped from the labels."""
        ids = self.tokenizer(
            text_target=targets, truncation=True, max_length=self.params.max_target_length
        )["input_ids"]
        first = self.tokenizer.cls_token_id
        if getattr(self.family, "drop_target_cls", False) and first is not None:
            ids = [row[1:] if row and row[0] == first else row for row in ids]
        return ids

    def tokenize(self, splits: Any) -> Any:
        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            out = dict(self.encode_sources([str(s) for s in batch[self.column("source")]]))
            out["labels"] = self.encode_targets([str(t) for t in batch[self.column("target")]])
            return out

        return {
            split: self.encode_split(dataset, split, encode) for split, dataset in splits.items()
        }

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad sources with the tokenizer and labels with -100 (transformers' collator; the model
        builds decoder_input_ids by shifting the labels itself)."""
        from transformers import DataCollatorForSeq2Seq

        if not hasattr(self, "_collator"):
            self._collator = DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=IGNORE_INDEX)
        return dict(self._collator(features))

    def count_items(self, batch: dict[str, Any]) -> Any:
        """Target tokens: the model's loss is their mean."""
        return (batch["labels"] != IGNORE_INDEX).sum().float()

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(
        self, model: Any, loader: Any, accelerator: Any, raw: Any = None
    ) -> dict[str, float]:
        import torch

        # Token-weighted mean loss (every target token counts the same).
        totals = torch.zeros(2, device=accelerator.device)
        with torch.no_grad():
            for batch in loader:
                loss = model(**batch).loss.float()
                tokens = (batch["labels"] != IGNORE_INDEX).sum()
                totals += torch.stack([loss * tokens, tokens.float()])
        totals = accelerator.reduce(totals, reduction="sum")
        mean = float(totals[0] / totals[1].clamp(min=1))
        result = {"eval_loss": mean, "perplexity": safe_exp(mean)}
        if self.params.generate_eval and raw is not None:
            result.update(
                self.generation_metrics(accelerator.unwrap_model(model), raw, accelerator)
            )
        return result

    def generate(self, model: Any, sources: list[str], device: Any) -> list[str]:
        """Generated target texts for source texts (batched; greedy or beam search)."""
        import torch

        enc = self.tokenizer.pad(dict(self.encode_sources(sources)), return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=self.params.max_new_tokens,
                num_beams=self.params.num_beams,
                do_sample=False,
            )
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def generation_metrics(self, model: Any, raw: Any, accelerator: Any) -> dict[str, float]:
        """Generate on the first max_generate_examples rows (split across processes) and score."""
        from accelerate.utils import gather_object

        from framework.core import metrics

        rows = raw.select(range(min(len(raw), self.params.max_generate_examples)))
        sources = [str(s) for s in rows[self.column("source")]]
        targets = [str(t) for t in rows[self.column("target")]]
        mine = list(range(accelerator.process_index, len(sources), accelerator.num_processes))
        pairs = []
        for start in range(0, len(mine), 32):
            chunk = mine[start : start + 32]
            generated = self.generate(model, [sources[i] for i in chunk], accelerator.device)
            pairs += [(i, text) for i, text in zip(chunk, generated)]
        if accelerator.num_processes > 1:
            pairs = gather_object(pairs)
        predictions = [text for _, text in sorted(pairs)]
        result = dict(metrics.rouge_scores(predictions, targets))
        if self.params.translation_metrics:
            result.update(metrics.bleu_chrf(predictions, targets))
        # Whitespace-insensitive: WordPiece decoding puts spaces around punctuation ("2021 / 03").
        same = sum("".join(p.split()) == "".join(t.split()) for p, t in zip(predictions, targets))
        result["exact_match"] = same / max(len(targets), 1)
        return result

    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        texts = self.generate(model, [str(r[self.column("source")]) for r in rows], device)
        return [{"generated": text} for text in texts]
