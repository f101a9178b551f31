"""IA3: learned vectors that rescale keys, values and feed-forward activations (very few params)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams


@dataclass(kw_only=True)
class Ia3Params(PeftParams):
    # targets scaled on their input (FFN); null = family default
    feedforward_modules: list[str] | None = None
    init_weights: bool = True  # start the scales at 1 (identity); false = random (testing only)


@PEFT_METHODS.register("ia3")
class Ia3(PeftMethod):
    Params = Ia3Params
    peft_type = "IA3"
    peft_config = "IA3Config"
    peft_names = {"init_weights": "init_ia3_weights"}
    target_kind = "ia3"
    summary = "IA3: rescale keys, values and FFN activations by learned vectors (~0.01-0.1% params)"

    @classmethod
    def not_identity_at_init(cls, params: Any) -> str:
        return "" if params.init_weights else "peft.init_weights=false starts the scales random"

    @classmethod
    def config_kwargs(
        cls, params: Ia3Params, task: str, family: Any, model_config: Any
    ) -> dict[str, Any]:
        kwargs = super().config_kwargs(params, task, family, model_config)
        feedforward = params.feedforward_modules
        if feedforward is None and params.target_modules is None:
            feedforward = family.default_targets("ia3_feedforward", model_config, cls.peft_type)
        # peft requires feedforward_modules to be a subset of target_modules; with a user's own
        # targets and no feed-forward list, none of them is treated as feed-forward.
        kwargs["feedforward_modules"] = feedforward or []
        return kwargs
