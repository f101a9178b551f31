"""Multiplicative (orthogonal) fine-tuning: the frozen weight is rotated, W' = R·W, which keeps the
angles between neurons. OFT (block-diagonal R), BOFT (butterfly-factored R), HRA (R as a chain of
Householder reflections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import PEFT_METHODS
from framework.peft.base import LINEAR_ONLY, PeftMethod, PeftParams


@dataclass(kw_only=True)
class OftParams(PeftParams):
    block_size: int = 32  # size of each orthogonal block; must divide the layers' input width
    coft: bool = False  # constrained OFT: keep R within eps of the identity
    eps: float = 6e-5  # COFT's radius
    block_share: bool = False  # one block shared along the diagonal (fewer params, less capacity)
    module_dropout: float = 0.0  # probability of skipping the rotation of a block for a step


@PEFT_METHODS.register("oft")
class Oft(PeftMethod):
    Params = OftParams
    peft_type = "OFT"
    peft_config = "OFTConfig"
    peft_names = {"block_size": "oft_block_size"}
    at_least_one = ("block_size",)
    exclusions = (LINEAR_ONLY,)
    summary = "OFT: rotate each target weight by a learned block-diagonal orthogonal matrix"

    @classmethod
    def config_kwargs(
        cls, params: OftParams, task: str, family: Any, model_config: Any
    ) -> dict[str, Any]:
        # peft wants exactly one of r (number of blocks) and oft_block_size: ft exposes the size.
        return {**super().config_kwargs(params, task, family, model_config), "r": 0}


@dataclass(kw_only=True)
class BoftParams(PeftParams):
    block_size: int = 4  # size of each butterfly block (set this or block_num, the other = 0)
    block_num: int = 0  # number of blocks per butterfly factor; 0 = derived from block_size
    n_butterfly_factor: int = 1  # butterfly factors multiplied together (1 = plain block OFT)
    dropout: float = 0.0  # multiplicative dropout on the blocks


@PEFT_METHODS.register("boft")
class Boft(PeftMethod):
    Params = BoftParams
    peft_type = "BOFT"
    peft_config = "BOFTConfig"
    peft_names = {
        "block_size": "boft_block_size",
        "block_num": "boft_block_num",
        "n_butterfly_factor": "boft_n_butterfly_factor",
        "dropout": "boft_dropout",
    }
    exclusions = (LINEAR_ONLY,)
    summary = "BOFT: orthogonal rotation factored into butterfly blocks (fewer params than OFT)"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if (params.block_size == 0) == (params.block_num == 0):
            found.append(
                f"peft.block_size={params.block_size}, peft.block_num={params.block_num}: "
                f"set exactly one of them (the other 0)"
            )
        return found


@dataclass(kw_only=True)
class HraParams(PeftParams):
    r: int = 8  # number of Householder reflections (even numbers work best)
    apply_gs: bool = False  # Gram-Schmidt orthogonalise the reflection vectors


@PEFT_METHODS.register("hra")
class Hra(PeftMethod):
    Params = HraParams
    peft_type = "HRA"
    peft_config = "HRAConfig"
    peft_names = {"apply_gs": "apply_GS"}
    exclusions = (LINEAR_ONLY,)
    summary = "HRA: rotate target weights by a product of r learned Householder reflections"
