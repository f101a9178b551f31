"""Hardware profiles: how a run is launched (processes), how Accelerate is set up (precision,
DeepSpeed/FSDP plugins) and how the model is loaded (device_map, max_memory, offload)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal

from framework.config.schema import GroupParams


@dataclass(kw_only=True)
class HardwareParams(GroupParams):
    num_processes: int = 1  # processes on this machine (one per device on GPU)
    precision: Literal["auto", "no", "fp16", "bf16"] = "no"  # auto: bf16 if supported, else fp16
    num_machines: int = 1  # multi-node: machines in the job
    machine_rank: int = 0  # multi-node: this machine's rank (0 = main)
    main_process_ip: str = "127.0.0.1"  # multi-node: address of machine 0
    main_process_port: int = 29500  # multi-node: rendezvous port on machine 0


class HardwareProfile:
    """Base class of a registered hardware profile."""

    Params: ClassVar[type] = HardwareParams
    uses_gpu: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @classmethod
    def problems(cls, params: Any, run: Any) -> List[str]:
        """Impossible settings, found without importing torch; each names the keys."""
        found = []
        if not cls.uses_gpu and params.precision not in ("no",):
            found.append(f"hardware.precision={params.precision}: mixed precision needs a GPU; "
                         f"use hardware.precision=no on CPU")
        if params.num_processes < 1 or params.num_machines < 1:
            found.append("hardware.num_processes and hardware.num_machines must be >= 1")
        if not 0 <= params.machine_rank < params.num_machines:
            found.append(f"hardware.machine_rank={params.machine_rank} must be in "
                         f"[0, hardware.num_machines={params.num_machines})")
        return found

    @classmethod
    def world_size(cls, params: Any) -> int:
        return params.num_processes * params.num_machines

    @classmethod
    def mixed_precision(cls, params: Any) -> str:
        """Accelerate's mixed_precision value; 'auto' picks bf16 where the GPU has it."""
        if params.precision != "auto":
            return params.precision
        import torch

        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"

    @classmethod
    def accelerator_kwargs(cls, params: Any, train: Any) -> Dict[str, Any]:
        """Keyword arguments for accelerate.Accelerator."""
        return {"mixed_precision": cls.mixed_precision(params), "cpu": not cls.uses_gpu,
                "gradient_accumulation_steps": train.grad_accum}

    @classmethod
    def load_kwargs(cls, params: Any) -> Dict[str, Any]:
        """Extra from_pretrained kwargs (device_map, max_memory, offload_folder)."""
        return {}

    @classmethod
    def launch_env(cls, params: Any) -> Dict[str, str]:
        """Environment variables for launched ranks."""
        return {}

    @classmethod
    def launch_args(cls, params: Any) -> List[str]:
        """`accelerate launch` arguments for a multi-process run."""
        args = ["--num_processes", str(cls.world_size(params)),
                "--num_machines", str(params.num_machines),
                "--machine_rank", str(params.machine_rank),
                "--main_process_ip", params.main_process_ip,
                "--main_process_port", str(params.main_process_port),
                "--mixed_precision", params.precision if params.precision != "auto" else "no"]
        if cls.world_size(params) > 1:
            args.append("--multi_gpu" if cls.uses_gpu else "--use_cpu")
        return args
