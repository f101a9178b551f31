"""Llama-style decoder-only models (Llama, SmolLM2, Mistral, Qwen2 share these names)."""

from __future__ import annotations

from framework.models.base import ModelFamily, TinySpec
from framework.registry import MODELS


@MODELS.register("llama")
class Llama(ModelFamily):
    unsupported_tasks = {"seq2seq_lm": "a decoder-only model has no encoder-decoder head; "
                                       "train it as causal_lm (SFT) instead"}
    decoder_only = True
    target_modules = {
        "lora": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "ia3": ["k_proj", "v_proj", "down_proj"],
        "ia3_feedforward": ["down_proj"],
        "ln": ["input_layernorm", "post_attention_layernorm", "norm"],  # ln_tuning
    }
    tiny_save_class = "AutoModelForCausalLM"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
            max_position_embeddings=spec.max_positions, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False)
