"""Shared-random-basis methods: the low-rank matrices are frozen random projections shared by all
layers and only small per-layer vectors (VeRA), mixing weights (RandLoRA) or a shared vector bank
(VB-LoRA) are trained. Far fewer parameters than LoRA at the same rank."""

from __future__ import annotations

from dataclasses import dataclass

from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams


@dataclass(kw_only=True)
class VeraParams(PeftParams):
    # rank of the shared frozen random matrices (cheap: only 2 vectors per layer train)
    r: int = 256
    d_initial: float = 0.1  # initial value of the per-rank scaling vector d
    dropout: float = 0.0  # dropout on the adapter input
    projection_seed: int = 0  # PRNG key of the shared random matrices
    # store the random matrices in the adapter (safe across torch versions)
    save_projection: bool = True


@PEFT_METHODS.register("vera")
class Vera(PeftMethod):
    Params = VeraParams
    peft_type = "VERA"
    peft_config = "VeraConfig"
    peft_names = {"dropout": "vera_dropout", "projection_seed": "projection_prng_key"}
    summary = "VeRA: frozen shared random A, B; trains two scaling vectors per layer (~10x fewer than LoRA)"


@dataclass(kw_only=True)
class RandLoraParams(PeftParams):
    r: int = 32  # rank of each shared random basis (full rank reached with several bases)
    alpha: float = 640.0  # scale; RandLoRA's default is 20 x r
    dropout: float = 0.0  # dropout on the adapter input
    sparse: bool = False  # ternary sparse random bases (less memory)
    projection_seed: int = 0  # PRNG key of the shared random bases


@PEFT_METHODS.register("randlora")
class RandLora(PeftMethod):
    Params = RandLoraParams
    peft_type = "RANDLORA"
    peft_config = "RandLoraConfig"
    peft_names = {
        "alpha": "randlora_alpha",
        "dropout": "randlora_dropout",
        "projection_seed": "projection_prng_key",
    }
    summary = "RandLoRA: full-rank update from shared random bases with learned diagonal mixing"


@dataclass(kw_only=True)
class VbLoraParams(PeftParams):
    r: int = 4  # rank of the composed A, B
    num_vectors: int = 256  # vectors in the shared bank
    vector_length: int = 64  # length of each bank vector; must divide the layers' widths
    topk: int = 2  # bank vectors mixed per sub-vector
    dropout: float = 0.0  # dropout on the adapter input


@PEFT_METHODS.register("vblora")
class VbLora(PeftMethod):
    Params = VbLoraParams
    peft_type = "VBLORA"
    peft_config = "VBLoRAConfig"
    peft_names = {"dropout": "vblora_dropout"}
    summary = "VB-LoRA: A, B assembled from a small shared vector bank by top-k mixing"
    not_identity = "its vector bank starts random, so the fresh adapter already changes outputs"
