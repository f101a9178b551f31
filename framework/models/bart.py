"""BART encoder-decoders: LoRA on every attention and feed-forward projection, where peft's own
default is q_proj and v_proj only."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("bart")
class Bart(ModelFamily):
    model_type = "bart"
    target_modules = {
        "lora": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        "ia3": ["k_proj", "v_proj", "fc2"],
        "ia3_feedforward": ["fc2"],
        "ln": ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"],  # ln_tuning
    }
    summary = "override: LoRA on all attention and feed-forward projections of BART"
