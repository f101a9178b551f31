"""PEFT methods: each is a registered class with a typed Params dataclass, the facts ft checks
before loading a model (which tasks and families it serves, whether it merges), and a build
method that returns the peft library's own config. peft does the work; this only configures it.

Most methods only declare how to build: ``peft_config`` names peft's config class and
``peft_names`` maps the Params fields whose peft keyword differs; the default build passes every
method-specific field through that map and adds the shared keys (task_type, target_modules,
modules_to_save). Methods with derived or conditional values override ``config_kwargs``.

Compatibility is declared as data, about architectures rather than ft's model families, so that
any checkpoint is judged by its config.json: ``tasks`` (ft task names), ``model_types`` (None =
all) and ``exclusions`` (finer task x model holes, each with the reason). A model is matched by its
traits: its model type (llama, t5, ...) and its kind (decoder, encoder, seq2seq).
``min_peft`` is the first peft release with the method: an older peft lists it as unavailable.
tests/test_peft_compat.py checks the declarations against the installed peft: every combination
claimed to work runs, and every exclusion either fails inside peft or carries a documented reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from framework.core.params import GroupParams, RunView, TrainConfig
from framework.core.registry import MODELS, PEFT_METHODS, TASKS


@dataclass(frozen=True)
class Exclusion:
    """A task x model combination a method cannot serve. Empty sets mean 'any'; `models` holds
    model types (gpt2) or kinds (decoder, encoder, seq2seq) and matches a model having any.
    peft_fails: peft itself raises on it (tested); False = peft runs but the result is wrong or
    meaningless, and `reason` says why (the test checks the reason is given)."""

    tasks: frozenset[str]
    models: frozenset[str]
    reason: str
    peft_fails: bool = True
    fact: str = ""  # with peft_fails=False: the name of the test that demonstrates the reason
    # with peft_fails=True: what peft (or transformers) raises, checked by the compatibility test
    errors: tuple[str, ...] = ()  # builtin exception class names
    match: str = ""  # regex its message matches

    def matches(self, task: str, traits: frozenset[str]) -> bool:
        return (not self.tasks or task in self.tasks) and (
            not self.models or bool(self.models & traits)
        )


def exclude(
    tasks: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    *,
    reason: str,
    peft_fails: bool = True,
    fact: str = "",
    errors: tuple[str, ...] = (),
    match: str = "",
) -> Exclusion:
    """Shorthand for an Exclusion from tuples."""
    return Exclusion(frozenset(tasks), frozenset(models), reason, peft_fails, fact, errors, match)


def model_traits(model: str | frozenset[str] | None) -> frozenset[str]:
    """The traits of a model: given as a set already (a family's traits(config)), or a name: a
    registered model family (its architecture) or a transformers model type."""
    if model is None:
        return frozenset()
    if not isinstance(model, str):
        return frozenset(model)
    if model in MODELS:
        return MODELS.get(model).traits()
    return (
        MODELS.get("auto").traits({"model_type": model}) if "auto" in MODELS else frozenset({model})
    )


def _label(traits: frozenset[str]) -> str:
    kinds = {"decoder", "encoder", "seq2seq"}
    types = sorted(traits - kinds)
    return f"model type '{types[0]}'" if types else "this model"


# GPT-2 models use transformers' Conv1D (a transposed linear) for attention and MLP.
CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt")
LINEAR_ONLY = exclude(
    models=CONV1D_MODEL_TYPES,
    reason="peft implements this method for torch.nn.Linear only, and GPT-2's attention and MLP "
    "layers are transformers Conv1D (peft raises 'Target module Conv1D ... not supported')",
    errors=("TypeError", "ValueError"),
    match=r"Conv1D.*not supported",
)


@dataclass(kw_only=True)
class PeftParams(GroupParams):
    """Fields every method shares."""

    # list of module names, "all-linear", or null = family default

    target_modules: Any | None = None
    # extra modules trained in full (e.g. a classifier head)
    modules_to_save: list[str] | None = None


class PeftMethod:
    """Base class of a registered PEFT method. Subclasses set the class attributes; the default
    build() covers methods whose peft kwargs are their Params fields, renamed where needed."""

    Params: ClassVar[type] = PeftParams
    peft_type: ClassVar[str] = ""  # peft.PeftType value, used by tests to check against peft
    # name of peft's config class (in the peft package) build() makes
    peft_config: ClassVar[str] = ""
    peft_names: ClassVar[
        dict[str, str]
    ] = {}  # Params field -> peft's kwarg, where the names differ
    ft_only: ClassVar[frozenset[str]] = (
        frozenset()
    )  # Params fields ft uses itself, not given to peft
    common_keys: ClassVar[tuple[str, ...]] = (  # which of common_kwargs() the peft config takes
        "task_type",
        "target_modules",
        "modules_to_save",
    )
    at_least_one: ClassVar[tuple[str, ...]] = ()  # Params fields params_problems requires >= 1
    tasks: ClassVar[frozenset[str] | None] = None  # ft task names it serves; None = every task
    model_types: ClassVar[frozenset[str] | None] = None  # None = every model type
    exclusions: ClassVar[tuple[Exclusion, ...]] = ()  # finer task x model holes, with reasons
    min_peft: ClassVar[str] = ""  # first peft release that has the method ("" = ft's floor)
    # What peft raises on a model type outside model_types: (exception class name, message regex).
    model_type_error: ClassVar[tuple[str, str]] = ("", "")
    target_kind: ClassVar[str | None] = "lora"  # which default target list to use; None = none
    can_merge: ClassVar[bool] = True  # merge_and_unload gives a plain model
    prompt_learning: ClassVar[bool] = False  # virtual tokens / prefixes instead of layer adapters
    reads_gradients: ClassVar[bool] = False  # on_step reads the gradients (AdaLoRA's scores)
    needs_cuda: ClassVar[bool] = False  # refuse at validation on a machine without CUDA
    quantized_base: ClassVar[bool] = False  # loads the base quantized (bitsandbytes): hardware asks
    cuda_reason: ClassVar[str] = ""  # what needs the GPU, for that error message
    summary: ClassVar[str] = ""
    # Why a fresh adapter of this method is not the identity (the model at initialisation differs
    # from the base with the adapter disabled); "" when it is. Methods whose answer depends on
    # their params override not_identity_at_init. tests/peft/test_identity_at_init.py checks
    # every method's answer against the model itself.
    not_identity: ClassVar[str] = ""

    @classmethod
    def not_identity_at_init(cls, params: Any) -> str:
        """Why the model with a fresh adapter differs from the base with the adapter disabled
        ("" when it does not): a reference-based objective (DPO, KTO) needs them equal."""
        return cls.not_identity or (
            "virtual tokens change every output" if cls.prompt_learning else ""
        )

    @classmethod
    def identity_at_init(cls, params: Any) -> bool:
        """Whether the model with a fresh adapter computes what the base with the adapter
        disabled computes (the reference of a reference-based objective)."""
        return not cls.not_identity_at_init(params)

    @classmethod
    def build(cls, params: PeftParams, task: str, family: Any, model_config: Any) -> Any:
        """Return the peft config object (LoraConfig, IA3Config, ...) for this run: peft's
        `peft_config` class called with config_kwargs()."""
        import peft

        if not cls.peft_config:
            raise NotImplementedError(f"{cls.__name__}: set peft_config or override build()")
        config_class = getattr(peft, cls.peft_config)
        return config_class(**cls.config_kwargs(params, task, family, model_config))

    @classmethod
    def config_kwargs(
        cls, params: Any, task: str, family: Any, model_config: Any
    ) -> dict[str, Any]:
        """The peft kwargs of build(): every method-specific Params field (not in PeftParams nor
        ft_only) under its peft name, plus the `common_keys` of common_kwargs(). Methods with
        derived or conditional values extend this."""
        kwargs = {
            cls.peft_names.get(name, name): getattr(params, name)
            for name in method_fields(params)
            if name not in cls.ft_only
        }
        common = common_kwargs(cls, params, task, family, model_config)
        kwargs.update((key, common[key]) for key in cls.common_keys)
        return kwargs

    # ---- compatibility, checked before anything is loaded -----------------------------------
    @classmethod
    def incompatibility(cls, task: str, model: str | frozenset[str] | None) -> str | None:
        """Why this method cannot serve the task on this model (its traits, or a family name or
        model type), or None when it can or the model is not known yet."""
        name = cls.registry_name  # type: ignore[attr-defined]
        if cls.tasks is not None and task not in cls.tasks:
            return f"{name} does not support task '{task}' (it supports: {', '.join(sorted(cls.tasks))})"
        traits = model_traits(model)
        if cls.model_types is not None and traits and not cls.model_types & traits:
            return (
                f"{name} works only with model types {', '.join(sorted(cls.model_types))}, "
                f"not {_label(traits)}"
            )
        for rule in cls.exclusions:
            if rule.matches(task, traits):
                return f"{name} cannot serve task '{task}' on {_label(traits)}: {rule.reason}"
        return None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the installed peft cannot run this method (too old), or None. Read from the
        installed package's metadata: no import, no torch."""
        if not cls.min_peft:
            return None
        installed = installed_peft()
        if installed is not None and _version_tuple(installed) >= _version_tuple(cls.min_peft):
            return None
        return (
            f"needs peft >= {cls.min_peft} ({cls.peft_config}), but the installed peft is "
            f"{installed or 'missing'}. Fix: pip install 'peft>={cls.min_peft}'"
        )

    @classmethod
    def params_problems(cls, params: PeftParams, run: RunView) -> list[str]:
        """Problems of this method's params in this run, found without loading anything."""
        found = []
        if params.target_modules is not None and not isinstance(params.target_modules, (str, list)):
            found.append(
                f"peft.target_modules={params.target_modules!r}: give a list of module "
                f"names, a regex string, 'all-linear', or null for the family default"
            )
        missing = cls.unavailable()
        if missing:
            found.append(f"peft={run.peft.name}: {missing}")
        # A dry run plans for another machine (e.g. a GPU node), so this machine's devices don't count.
        if cls.needs_cuda and not getattr(run, "dry_run", False) and not _cuda_available():
            found.append(
                f"peft={run.peft.name}: needs a CUDA GPU ({cls.cuda_reason}) and torch "
                f"sees none on this machine. Use peft=lora on CPU, run on a GPU, or "
                f"dry_run=true to only print the launch plan"
            )
        found += [
            f"peft.{key}={getattr(params, key)}: must be >= 1"
            for key in cls.at_least_one
            if getattr(params, key) < 1
        ]
        return found

    # ---- building -----------------------------------------------------------------------------
    @classmethod
    def targets(cls, params: PeftParams, family: Any, model_config: Any = None) -> Any:
        """The user's target_modules, else the model's default for this method kind (the family's
        list, peft's table for the model type, or the linear layers on the meta device)."""
        if params.target_modules is not None:
            return params.target_modules
        if not cls.target_kind:
            return None
        return family.default_targets(cls.target_kind, model_config, cls.peft_type)

    @classmethod
    def modules_to_save(
        cls, params: Any, task: str, family: Any, model_config: Any = None
    ) -> list[str] | None:
        """The user's modules_to_save plus the new task head of the model (trained in full).
        peft trains `classifier`/`score` (seq_cls, token_cls) and `qa_outputs` by itself, but
        leaves other heads (T5/BART's `classification_head`, DistilBERT's `pre_classifier`)
        frozen at their random init; the model family finds them on the meta device."""
        names = list(params.modules_to_save or [])
        names += [n for n in family.head_modules(task, model_config) if n not in names]
        return names or None

    @classmethod
    def load_kwargs(cls, params: PeftParams) -> dict[str, Any]:
        """Extra from_pretrained kwargs for the base model (QLoRA's quantization_config)."""
        return {}

    @classmethod
    def base_weight_bytes(cls, params: PeftParams, dtype_bytes: float, quantizable: bool) -> float:
        """Bytes per base-model parameter as this method holds it in training (`ft estimate`):
        the load dtype's size; `quantizable` marks weights of the base's linear layers."""
        return dtype_bytes

    @classmethod
    def prepare_base(cls, params: PeftParams, model: Any, train: TrainConfig) -> Any:
        """Adjust the loaded base model before the adapter is added (QLoRA: k-bit training prep)."""
        return model

    @classmethod
    def param_groups(
        cls, params: PeftParams, model: Any, train: TrainConfig
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups; LoRA+ gives B matrices their own learning rate."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": train.lr}]

    @classmethod
    def prepare_model(cls, params: PeftParams, model: Any, total_steps: int) -> None:
        """Last chance to configure the peft model once the number of steps is known. Checks that
        every name in peft.modules_to_save matched a module (peft silently ignores the others)."""
        from framework.core.errors import UserError

        wanted = params.modules_to_save or []
        names = [name for name, _ in model.named_modules()]
        missing = [w for w in wanted if not any(n == w or n.endswith("." + w) for n in names)]
        if missing:
            tops = sorted({n.split(".")[-1] for n in names if n and not n[-1].isdigit()})
            raise UserError(
                f"peft.modules_to_save={wanted}: {', '.join(missing)} matched no module "
                f"of {type(model.get_base_model()).__name__}. Module names it has: "
                f"{', '.join(tops)}"
            )

    @classmethod
    def on_step(cls, model: Any, global_step: int) -> None:
        """Called once per optimizer step, after optimizer.step() and before zero_grad(), with the
        1-based number of that step (AdaLoRA scores and reallocates ranks from the gradients)."""

    @classmethod
    def training_state(cls, model: Any) -> Any | None:
        """Method state that lives outside the model's parameters and must be checkpointed for an
        exact resume: an object with state_dict()/load_state_dict(), or None (the default)."""
        return None

    @classmethod
    def save_adapter(
        cls,
        params: Any,
        model: Any,
        directory: str,
        is_main_process: bool = True,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        """Write the adapter so that plain PeftModel.from_pretrained on the original base loads it
        (the trained adapter only: a frozen reference copy beside it is not saved)."""
        model.save_pretrained(
            directory,
            is_main_process=is_main_process,
            safe_serialization=True,
            state_dict=state_dict,
            selected_adapters=[model.active_adapter],
        )

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


def missing_package(module: str, pip_name: str, why: str, key: str) -> list[str]:
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


def method_fields(params: Any) -> list[str]:
    """Names of the fields of a Params object that PeftParams does not have (the method's own)."""
    shared = {f.name for f in fields(PeftParams)}
    return [f.name for f in fields(params) if f.name not in shared]


def common_kwargs(
    method: Any, params: Any, task: str, family: Any, model_config: Any = None
) -> dict[str, Any]:
    """task_type, target_modules and modules_to_save: the keys every layer-adapter config takes."""
    return {
        "task_type": peft_task_type(task),
        "target_modules": method.targets(params, family, model_config),
        "modules_to_save": method.modules_to_save(params, task, family, model_config),
    }


def installed_peft() -> str | None:
    """The installed peft version (package metadata; peft is not imported)."""
    try:
        return importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    """'0.18.0rc1' -> (0, 18, 0): release numbers only, enough to compare against a floor."""
    import re

    pieces = (version.split(".") + ["0", "0"])[:3]  # "0.18" == "0.18.0"
    return tuple(int(m.group()) if m else 0 for m in (re.match(r"\d+", p) for p in pieces))


def peft_task_type(task: str) -> str:
    """peft's TaskType value for an ft task, as the task's registry entry declares it."""
    return TASKS.get(task, key="task.name").peft_task_type
