"""LayerNorm tuning: train only (copies of) the normalisation layers."""

from __future__ import annotations

from dataclasses import dataclass

from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams


@dataclass(kw_only=True)
class LnTuningParams(PeftParams):
    """LN tuning has no hyper-parameters beyond which norm layers to train (target_modules)."""


@PEFT_METHODS.register("ln_tuning")
class LnTuning(PeftMethod):
    Params = LnTuningParams
    peft_type = "LN_TUNING"
    peft_config = "LNTuningConfig"
    target_kind = "ln"
    summary = "LN tuning: train only the LayerNorm/RMSNorm weights (tiny, a strong baseline)"
