"""Big-model loading: one process; transformers/accelerate place the base model's layers over the
GPUs, then CPU RAM, then disk (`device_map`, `max_memory`, `offload_folder`), so an adapter can
be trained on a base that does not fit one device. Offloaded layers are streamed in for each
forward by accelerate's hooks; the frozen base is only read, never written.
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from framework.core.errors import UserError
from framework.core.registry import HARDWARE
from framework.hardware.base import (
    HardwareParams,
    HardwareProfile,
    MemoryLayout,
    quantizes_base,
    size_bytes,
)

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
# LoRA inits that read the base weight, which an offloaded layer does not hold while adapters are
# created (PiSSA/OLoRA/LoftQ/CorDA/EVA/... and DoRA's magnitude vector).
_BASE_READING_INITS = ("pissa", "olora", "loftq", "corda", "eva", "orthogonal", "mica", "lora_ga")


@dataclass(kw_only=True)
class DeviceMapParams(HardwareParams):
    device: Literal["cuda", "cpu"] = "cuda"  # where layers compute; cpu: no GPU (tests)
    # auto/balanced spread layers evenly over the GPUs; sequential fills GPU 0 first;
    # balanced_low_0 keeps GPU 0 light (room for generation). Or a {module: device} mapping.
    device_map: str | dict[str, Any] = "auto"
    # Memory per device for weights, e.g. {"0": "70GiB", "1": "70GiB", "cpu": "200GiB"}; keep
    # ~10-20% of each GPU free for activations and the adapter's optimizer state. What fits
    # nowhere goes to offload_folder. null = all free memory.
    max_memory: dict[str, int | str] | None = None
    offload_folder: str | None = None  # disk offload (a fast local disk); null = a temp dir
    offload_buffers: bool = False  # also offload buffers (more disk reads, less memory)


@HARDWARE.register("device_map")
class DeviceMap(HardwareProfile):
    Params = DeviceMapParams
    uses_gpu = True
    summary = "one process; base split over GPUs, CPU RAM and disk (device_map, max_memory)"

    @classmethod
    def problems(cls, params: Any, run: Any) -> list[str]:
        found = super().problems(params, run)
        if params.num_processes != 1 or params.num_machines != 1:
            found.append(
                f"hardware.num_processes={params.num_processes} / hardware.num_machines="
                f"{params.num_machines} with hardware=device_map: device_map splits one "
                f"model over the devices of ONE process; use num_processes=1 and "
                f"num_machines=1, or shard across processes with hardware=zero3_offload "
                f"or hardware=fsdp"
            )
        if isinstance(params.device_map, str) and params.device_map not in STRATEGIES:
            found.append(
                f"hardware.device_map={params.device_map}: use one of "
                f"{', '.join(STRATEGIES)} or a mapping module -> device"
            )
        for key, value in (params.max_memory or {}).items():
            if not (key.isdigit() or key in ("cpu", "disk")):
                found.append(
                    f"hardware.max_memory.{key}: keys are GPU indices (0, 1, ...), cpu or disk"
                )
            elif key.isdigit() and params.device == "cpu":
                found.append(
                    f"hardware.max_memory.{key} with hardware.device=cpu: no GPUs are "
                    f"used; give only cpu (and disk)"
                )
            if not (
                isinstance(value, int)
                and not isinstance(value, bool)
                and value >= 0
                or isinstance(value, str)
                and _SIZE.match(value)
            ):
                found.append(
                    f"hardware.max_memory.{key}={value!r}: give bytes or a size like "
                    f"'20GiB' or '500MB'"
                )
        if quantizes_base(run):
            found.append(
                "peft=qlora with hardware=device_map: peft=qlora puts the whole 4-bit base "
                "on the rank's GPU, and bitsandbytes cannot train 4-bit layers offloaded to "
                "CPU or disk; use hardware=gpu with qlora"
            )
        return found

    @classmethod
    def plan(cls, params: Any, train: Any) -> dict[str, Any]:
        return {**super().plan(params, train), "load_kwargs": cls._static_load_kwargs(params)}

    @classmethod
    def memory_layout(cls, params: Any, train: Any) -> MemoryLayout:
        # Weights beyond the first device's max_memory go to the next GPUs, CPU RAM or disk.
        key = "cpu" if params.device == "cpu" else "0"
        cap = (params.max_memory or {}).get(key)
        return MemoryLayout(
            weights_cap=None if cap is None else size_bytes(cap),
            offload_weights="cpu" if cap is not None else None,
        )

    @classmethod
    def _static_load_kwargs(cls, params: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "device_map": params.device_map,
            "offload_buffers": params.offload_buffers,
        }
        if params.max_memory:
            # transformers wants GPU indices as ints; YAML mapping keys are strings.
            kwargs["max_memory"] = {
                int(k) if k.isdigit() else k: v for k, v in params.max_memory.items()
            }
        if params.offload_folder:
            kwargs["offload_folder"] = params.offload_folder
        return kwargs

    @classmethod
    def load_kwargs(cls, params: Any) -> dict[str, Any]:
        kwargs = cls._static_load_kwargs(params)
        if "offload_folder" not in kwargs:
            folder = tempfile.mkdtemp(prefix="ft-offload-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            kwargs["offload_folder"] = folder
        return kwargs

    @classmethod
    @contextmanager
    def adapting(cls, run: Any, model: Any) -> Iterator[None]:
        placement = Counter(str(d) for d in (getattr(model, "hf_device_map", None) or {}).values())
        with placeholders_for_offloaded(model) as swapped:
            log.info(
                "device_map: modules per device %s; %d offloaded weights are streamed in for "
                "each forward",
                dict(placement),
                len(swapped),
            )
            if swapped:
                _check_init(run, swapped)
            yield
            if swapped:
                _check_modules_to_save(model, swapped)


def offloaded_modules(model: Any) -> list[Any]:
    """Modules whose weights accelerate keeps off-device (on 'meta', loaded for each forward)."""
    found = []
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        if (
            hook is not None
            and getattr(hook, "offload", False)
            and any(p.device.type == "meta" for p in module.parameters(recurse=False))
        ):
            found.append(module)
    return found


@contextmanager
def placeholders_for_offloaded(model: Any) -> Iterator[list[Any]]:
    """While PEFT adds adapters, stand in for each offloaded weight with a 4-byte zero-stride
    tensor of the same shape on the device where its layer computes.

    PEFT puts a new adapter on its base layer's weight device. An offloaded weight sits on
    'meta', so without this the adapter would land on 'meta' too: no values, nothing to train.
    With it, adapters are created (and initialised from the same RNG draws as with a normally
    loaded model) where their layer runs. The meta weights and their hooks are restored after.
    """
    import torch

    swapped = []
    for module in offloaded_modules(model):
        device = module._hf_hook.execution_device
        for name, param in list(module.named_parameters(recurse=False)):
            if param.device.type != "meta":
                continue
            stand_in = torch.zeros((), dtype=param.dtype, device=device).expand(param.shape)
            module._parameters[name] = torch.nn.Parameter(stand_in, requires_grad=False)
            swapped.append((module, name, param))
    try:
        yield swapped
    finally:
        for module, name, param in swapped:
            param.requires_grad_(module._parameters[name].requires_grad)  # frozen by PEFT
            module._parameters[name] = param


def _check_init(run: Any, swapped: list[Any]) -> None:
    peft = run.peft
    init = getattr(peft, "init", True)
    init_name = init.lower() if isinstance(init, str) else ""
    if getattr(peft, "use_dora", False) or init_name.startswith(_BASE_READING_INITS):
        key = "peft.use_dora=true" if getattr(peft, "use_dora", False) else f"peft.init={init}"
        raise UserError(
            f"{key} with hardware=device_map: this init reads the base weights, but "
            f"{len(swapped)} of them are offloaded (hardware.max_memory is below the "
            f"model size); use peft.init=true, or give hardware.max_memory room for "
            f"the whole model"
        )


def _check_modules_to_save(model: Any, swapped: list[Any]) -> None:
    """A fully trained copy (peft's modules_to_save, e.g. a classifier head) of an offloaded
    module would copy the stand-ins, not the weights: refuse it."""
    from peft.utils.other import ModulesToSaveWrapper

    offloaded = {id(module) for module, _, _ in swapped}
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and any(
            id(sub) in offloaded for sub in module.original_module.modules()
        ):
            raise UserError(
                f"hardware=device_map offloaded '{name}', which the adapter trains in "
                f"full (peft.modules_to_save, or the task's head); a trainable copy "
                f"cannot be made from offloaded weights. Raise hardware.max_memory so "
                f"that it stays on a device, or set hardware.device_map to a mapping "
                f"that keeps '{name}' on a device"
            )
