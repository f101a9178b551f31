"""LyCORIS-style low-rank variants: LoHa (Hadamard product of two low-rank pairs) and LoKr
(Kronecker product), both more expressive per parameter than LoRA's single product."""

from __future__ import annotations

from dataclasses import dataclass

from framework.core.registry import PEFT_METHODS
from framework.peft.base import LINEAR_ONLY, PeftMethod, PeftParams


@dataclass(kw_only=True)
class LohaParams(PeftParams):
    r: int = 8  # rank of each of the two factor pairs (effective rank up to r^2)
    alpha: float = 8.0  # scale = alpha / r
    rank_dropout: float = 0.0  # dropout on rank components while training
    module_dropout: float = 0.0  # probability of skipping the whole adapter for a step


@PEFT_METHODS.register("loha")
class Loha(PeftMethod):
    Params = LohaParams
    peft_type = "LOHA"
    peft_config = "LoHaConfig"
    exclusions = (LINEAR_ONLY,)
    summary = "LoHa: update = (B1·A1) ⊙ (B2·A2), Hadamard product of two low-rank pairs"


@dataclass(kw_only=True)
class LokrParams(PeftParams):
    r: int = 8  # rank of the low-rank factor of the Kronecker product
    alpha: float = 8.0  # scale = alpha / r
    rank_dropout: float = 0.0  # dropout on rank components while training
    module_dropout: float = 0.0  # probability of skipping the whole adapter for a step
    decompose_both: bool = False  # also factor the left Kronecker matrix (fewer params)
    decompose_factor: int = -1  # size of the left factor; -1 = as square as possible


@PEFT_METHODS.register("lokr")
class Lokr(PeftMethod):
    Params = LokrParams
    peft_type = "LOKR"
    peft_config = "LoKrConfig"
    exclusions = (LINEAR_ONLY,)
    summary = "LoKr: update = C ⊗ (B·A), a Kronecker product with a low-rank factor"
