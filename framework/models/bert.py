"""BERT-family encoders (BERT, MiniLM; RoBERTa-style models share the names): LoRA on the
attention and feed-forward linears, not the pooler, where peft's own default is query and value."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("bert")
class Bert(ModelFamily):
    model_type = "bert"
    unsupported_tasks = {
        "seq2seq_lm": "an encoder alone cannot generate; use model family bert2bert, which joins "
        "two copies with cross-attention",
    }
    target_modules = {
        "lora": ["query", "key", "value", "output.dense", "intermediate.dense"],  # not the pooler
        "ia3": ["key", "value", "output.dense"],
        "ia3_feedforward": ["output.dense"],
        "ln": ["LayerNorm"],  # ln_tuning
    }
    summary = "override: LoRA on attention and feed-forward linears of BERT-style encoders"
