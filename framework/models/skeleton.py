"""A model's module tree without its weights: built from its config on the meta device
(accelerate.init_empty_weights), so that target modules, task heads and task support are known and
checked before a single weight is read. Train time only (imports torch)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from framework.core import automap
from framework.core.errors import UserError

NORM_CLASS = re.compile(
    r"(Layer|RMS|Group)?Norm\d*d?$"
)  # LayerNorm, LlamaRMSNorm, T5LayerNorm, ...


def meta_model(config: Any, auto_class: str, trust_remote_code: bool = False) -> Any:
    """The model an Auto class builds from a transformers config, with every tensor on the meta
    device (no memory, no weights read)."""
    import transformers
    from accelerate import init_empty_weights

    # Under DeepSpeed ZeRO-3, from_config wraps construction in deepspeed.zero.Init, which moves
    # every new parameter to the device and cannot copy a meta tensor. transformers skips zero.Init
    # inside its own set_zero3_state() (meant for nested construction); a meta skeleton is exactly
    # that case: nothing is allocated, so nothing needs partitioning.
    skip_zero3_init = getattr(
        transformers.modeling_utils, "set_zero3_state", contextlib.nullcontext
    )
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with init_empty_weights(), skip_zero3_init():
            return getattr(transformers, auto_class).from_config(
                config, trust_remote_code=trust_remote_code
            )
    finally:
        transformers.logging.set_verbosity(verbosity)


def _config_object(model_config: Any) -> Any:
    if hasattr(model_config, "to_dict"):
        return model_config
    from transformers import AutoConfig

    values = dict(model_config)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def is_linear(module: Any) -> bool:
    """torch Linear, or transformers' Conv1D (GPT-2's transposed linear), as peft targets them."""
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def layer_names(
    model_config: Any, norms: bool = False, none_if_feedforward: bool = False
) -> list[str] | None:
    """Distinct short names of the backbone's linear layers (or its normalisation layers), found on
    the meta device: what `target_modules` falls back to when peft has no default for the model
    type. The output embedding (LM head) is left out, as peft's all-linear does."""
    if none_if_feedforward:
        return []  # nothing says which linears are feed-forward: IA3 then scales outputs only
    config = _config_object(model_config)
    model = meta_model(config, automap.text_encoder_class(config.to_dict(), "AutoModel"))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = set()
    for name, module in model.named_modules():
        if not name or module is output:
            continue
        wanted = NORM_CLASS.search(type(module).__name__) if norms else is_linear(module)
        if wanted:
            found.add(name.split(".")[-1])
    return sorted(found) or None


def peft_default_targets(kind: str, peft_type: str | None, model_type: str) -> list[str] | None:
    """peft's own default target modules for a method and model type (its per-architecture
    tables), or None when peft has none."""
    from peft.utils import constants

    if kind == "ia3_feedforward":
        table = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
    else:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type or "LORA")
        table = (
            getattr(tuner, "target_module_mapping", None)
            or getattr(
                constants,
                f"TRANSFORMERS_MODELS_TO_{(peft_type or 'LORA').replace('_', '')}"
                f"_TARGET_MODULES_MAPPING",
                None,
            )
            or {}
        )
    found = table.get(model_type)
    return list(found) if found else None


def head_names(model_config: Any, auto_class: str) -> list[str]:
    """Top-level modules of the task model beside its backbone (`base_model_prefix`), holding
    parameters, other than the pretrained output embedding: the new task head."""
    model = meta_model(_config_object(model_config), auto_class)
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        return []  # the model is the backbone itself (AutoModel, T5EncoderModel, seq2seq LMs)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        name
        for name, child in model.named_children()
        if name != prefix and child is not output and any(True for _ in child.parameters())
    ]


def matches(name: str, targets: Any) -> bool:
    """Whether peft would match a module name: a regex string in full, or a list entry equal to
    the name or to its dotted suffix."""
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def check_targets(model: Any, targets: Any, key: str = "peft.target_modules") -> None:
    """Raise one UserError when a target name (or the regex) matches no module, listing the
    linear layers that exist."""
    if targets is None:
        return
    names = [name for name, _ in model.named_modules() if name]
    linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if n and is_linear(m)})
    wanted = [targets] if isinstance(targets, str) else list(targets)
    missing = [
        t
        for t in wanted
        if not any(matches(n, t if isinstance(targets, str) else [t]) for n in names)
    ]
    if missing:
        raise UserError(
            f"{key}={targets}: {', '.join(map(str, missing))} matched no module of "
            f"{type(model).__name__}. Its linear layers are: {', '.join(linear)}"
        )


def check_before_loading(
    run: Any,
    checkpoint: str,
    task: Any,
    method: Any,
    family: Any,
    problems_for: Callable[[Any], list[str]],
) -> Any:
    """Read only config.json and build the task model on the meta device: fail with one line if
    the checkpoint cannot serve the task or the PEFT method (problems_for(config) lists why) or a
    target module does not exist (it lists the linear layers that do). Returns the config."""
    from transformers import AutoConfig

    from framework.models.loading import hub_token

    params = run.model
    try:
        config = AutoConfig.from_pretrained(
            checkpoint,
            revision=params.revision,
            trust_remote_code=params.trust_remote_code,
            token=hub_token(params),
            **task.model_kwargs(),
        )
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"model.checkpoint='{checkpoint}': cannot read its config.json: {first}"
        ) from None
    problems = problems_for(config)
    if problems:
        raise UserError(f"model.checkpoint='{checkpoint}' ({config.model_type}):", problems)
    auto_class = family.auto_model(task.auto_model, config)
    model = meta_model(config, auto_class, params.trust_remote_code)
    check_targets(model, method.targets(run.peft, family, config))
    return config
