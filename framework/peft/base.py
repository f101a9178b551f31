"""PEFT methods: each is a registered class with a typed Params dataclass, the facts ft checks
before loading a model (which tasks and families it serves, whether it merges), and a build
method that returns the peft library's own config. peft does the work; this only configures it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional

from framework.config.schema import GroupParams
from framework.models.base import ALL_TASKS

# ft task name -> peft TaskType value
PEFT_TASK_TYPES: Dict[str, str] = {
    "causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS", "token_cls": "TOKEN_CLS",
    "question_ans": "QUESTION_ANS", "seq2seq_lm": "SEQ_2_SEQ_LM",
    "feature_extraction": "FEATURE_EXTRACTION",
}


@dataclass(kw_only=True)
class PeftParams(GroupParams):
    """Fields every method shares."""

    target_modules: Optional[Any] = None  # list of module names, "all-linear", or null = family default
    modules_to_save: Optional[List[str]] = None  # extra modules trained in full (e.g. a classifier head)


class PeftMethod:
    """Base class of a registered PEFT method. Subclasses set the class attributes and build()."""

    Params: ClassVar[type] = PeftParams
    peft_type: ClassVar[str] = ""  # peft.PeftType value, used by tests to check against peft
    tasks: ClassVar[FrozenSet[str]] = ALL_TASKS  # ft task names the method can serve
    families: ClassVar[Optional[FrozenSet[str]]] = None  # None = every family
    target_kind: ClassVar[Optional[str]] = "lora"  # which family default list to use; None = none
    can_merge: ClassVar[bool] = True  # merge_and_unload gives a plain model
    needs_cuda: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @classmethod
    def build(cls, params: Any, task: str, family: Any, model_config: Any) -> Any:
        """Return the peft config object (LoraConfig, IA3Config, ...) for this run."""
        raise NotImplementedError

    @classmethod
    def incompatibility(cls, task: str, family: str) -> Optional[str]:
        """Why this method cannot serve the task on this family, or None when it can."""
        if task not in cls.tasks:
            return (f"{cls.registry_name} does not support task '{task}' "  # type: ignore[attr-defined]
                    f"(it supports: {', '.join(sorted(cls.tasks))})")
        if cls.families is not None and family not in cls.families:
            return (f"{cls.registry_name} works only with model families "  # type: ignore[attr-defined]
                    f"{', '.join(sorted(cls.families))}, not '{family}'")
        return None

    @classmethod
    def targets(cls, params: Any, family: Any) -> Any:
        """The user's target_modules, else the family default for this method kind."""
        if params.target_modules is not None:
            return params.target_modules
        return family.default_targets(cls.target_kind) if cls.target_kind else None

    @classmethod
    def param_groups(cls, params: Any, model: Any, train: Any) -> List[Dict[str, Any]]:
        """Optimizer parameter groups; LoRA+ gives B matrices their own learning rate."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": train.lr}]

    @classmethod
    def on_step(cls, model: Any, global_step: int) -> None:
        """Called after every optimizer step (AdaLoRA reallocates ranks here)."""

    @classmethod
    def prepare_model(cls, params: Any, model: Any, total_steps: int) -> None:
        """Last chance to configure the peft model once the number of steps is known."""
