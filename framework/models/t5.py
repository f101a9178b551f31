"""T5 encoder-decoders: LoRA on every attention and feed-forward projection, where peft's own
default is q and v only."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("t5")
class T5(ModelFamily):
    model_type = "t5"
    target_modules = {
        "lora": ["q", "k", "v", "o", "wi", "wo"],
        "ia3": ["k", "v", "wo"],
        "ia3_feedforward": ["wo"],
        "ln": ["layer_norm", "final_layer_norm"],  # ln_tuning
    }
    summary = "override: LoRA on all attention and feed-forward projections of T5"
