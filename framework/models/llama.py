"""Llama-style decoders (Llama, SmolLM2, Mistral, Qwen2 share these module names): LoRA on every
linear layer of attention and MLP, where peft's own default is q_proj and v_proj only."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("llama")
class Llama(ModelFamily):
    model_type = "llama"
    target_modules = {
        "lora": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "ia3": ["k_proj", "v_proj", "down_proj"],
        "ia3_feedforward": ["down_proj"],
        "ln": ["input_layernorm", "post_attention_layernorm", "norm"],  # ln_tuning
    }
    summary = "override: LoRA on all attention and MLP linears of Llama-style decoders"
