"""GPT-2-style decoder-only models (fused c_attn projection, Conv1D layers)."""

from __future__ import annotations

from framework.models.base import ModelFamily, TinySpec
from framework.registry import MODELS


@MODELS.register("gpt2")
class Gpt2(ModelFamily):
    unsupported_tasks = {"seq2seq_lm": "a decoder-only model has no encoder-decoder head; "
                                       "train it as causal_lm (SFT) instead"}
    decoder_only = True
    target_modules = {
        "lora": ["c_attn", "c_proj", "c_fc"],
        "attention": ["c_attn"],
        "ia3": ["c_attn", "mlp.c_proj"],
        "ia3_feedforward": ["mlp.c_proj"],
        "ln": ["ln_1", "ln_2", "ln_f"],  # ln_tuning
    }
    tiny_save_class = "AutoModelForCausalLM"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer):
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=len(tokenizer), n_embd=spec.hidden_size, n_layer=spec.num_layers,
            n_head=spec.num_heads, n_inner=spec.intermediate_size, n_positions=spec.max_positions,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
