"""The model a run trains: the base loaded through the task's AutoModel class with the hardware
profile's and PEFT method's loading arguments, then wrapped by peft with the configured adapter."""

from __future__ import annotations

from typing import Any

from framework.config.checks import model_problems
from framework.core.errors import UserError
from framework.models.loading import load_model, torch_dtype
from framework.models.skeleton import check_before_loading
from framework.store.run_dir import adapter_folder

# The frozen copy of a starting adapter (model.adapter) that a reference-based objective compares
# the trained one with; the trained adapter is peft's "default".
REFERENCE_ADAPTER = "reference"


def linear_module_names(model: Any) -> list:
    """Distinct short names of the linear-like layers, for target_modules error messages."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.split(".")[-1])
    return sorted(names)


def apply_peft(run: Any, model: Any, method: Any, family: Any) -> Any:
    """Wrap the base model with the configured PEFT method (peft does the work)."""
    from peft import get_peft_model

    peft_config = method.build(run.peft, run.task.name, family, model.config)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as error:
        if "not found in the base model" in str(error) or "target_modules" in str(error):
            raise UserError(
                f"peft.target_modules={method.targets(run.peft, family)}: no such modules in "
                f"{type(model).__name__}. Its linear layers are: "
                f"{', '.join(linear_module_names(model))}"
            ) from None
        raise UserError(
            f"peft={run.peft.name}: peft rejected the config: {str(error).splitlines()[0]}"
        ) from None


def build_model(
    run: Any, checkpoint: str, task: Any, profile: Any, method: Any, family: Any
) -> Any:
    """Load the base (safetensors only) and add the adapter; return the peft model."""
    # config.json and the meta device only: a task, method or target-module mismatch fails here,
    # before any weight is read. Task and method against the architecture were checked at
    # validation when it could read config.json; only a checkpoint it could not read (an
    # uncached hub id) is checked now.
    unchecked = run.architecture is None
    check_before_loading(
        run,
        checkpoint,
        task,
        method,
        family,
        problems_for=lambda config: model_problems(run, family, config) if unchecked else [],
    )
    load_kwargs = {
        "dtype": torch_dtype(run.model.dtype, profile.on_gpu(run.hardware)),
        **profile.load_kwargs(run.hardware),
        **method.load_kwargs(run.peft),
    }
    model = load_model(
        run.plugins.family, run.model, checkpoint, task.auto_model, task.model_kwargs(), load_kwargs
    )
    model = method.prepare_base(run.peft, model, run.train)  # QLoRA: k-bit training prep
    if run.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    # Seed right before the adapter's random init too: loading may or may not draw random numbers
    # (new heads, a model built on first use), and the adapter must not depend on that.
    from accelerate.utils import set_seed

    set_seed(run.seed)
    with profile.adapting(run, model):  # device_map: adapters of offloaded layers
        if run.model.adapter:
            return load_starting_adapter(run, model)
        return apply_peft(run, model, method, family)


def load_starting_adapter(run: Any, model: Any) -> Any:
    """model.adapter: the saved adapter, trainable, as the run's adapter (its own rank and
    targets); with a reference-based objective also a frozen copy, the reference."""
    import logging

    from peft import PeftModel

    folder = adapter_folder(run.model.adapter)
    if folder is None:  # validation checked it; the folder went away since
        raise UserError(f"model.adapter={run.model.adapter}: no adapter_config.json there")
    model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    if run.plugins.objective.reference_based:
        model.load_adapter(str(folder), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    logging.getLogger("ft").info(
        "model.adapter: training on from %s (its peft config: r, targets; peft.* shape keys of "
        "this run are not used)",
        folder,
    )
    return model
