"""T5 encoder-decoder models."""

from __future__ import annotations

from framework.models.base import ModelFamily, TinySpec
from framework.registry import MODELS


@MODELS.register("t5")
class T5(ModelFamily):
    unsupported_tasks = {
        "causal_lm": "an encoder-decoder model; train generation as seq2seq_lm",
        "token_cls": "ft has no token-classification head wired up for encoder-decoder models; "
                     "use an encoder (bert)",
    }
    target_modules = {
        "lora": ["q", "k", "v", "o", "wi", "wo"],
        "attention": ["q", "k", "v", "o"],
        "ia3": ["k", "v", "wo"],
        "ia3_feedforward": ["wo"],
        "ln": ["layer_norm", "final_layer_norm"],  # ln_tuning
        "head_seq_cls": ["classification_head"],  # peft only trains classifier/score
    }
    tiny_save_class = "AutoModelForSeq2SeqLM"

    @classmethod
    def tiny_tokenizer_kind(cls) -> str:
        return "t5"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer):
        from transformers import T5Config

        return T5Config(
            vocab_size=len(tokenizer), d_model=spec.hidden_size, d_ff=spec.intermediate_size,
            num_layers=spec.num_layers, num_decoder_layers=spec.num_layers,
            num_heads=spec.num_heads, d_kv=spec.hidden_size // spec.num_heads,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
            dropout_rate=0.0)
