"""GPT-2-style decoders (fused c_attn projection, Conv1D layers): LoRA on attention and MLP,
where peft's own default is c_attn only."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("gpt2")
class Gpt2(ModelFamily):
    model_type = "gpt2"
    target_modules = {
        "lora": ["c_attn", "c_proj", "c_fc"],
        "ia3": ["c_attn", "mlp.c_proj"],
        "ia3_feedforward": ["mlp.c_proj"],
        "ln": ["ln_1", "ln_2", "ln_f"],  # ln_tuning
    }
    summary = "override: LoRA on attention and MLP of GPT-2 (Conv1D layers)"
