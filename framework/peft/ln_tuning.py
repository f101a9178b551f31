"""LayerNorm tuning: train only (copies of) the normalisation layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.peft.base import PeftMethod, PeftParams, common_kwargs
from framework.registry import PEFT_METHODS


@dataclass(kw_only=True)
class LnTuningParams(PeftParams):
    """LN tuning has no hyper-parameters beyond which norm layers to train (target_modules)."""


@PEFT_METHODS.register("ln_tuning")
class LnTuning(PeftMethod):
    Params = LnTuningParams
    peft_type = "LN_TUNING"
    target_kind = "ln"
    summary = "LN tuning: train only the LayerNorm/RMSNorm weights (tiny, a strong baseline)"

    @classmethod
    def build(cls, params: LnTuningParams, task: str, family: Any, model_config: Any) -> Any:
        from peft import LNTuningConfig

        return LNTuningConfig(**common_kwargs(cls, params, task, family))
