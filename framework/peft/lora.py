"""LoRA and its variants (DoRA, rsLoRA, PiSSA/OLoRA/LoftQ init, LoRA+ through train.lr_ratio_b)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Union

from framework.peft.base import PEFT_TASK_TYPES, PeftMethod, PeftParams
from framework.registry import PEFT_METHODS


@dataclass(kw_only=True)
class LoraParams(PeftParams):
    r: int = 8  # rank: higher = more capacity and memory
    alpha: float = 16.0  # scale = alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.05  # dropout on the LoRA input
    bias: str = "none"  # none | all | lora_only
    use_dora: bool = False  # DoRA: learn magnitude and direction separately
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    init: Union[bool, str] = True  # true | gaussian | pissa | olora | loftq | eva | corda ...


@PEFT_METHODS.register("lora")
class Lora(PeftMethod):
    Params = LoraParams
    peft_type = "LORA"
    summary = "low-rank update B·A on target linears (also DoRA, rsLoRA, PiSSA/OLoRA init, LoRA+)"

    @classmethod
    def build(cls, params: LoraParams, task: str, family: Any, model_config: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            task_type=PEFT_TASK_TYPES[task], r=params.r, lora_alpha=params.alpha,
            lora_dropout=params.dropout, bias=params.bias, use_dora=params.use_dora,
            use_rslora=params.use_rslora, init_lora_weights=params.init,
            target_modules=cls.targets(params, family), modules_to_save=params.modules_to_save)

    @classmethod
    def param_groups(cls, params: Any, model: Any, train: Any) -> List[Dict[str, Any]]:
        if not train.lr_ratio_b:
            return super().param_groups(params, model, train)
        # LoRA+ (Hayou et al. 2024): B matrices learn lr_ratio_b times faster than A.
        b_params, other = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (b_params if "lora_B" in name else other).append(parameter)
        return [{"params": other, "lr": train.lr},
                {"params": b_params, "lr": train.lr * train.lr_ratio_b}]
