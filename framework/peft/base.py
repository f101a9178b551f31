"""PEFT methods: each is a registered class with a typed Params dataclass, the facts ft checks
before loading a model (which tasks and families it serves, whether it merges), and a build
method that returns the peft library's own config. peft does the work; this only configures it.

Most methods only declare how to build: ``peft_config`` names peft's config class and
``peft_names`` maps the Params fields whose peft keyword differs; the default build passes every
method-specific field through that map and adds the shared keys (task_type, target_modules,
modules_to_save). Methods with derived or conditional values override ``config_kwargs``.

Compatibility is declared as data: ``tasks`` (ft task names), ``families`` (None = all) and
``exclusions`` (finer task x family holes, each with the reason). tests/test_peft_compat.py checks
the declarations against the installed peft: every combination claimed to work runs, and every
exclusion either fails inside peft or carries a documented reason.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional, Tuple

from framework.params import GroupParams
from framework.registry import MODELS, PEFT_METHODS, TASKS


@dataclass(frozen=True)
class Exclusion:
    """A task x family combination a method cannot serve. Empty sets mean 'any'.
    peft_fails: peft itself raises on it (tested); False = peft runs but the result is wrong or
    meaningless, and `reason` says why (the test checks the reason is given)."""

    tasks: FrozenSet[str]
    families: FrozenSet[str]
    reason: str
    peft_fails: bool = True
    fact: str = ""  # with peft_fails=False: the name of the test that demonstrates the reason

    def matches(self, task: str, family: str) -> bool:
        return (not self.tasks or task in self.tasks) and (not self.families or family in self.families)


def exclude(tasks: Tuple[str, ...] = (), families: Tuple[str, ...] = (), *, reason: str,
            peft_fails: bool = True, fact: str = "") -> Exclusion:
    """Shorthand for an Exclusion from tuples."""
    return Exclusion(frozenset(tasks), frozenset(families), reason, peft_fails, fact)


# GPT-2 family models use transformers' Conv1D (a transposed linear) for attention and MLP.
LINEAR_ONLY = exclude(
    families=("gpt2",),
    reason="peft implements this method for torch.nn.Linear only, and GPT-2's attention and MLP "
           "layers are transformers Conv1D (peft raises 'Target module Conv1D ... not supported')")


@dataclass(kw_only=True)
class PeftParams(GroupParams):
    """Fields every method shares."""

    target_modules: Optional[Any] = None  # list of module names, "all-linear", or null = family default
    modules_to_save: Optional[List[str]] = None  # extra modules trained in full (e.g. a classifier head)


class PeftMethod:
    """Base class of a registered PEFT method. Subclasses set the class attributes; the default
    build() covers methods whose peft kwargs are their Params fields, renamed where needed."""

    Params: ClassVar[type] = PeftParams
    peft_type: ClassVar[str] = ""  # peft.PeftType value, used by tests to check against peft
    peft_config: ClassVar[str] = ""  # name of peft's config class (in the peft package) build() makes
    peft_names: ClassVar[Dict[str, str]] = {}  # Params field -> peft's kwarg, where the names differ
    ft_only: ClassVar[FrozenSet[str]] = frozenset()  # Params fields ft uses itself, not given to peft
    common_keys: ClassVar[Tuple[str, ...]] = (  # which of common_kwargs() the peft config takes
        "task_type", "target_modules", "modules_to_save")
    at_least_one: ClassVar[Tuple[str, ...]] = ()  # Params fields params_problems requires >= 1
    tasks: ClassVar[Optional[FrozenSet[str]]] = None  # ft task names it serves; None = every task
    families: ClassVar[Optional[FrozenSet[str]]] = None  # None = every family
    exclusions: ClassVar[Tuple[Exclusion, ...]] = ()  # finer task x family holes, with reasons
    target_kind: ClassVar[Optional[str]] = "lora"  # which family default list to use; None = none
    can_merge: ClassVar[bool] = True  # merge_and_unload gives a plain model
    prompt_learning: ClassVar[bool] = False  # virtual tokens / prefixes instead of layer adapters
    needs_cuda: ClassVar[bool] = False  # refuse at validation on a machine without CUDA
    quantized_base: ClassVar[bool] = False  # loads the base quantized (bitsandbytes): hardware asks
    cuda_reason: ClassVar[str] = ""  # what needs the GPU, for that error message
    summary: ClassVar[str] = ""

    @classmethod
    def build(cls, params: Any, task: str, family: Any, model_config: Any) -> Any:
        """Return the peft config object (LoraConfig, IA3Config, ...) for this run: peft's
        `peft_config` class called with config_kwargs()."""
        import peft

        if not cls.peft_config:
            raise NotImplementedError(f"{cls.__name__}: set peft_config or override build()")
        config_class = getattr(peft, cls.peft_config)
        return config_class(**cls.config_kwargs(params, task, family, model_config))

    @classmethod
    def config_kwargs(cls, params: Any, task: str, family: Any,
                      model_config: Any) -> Dict[str, Any]:
        """The peft kwargs of build(): every method-specific Params field (not in PeftParams nor
        ft_only) under its peft name, plus the `common_keys` of common_kwargs(). Methods with
        derived or conditional values extend this."""
        kwargs = {cls.peft_names.get(name, name): getattr(params, name)
                  for name in method_fields(params) if name not in cls.ft_only}
        common = common_kwargs(cls, params, task, family)
        kwargs.update((key, common[key]) for key in cls.common_keys)
        return kwargs

    # ---- compatibility, checked before anything is loaded -----------------------------------
    @classmethod
    def incompatibility(cls, task: str, family: str) -> Optional[str]:
        """Why this method cannot serve the task on this family, or None when it can."""
        name = cls.registry_name  # type: ignore[attr-defined]
        if cls.tasks is not None and task not in cls.tasks:
            return f"{name} does not support task '{task}' (it supports: {', '.join(sorted(cls.tasks))})"
        if cls.families is not None and family not in cls.families:
            return (f"{name} works only with model families {', '.join(sorted(cls.families))}, "
                    f"not '{family}'")
        for rule in cls.exclusions:
            if rule.matches(task, family):
                return f"{name} cannot serve task '{task}' on model family '{family}': {rule.reason}"
        return None

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> List[str]:
        """Problems of this method's params in this run, found without loading anything."""
        found = []
        if params.target_modules is not None and not isinstance(params.target_modules, (str, list)):
            found.append(f"peft.target_modules={params.target_modules!r}: give a list of module "
                         f"names, a regex string, 'all-linear', or null for the family default")
        if params.target_modules is None and cls.target_kind is not None:
            family = MODELS.get(run.model.name, key="model.name")
            if family.default_targets(cls.target_kind) is None:
                found.append(f"peft.target_modules: model family '{run.model.name}' has no default "
                             f"'{cls.target_kind}' modules for peft={run.peft.name}; set "
                             f"peft.target_modules to a list of module names")
        # A dry run plans for another machine (e.g. a GPU node), so this machine's devices don't count.
        if cls.needs_cuda and not getattr(run, "dry_run", False) and not _cuda_available():
            found.append(f"peft={run.peft.name}: needs a CUDA GPU ({cls.cuda_reason}) and torch "
                         f"sees none on this machine. Use peft=lora on CPU, run on a GPU, or "
                         f"dry_run=true to only print the launch plan")
        found += [f"peft.{key}={getattr(params, key)}: must be >= 1"
                  for key in cls.at_least_one if getattr(params, key) < 1]
        return found

    # ---- building -----------------------------------------------------------------------------
    @classmethod
    def targets(cls, params: Any, family: Any) -> Any:
        """The user's target_modules, else the family default for this method kind."""
        if params.target_modules is not None:
            return params.target_modules
        return family.default_targets(cls.target_kind) if cls.target_kind else None

    @classmethod
    def modules_to_save(cls, params: Any, task: str, family: Any) -> Optional[List[str]]:
        """The user's modules_to_save plus the family's task head where peft would miss it.
        peft trains `classifier`/`score` (seq_cls, token_cls) and `qa_outputs` in full by itself;
        T5 and BART call their sequence-classification head `classification_head`, which peft
        would leave frozen at its random init (the family lists it as kind 'head_<task>')."""
        names = list(params.modules_to_save or [])
        names += [n for n in (family.default_targets(f"head_{task}") or []) if n not in names]
        return names or None

    @classmethod
    def load_kwargs(cls, params: Any) -> Dict[str, Any]:
        """Extra from_pretrained kwargs for the base model (QLoRA's quantization_config)."""
        return {}

    @classmethod
    def prepare_base(cls, params: Any, model: Any, train: Any) -> Any:
        """Adjust the loaded base model before the adapter is added (QLoRA: k-bit training prep)."""
        return model

    @classmethod
    def param_groups(cls, params: Any, model: Any, train: Any) -> List[Dict[str, Any]]:
        """Optimizer parameter groups; LoRA+ gives B matrices their own learning rate."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": train.lr}]

    @classmethod
    def prepare_model(cls, params: Any, model: Any, total_steps: int) -> None:
        """Last chance to configure the peft model once the number of steps is known. Checks that
        every name in peft.modules_to_save matched a module (peft silently ignores the others)."""
        from framework.errors import UserError

        wanted = params.modules_to_save or []
        names = [name for name, _ in model.named_modules()]
        missing = [w for w in wanted
                   if not any(n == w or n.endswith("." + w) for n in names)]
        if missing:
            tops = sorted({n.split(".")[-1] for n in names if n and not n[-1].isdigit()})
            raise UserError(f"peft.modules_to_save={wanted}: {', '.join(missing)} matched no module "
                            f"of {type(model.get_base_model()).__name__}. Module names it has: "
                            f"{', '.join(tops)}")

    @classmethod
    def on_step(cls, model: Any, global_step: int) -> None:
        """Called once per optimizer step, after optimizer.step() and before zero_grad(), with the
        1-based number of that step (AdaLoRA scores and reallocates ranks from the gradients)."""

    @classmethod
    def training_state(cls, model: Any) -> Optional[Any]:
        """Method state that lives outside the model's parameters and must be checkpointed for an
        exact resume: an object with state_dict()/load_state_dict(), or None (the default)."""
        return None

    @classmethod
    def save_adapter(cls, params: Any, model: Any, directory: str, is_main_process: bool = True,
                     state_dict: Optional[Dict[str, Any]] = None) -> None:
        """Write the adapter so that plain PeftModel.from_pretrained on the original base loads it."""
        model.save_pretrained(directory, is_main_process=is_main_process, safe_serialization=True,
                              state_dict=state_dict)

    @classmethod
    def after_load(cls, model: Any) -> Any:
        """Fix-ups a PeftModel loaded from a saved adapter needs before use (none by default)."""
        return model


def _cuda_available() -> bool:
    """True when torch sees a CUDA device. Imports torch: only called for GPU-only methods."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def missing_package(module: str, pip_name: str, why: str, key: str) -> List[str]:
    """A one-item problem list when an optional package is not installed (found without import)."""
    if importlib.util.find_spec(module) is None:
        return [f"{key}: {why} needs the '{pip_name}' package. Fix: pip install {pip_name}"]
    return []


def after_load(model: Any) -> Any:
    """Apply the registered method's fix-ups to a PeftModel from PeftModel.from_pretrained.
    Call it on any adapter loaded for evaluation (ft eval/predict do)."""
    for config in model.peft_config.values():
        peft_type = getattr(config.peft_type, "value", config.peft_type)
        for name in PEFT_METHODS.names():
            method = PEFT_METHODS.get(name)
            if method.peft_type == peft_type:
                method.after_load(model)
                break
    return model


def method_fields(params: Any) -> List[str]:
    """Names of the fields of a Params object that PeftParams does not have (the method's own)."""
    shared = {f.name for f in fields(PeftParams)}
    return [f.name for f in fields(params) if f.name not in shared]


def common_kwargs(method: Any, params: Any, task: str, family: Any) -> Dict[str, Any]:
    """task_type, target_modules and modules_to_save: the keys every layer-adapter config takes."""
    return {"task_type": peft_task_type(task), "target_modules": method.targets(params, family),
            "modules_to_save": method.modules_to_save(params, task, family)}


def peft_task_type(task: str) -> str:
    """peft's TaskType value for an ft task, as the task's registry entry declares it."""
    return TASKS.get(task, key="task.name").peft_task_type
