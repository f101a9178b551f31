"""BERT-family encoders (BERT, MiniLM, RoBERTa-style names differ only in the classifier)."""

from __future__ import annotations

from framework.models.base import ModelFamily, TinySpec
from framework.registry import MODELS


@MODELS.register("bert")
class Bert(ModelFamily):
    unsupported_tasks = {
        "causal_lm": "an encoder has no causal language-model head; use a decoder (llama, gpt2)",
        "seq2seq_lm": "an encoder alone cannot generate; use model family bert2bert, which joins "
                      "two copies with cross-attention",
    }
    target_modules = {
        "lora": ["query", "key", "value", "output.dense", "intermediate.dense"],  # not the pooler
        "attention": ["query", "key", "value"],
        "ia3": ["key", "value", "output.dense"],
        "ia3_feedforward": ["output.dense"],
        "ln": ["LayerNorm"],  # ln_tuning
    }
    tiny_save_class = "AutoModel"

    @classmethod
    def tiny_tokenizer_kind(cls) -> str:
        return "bert"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer):
        from transformers import BertConfig

        return BertConfig(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads, max_position_embeddings=spec.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
