"""BART encoder-decoder models."""

from __future__ import annotations

from framework.models.base import ModelFamily, TinySpec
from framework.registry import MODELS


@MODELS.register("bart")
class Bart(ModelFamily):
    unsupported_tasks = {
        "causal_lm": "an encoder-decoder model; train generation as seq2seq_lm",
        "token_cls": "ft has no token-classification head wired up for encoder-decoder models; "
                     "use an encoder (bert)",
    }
    target_modules = {
        "lora": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        "attention": ["q_proj", "k_proj", "v_proj", "out_proj"],
        "ia3": ["k_proj", "v_proj", "fc2"],
        "ia3_feedforward": ["fc2"],
        "ln": ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"],  # ln_tuning
        "head_seq_cls": ["classification_head"],  # peft only trains classifier/score
    }
    tiny_save_class = "AutoModelForSeq2SeqLM"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer):
        from transformers import BartConfig

        return BartConfig(
            vocab_size=len(tokenizer), d_model=spec.hidden_size, encoder_layers=spec.num_layers,
            decoder_layers=spec.num_layers, encoder_attention_heads=spec.num_heads,
            decoder_attention_heads=spec.num_heads, encoder_ffn_dim=spec.intermediate_size,
            decoder_ffn_dim=spec.intermediate_size, max_position_embeddings=spec.max_positions,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
            forced_eos_token_id=tokenizer.eos_token_id, dropout=0.0, attention_dropout=0.0)
