"""Hardware profiles: how a run is launched (processes), how Accelerate is set up (precision,
DeepSpeed/FSDP plugins) and how the model is loaded (device_map, max_memory, offload).

A profile is a registered class with a ``Params`` dataclass (its preset's schema). Everything that
decides *whether* a run can work (``problems``) or *what* would run (``launch_args``, ``plan``)
stays free of torch, so `ft validate` and `ft train ... dry_run=true` are instant; only the
methods the runner calls inside a rank (``accelerator_kwargs``, ``load_kwargs``) import torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from framework.core.params import GroupParams, RunView, TrainConfig


@dataclass(kw_only=True)
class HardwareParams(GroupParams):
    num_processes: int = 1  # processes on this machine (one per device on GPU)
    precision: Literal["auto", "no", "fp16", "bf16"] = "no"  # auto: bf16 if supported, else fp16
    num_machines: int = 1  # multi-node: machines in the job
    machine_rank: int = 0  # multi-node: this machine's rank (0 = main); taken from SLURM when set
    # multi-node: address of machine 0; taken from SLURM when set
    main_process_ip: str = "127.0.0.1"
    main_process_port: int = 29500  # multi-node: rendezvous port on machine 0


@dataclass(frozen=True)
class MemoryLayout:
    """Where a profile keeps each part of the training state, for `ft estimate` (plain data).
    Sharded parts are split over `shards` processes; offloaded ones live off the device."""

    shards: int = 1  # processes that split the sharded parts (ZeRO / FSDP world size)
    shard_optimizer: bool = False  # ZeRO-1 and up, FSDP
    shard_gradients: bool = False  # ZeRO-2 and up, FSDP
    shard_weights: bool = False  # ZeRO-3, FSDP
    offload_optimizer: str | None = None  # "cpu"/"nvme": optimizer state off the device
    offload_weights: str | None = None  # "cpu"/"nvme": weights off the device, streamed in
    weights_cap: int | None = None  # device_map: weight bytes kept on the device (rest: CPU/disk)
    gradient_copies: int = 0  # extra gradient-sized buffers (DDP's all-reduce buckets)
    master_weights: bool = False  # fp32 copy of trainable weights under 16-bit (DeepSpeed)
    checkpoints_activations: bool = False  # the profile recomputes activations itself (FSDP)


@dataclass(kw_only=True)
class DistributedParams(HardwareParams):
    """Profiles that can run several processes, on GPUs (NCCL) or on CPU cores (gloo)."""

    device: Literal["cuda", "cpu"] = "cuda"  # cpu: processes talk over gloo (tests, no GPU)


class HardwareProfile:
    """Base class of a registered hardware profile."""

    Params: ClassVar[type] = HardwareParams
    uses_gpu: ClassVar[bool] = False  # the profile's default device (see on_gpu for a run's own)
    always_launch: ClassVar[bool] = False  # start under `accelerate launch` even with one process
    summary: ClassVar[str] = ""

    # ---- validation (no torch) -----------------------------------------------------------------
    @classmethod
    def on_gpu(cls, params: HardwareParams) -> bool:
        """Whether this run's processes use CUDA devices."""
        device = getattr(params, "device", None)
        return cls.uses_gpu if device is None else device == "cuda"

    @classmethod
    def problems(cls, params: HardwareParams, run: RunView) -> list[str]:
        """Impossible settings, found without importing torch; each names the keys."""
        found = []
        if not cls.on_gpu(params) and params.precision in ("fp16", "bf16"):
            found.append(
                f"hardware.precision={params.precision}: mixed precision needs a GPU; "
                f"use hardware.precision=no on CPU"
            )
        if params.num_processes < 1 or params.num_machines < 1:
            found.append("hardware.num_processes and hardware.num_machines must be >= 1")
        if not 0 <= params.machine_rank < params.num_machines:
            found.append(
                f"hardware.machine_rank={params.machine_rank} must be in "
                f"[0, hardware.num_machines={params.num_machines})"
            )
        if not 0 < params.main_process_port < 65536:
            found.append(f"hardware.main_process_port={params.main_process_port}: not a TCP port")
        return found

    @classmethod
    def device_count_problems(cls, params: HardwareParams, run: RunView) -> list[str]:
        """More processes on this machine than it has GPUs. Imports torch, so only GPU profiles
        that launch processes call it; a dry run (e.g. on a login node) skips it."""
        launches = params.num_processes > 1 or cls.always_launch
        if not cls.on_gpu(params) or not launches or getattr(run, "dry_run", False):
            return []
        count = cuda_device_count()
        if params.num_processes <= count:
            return []
        cpu_hint = (
            "hardware.device=cpu for CPU processes (gloo), " if hasattr(params, "device") else ""
        )
        have = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s)"
        return [
            f"hardware.num_processes={params.num_processes}: this "
            f"machine has {have}; use at most one process per GPU, {cpu_hint}or dry_run=true "
            f"to only print the launch command"
        ]

    # ---- launching (no torch) -----------------------------------------------------------------
    @classmethod
    def world_size(cls, params: HardwareParams) -> int:
        return params.num_processes * params.num_machines

    @classmethod
    def launch_env(cls, params: HardwareParams) -> dict[str, str]:
        """Environment variables for launched ranks."""
        if cls.always_launch and cls.world_size(params) == 1:
            # `accelerate launch --num_processes 1` starts one plain process, but DeepSpeed and
            # FSDP still need a process group: give it the torchrun variables of a group of one.
            return {
                "RANK": "0",
                "LOCAL_RANK": "0",
                "WORLD_SIZE": "1",
                "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(params.main_process_port),
            }
        return {}

    @classmethod
    def launch_args(cls, params: HardwareParams) -> list[str]:
        """`accelerate launch` arguments for a multi-process run.

        Every multi-process run goes through torchrun (`--multi_gpu`): it starts one process per
        rank with RANK/LOCAL_RANK set, and tears the whole group down when one rank fails. On CPU
        the ranks then build their Accelerator with cpu=True, which makes Accelerate use gloo
        (`--cpu` would start a single process). DeepSpeed and FSDP are set up in-process from the
        plugin the profile hands to Accelerator, so the launch is the same for every profile.
        """
        from framework.hardware.slurm import machine_settings

        rank, ip = machine_settings(params)
        args = [
            "--num_processes",
            str(cls.world_size(params)),
            "--num_machines",
            str(params.num_machines),
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            ip,
            "--main_process_port",
            str(params.main_process_port),
            "--mixed_precision",
            params.precision if params.precision != "auto" else "no",
        ]
        if cls.world_size(params) > 1:
            args.append("--multi_gpu")
        return args

    # ---- questions other parts ask (no torch) ---------------------------------------------------
    @classmethod
    def shards_parameters(cls, params: HardwareParams, train: TrainConfig) -> bool:
        """Whether each process holds only a shard of every weight (ZeRO-3, FSDP): code that reads
        whole weights (PiSSA/OLoRA conversion) cannot run there."""
        return False

    @classmethod
    def checkpoint_holds_base(cls, params: HardwareParams) -> bool:
        """Whether this profile's checkpoints hold the frozen base weights too (ft keeps them out
        where the backend lets it: store/checkpoint.py); sizes the disk check."""
        return False

    @classmethod
    def joins_run_dir(cls, params: HardwareParams) -> bool:
        """Whether this machine joins the run directory the main machine creates: a machine of
        rank > 0 in a multi-machine run reuses the ft run there (never refuses or replaces it)."""
        from framework.hardware.slurm import machine_settings

        return params.num_machines > 1 and machine_settings(params)[0] != 0

    @classmethod
    def resume_fingerprint(cls, params: HardwareParams, train: TrainConfig) -> dict[str, Any]:
        """What of this profile a checkpoint depends on: resuming with other values is refused."""
        return {"world size": cls.world_size(params)}

    @classmethod
    def memory_layout(cls, params: HardwareParams, train: TrainConfig) -> MemoryLayout:
        """How this profile spreads weights, gradients and optimizer state (for `ft estimate`):
        by default every process holds all of them on its device."""
        return MemoryLayout()

    @classmethod
    def plan(cls, params: HardwareParams, train: TrainConfig) -> dict[str, Any]:
        """What the profile sets up, as plain data (printed by a dry run; no torch)."""
        name = getattr(cls, "registry_name", cls.__name__)
        return {
            "profile": name,
            "device": "cuda" if cls.on_gpu(params) else "cpu",
            "world_size": cls.world_size(params),
            "precision": params.precision,
        }

    # ---- inside a rank (may import torch) -------------------------------------------------------
    @classmethod
    def mixed_precision(cls, params: HardwareParams) -> str:
        """Accelerate's mixed_precision value; 'auto' picks bf16 where the GPU has it."""
        if params.precision != "auto":
            return params.precision
        if not cls.on_gpu(params):
            return "no"
        import torch

        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"

    @classmethod
    def accelerator_kwargs(cls, params: HardwareParams, train: TrainConfig) -> dict[str, Any]:
        """Keyword arguments for accelerate.Accelerator."""
        return {
            "mixed_precision": cls.mixed_precision(params),
            "cpu": not cls.on_gpu(params),
            "gradient_accumulation_steps": train.grad_accum,
        }

    @classmethod
    def load_kwargs(cls, params: HardwareParams) -> dict[str, Any]:
        """Extra from_pretrained kwargs (device_map, max_memory, offload_folder)."""
        return {}

    @classmethod
    @contextmanager
    def adapting(cls, run: RunView, model: Any) -> Iterator[None]:
        """Context in which PEFT adds its adapter layers to the loaded base model (device_map
        uses it to create adapters of offloaded layers where those layers compute)."""
        yield

    @classmethod
    def build_optimizer(
        cls, params: HardwareParams, groups: list[dict[str, Any]], train: TrainConfig
    ) -> Any | None:
        """An optimizer the profile needs instead of ft's torch one (DeepSpeed's CPU Adam for
        ZeRO-Offload), or None to let the runner build its own."""
        return None


def quantizes_base(run: RunView) -> bool:
    """Whether the run's PEFT method loads the base quantized by bitsandbytes (QLoRA)."""
    return run.plugins.method.quantized_base


_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def size_bytes(value: Any) -> int:
    """Bytes from an int or a size string like '24GiB', '500MB', '1.5 TiB' (ValueError if not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number) :] or "b"
    try:
        return int(float(number) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(f"not a size: {value!r} (give bytes or e.g. 24GiB, 500MB)") from None


def cuda_device_count() -> int:
    """CUDA devices torch sees on this machine (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def launch_command(profile: Any, params: Any, run_dir: Path, config_file: str) -> list[str]:
    """The command that starts every rank of a multi-process run on this machine."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *profile.launch_args(params),
        "-m",
        "framework.training.trainer",
        str(run_dir),
        "--config",
        config_file,
    ]
