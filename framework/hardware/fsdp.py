"""FSDP2 through Accelerate: parameters, gradients and optimizer state sharded across GPUs.

GPU only: Accelerate switches to FSDP only for accelerator process groups (not gloo on CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from framework.core.registry import HARDWARE
from framework.hardware.base import HardwareParams, HardwareProfile, MemoryLayout, quantizes_base


@dataclass(kw_only=True)
class FsdpParams(HardwareParams):
    # true: free gathered weights after forward and gather again for backward (ZeRO-3-like, least
    # memory); false: keep them until backward (ZeRO-2-like, one all-gather less per step).
    reshard_after_forward: bool = True
    # keep sharded weights and grads in CPU RAM (slow, fits bigger models)
    offload_params: bool = False
    # shard unit: one transformer block (the model's _no_split_modules)
    auto_wrap_policy: Literal["transformer_based_wrap", "size_based_wrap", "no_wrap"] = (
        "transformer_based_wrap"
    )
    transformer_layers: list[str] | None = None  # block classes to wrap; null = the model's own
    min_num_params: int = 100_000_000  # size_based_wrap: parameters per shard unit
    activation_checkpointing: bool = False  # recompute block activations in backward (saves memory)
    cpu_ram_efficient_loading: bool = False  # only rank 0 reads the checkpoint; others get shards


@HARDWARE.register("fsdp")
class Fsdp(HardwareProfile):
    Params = FsdpParams
    uses_gpu = True
    always_launch = True  # Accelerate's FSDP needs a process group even for one process
    summary = "Accelerate FSDP2: weights, grads and optimizer state sharded across GPUs"

    @classmethod
    def problems(cls, params: Any, run: Any) -> list[str]:
        found = super().problems(params, run)
        if quantizes_base(run):
            found.append(
                "peft=qlora with hardware=fsdp: FSDP needs the 4-bit weights stored in the "
                "compute dtype (bnb_4bit_quant_storage), and peft=qlora loads them whole "
                "onto each GPU; use hardware=ddp or hardware=zero2 with qlora"
            )
        if params.min_num_params < 1:
            found.append(f"hardware.min_num_params={params.min_num_params}: must be >= 1")
        return found + cls.device_count_problems(params, run)

    @classmethod
    def shards_parameters(cls, params: Any, train: Any) -> bool:
        return True

    @classmethod
    def checkpoint_holds_base(cls, params: FsdpParams) -> bool:
        # Accelerate's save_state saves FSDP's gathered whole model (no adapter-only path there).
        return True

    @classmethod
    def memory_layout(cls, params: Any, train: Any) -> MemoryLayout:
        offload = "cpu" if params.offload_params else None
        # reshard_after_forward=false keeps each block's gathered weights until backward.
        return MemoryLayout(
            shards=cls.world_size(params),
            shard_optimizer=True,
            shard_gradients=True,
            shard_weights=params.reshard_after_forward,
            offload_optimizer=offload,
            offload_weights=offload,
            checkpoints_activations=params.activation_checkpointing,
        )

    @classmethod
    def plugin_kwargs(cls, params: Any) -> dict[str, Any]:
        """FullyShardedDataParallelPlugin arguments (plain data; also shown by dry runs)."""
        kwargs: dict[str, Any] = {
            "fsdp_version": 2,
            "reshard_after_forward": params.reshard_after_forward,
            "cpu_offload": params.offload_params,
            "auto_wrap_policy": params.auto_wrap_policy,
            # ft saves the adapter from accelerator.get_state_dict: a full (gathered) state dict.
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": params.activation_checkpointing,
            "cpu_ram_efficient_loading": params.cpu_ram_efficient_loading,
        }
        if params.auto_wrap_policy == "size_based_wrap":
            kwargs["min_num_params"] = params.min_num_params
        if params.transformer_layers:
            kwargs["transformer_cls_names_to_wrap"] = list(params.transformer_layers)
        return kwargs

    @classmethod
    def plan(cls, params: Any, train: Any) -> dict[str, Any]:
        return {**super().plan(params, train), "fsdp_plugin": cls.plugin_kwargs(params)}

    @classmethod
    def accelerator_kwargs(cls, params: Any, train: Any) -> dict[str, Any]:
        from accelerate.utils import FullyShardedDataParallelPlugin

        return {
            **super().accelerator_kwargs(params, train),
            "fsdp_plugin": FullyShardedDataParallelPlugin(**cls.plugin_kwargs(params)),
        }
