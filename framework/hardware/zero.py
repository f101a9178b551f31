"""DeepSpeed ZeRO (stages 1-3, CPU/NVMe offload) through Accelerate's DeepSpeedPlugin.

The preset holds DeepSpeed's own JSON keys (`hardware.deepspeed`), optionally on top of a user's
JSON file (`hardware.deepspeed_config_file`). ft then sets the keys that must agree with `train`
(micro-batch, accumulation, global batch, clipping) from `train`, and Accelerate sets fp16/bf16
from `hardware.precision`; a file or preset that sets one of them to something else is rejected
before launch, so DeepSpeed and the runner can never disagree.

The optimizer and LR schedule stay ft's (`train.optimizer`, `train.scheduler`): DeepSpeed wraps
the torch optimizer, steps it inside `accelerator.backward` and clips gradients itself.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.core.registry import HARDWARE
from framework.hardware.base import DistributedParams, HardwareProfile, MemoryLayout, quantizes_base


@dataclass(kw_only=True)
class DeepSpeedParams(DistributedParams):
    deepspeed: dict[str, Any] = field(default_factory=dict)  # DeepSpeed's own config keys
    deepspeed_config_file: str | None = None  # your DeepSpeed JSON; `deepspeed` keys go on top
    nvme_path: str | None = None  # local NVMe directory for offload sections with device: nvme


# DeepSpeed keys ft derives from `train` (dotted DeepSpeed key -> the train key that sets it).
MANAGED_KEYS = {
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "train_batch_size": "train.batch_size x train.grad_accum x processes",
    "gradient_clipping": "train.max_grad_norm",
}
OFFLOAD_SECTIONS = ("offload_optimizer", "offload_param")


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` merged into a copy of `base`, mapping by mapping (top wins on leaves)."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def user_config(params: DeepSpeedParams) -> tuple[dict[str, Any], list[str]]:
    """The user's DeepSpeed config (file, then the preset's keys on top) and any problems."""
    base: dict[str, Any] = {}
    problems: list[str] = []
    if params.deepspeed_config_file:
        path = Path(params.deepspeed_config_file).expanduser()
        try:
            base = json.loads(path.read_text())
            if not isinstance(base, dict):
                raise ValueError("the top level is not a JSON object")
        except FileNotFoundError:
            problems.append(
                f"hardware.deepspeed_config_file={params.deepspeed_config_file}: no "
                f"such file; give the path of a DeepSpeed JSON config"
            )
            base = {}
        except (OSError, ValueError) as error:
            problems.append(
                f"hardware.deepspeed_config_file={params.deepspeed_config_file}: not a "
                f"DeepSpeed JSON config ({str(error).splitlines()[0]})"
            )
            base = {}
    return deep_merge(base, params.deepspeed), problems


def managed_values(train: Any, world_size: int) -> dict[str, Any]:
    """The values ft gives the MANAGED_KEYS for this run."""
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.batch_size * train.grad_accum * world_size,
        # DeepSpeed clips inside its step; 0 turns clipping off (train.max_grad_norm=null).
        "gradient_clipping": float(train.max_grad_norm) if train.max_grad_norm else 0.0,
    }


def zero_stage(config: dict[str, Any]) -> int | None:
    stage = _get(config, "zero_optimization.stage")
    return stage if isinstance(stage, int) and not isinstance(stage, bool) else None


def offload_devices(config: dict[str, Any]) -> dict[str, str]:
    """{'offload_optimizer': 'cpu', ...} for the offload sections that are switched on."""
    found = {}
    for section in OFFLOAD_SECTIONS:
        device = _get(config, f"zero_optimization.{section}.device")
        if device not in (None, "none"):
            found[section] = str(device)
    return found


def deepspeed_config(params: DeepSpeedParams, train: Any, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config a run uses: the user's keys, then ft's (no torch; also for dry runs).
    fp16/bf16 are left to Accelerate, which sets them from hardware.precision."""
    config, _ = user_config(params)
    config.update(managed_values(train, world_size))
    zero = config.setdefault("zero_optimization", {})
    for section in OFFLOAD_SECTIONS:
        node = zero.get(section)
        if isinstance(node, dict) and node.get("device") == "nvme" and not node.get("nvme_path"):
            node["nvme_path"] = params.nvme_path
    if zero_stage(config) == 3:
        # ft saves the adapter from accelerator.get_state_dict, which gathers ZeRO-3 shards.
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    if train.optimizer != "adamw":
        # DeepSpeed vets optimizers against a list that has Adam/AdamW but not SGD.
        config.setdefault("zero_allow_untested_optimizer", True)
    return config


@HARDWARE.register("deepspeed")
class DeepSpeed(HardwareProfile):
    Params = DeepSpeedParams
    uses_gpu = True
    always_launch = True  # DeepSpeed needs the launcher's process group even for one process
    summary = "DeepSpeed ZeRO 1/2/3 (+ CPU/NVMe offload) via Accelerate; presets zero1..zero3_nvme"

    @classmethod
    def problems(cls, params: Any, run: Any) -> list[str]:
        found = super().problems(params, run)
        config, file_problems = user_config(params)
        found += file_problems
        stage = zero_stage(config)
        if stage not in (0, 1, 2, 3):
            found.append(
                f"hardware.deepspeed.zero_optimization.stage="
                f"{_get(config, 'zero_optimization.stage')}: must be 0, 1, 2 or 3 "
                f"(pick a preset: hardware=zero1, zero2, zero3, zero3_offload, zero3_nvme)"
            )
        for key in ("optimizer", "scheduler"):
            if key in config:
                found.append(
                    f"hardware.deepspeed.{key}: ft builds the {key} from train.{key} "
                    f"(and train.lr, train.warmup_ratio); remove the DeepSpeed '{key}' "
                    f"section"
                )
        ours = managed_values(run.train, cls.world_size(params))
        for key, value in ours.items():
            theirs = config.get(key)
            if theirs not in (None, "auto") and theirs != value:
                found.append(
                    f"hardware.deepspeed.{key}={theirs} disagrees with {MANAGED_KEYS[key]}"
                    f' (= {value}); ft sets it from train: remove it or write "auto"'
                )
        for dtype in ("fp16", "bf16"):
            enabled = _get(config, f"{dtype}.enabled")
            wanted = params.precision == dtype
            if enabled in (None, "auto") or (
                params.precision != "auto" and bool(enabled) == wanted
            ):
                continue
            found.append(
                f"hardware.deepspeed.{dtype}.enabled={enabled} disagrees with "
                f"hardware.precision={params.precision}; set the precision with "
                f'hardware.precision and write "auto" (or nothing) in the DeepSpeed config'
            )
        devices = offload_devices(config)
        for section, device in devices.items():
            if device not in ("cpu", "nvme"):
                found.append(
                    f"hardware.deepspeed.zero_optimization.{section}.device={device}: "
                    f"must be none, cpu or nvme"
                )
        no_path = [
            f"hardware.deepspeed.zero_optimization.{section}.device=nvme"
            for section, device in devices.items()
            if device == "nvme"
            and not (params.nvme_path or _get(config, f"zero_optimization.{section}.nvme_path"))
        ]
        if no_path:
            found.append(
                f"hardware.nvme_path: required with {' and '.join(no_path)}; set "
                f"hardware.nvme_path=/a/dir/on/local/nvme (a fast local disk, not a "
                f"network file system)"
            )
        if "offload_param" in devices and stage != 3:
            found.append(
                f"hardware.deepspeed.zero_optimization.offload_param needs stage 3 "
                f"(hardware.deepspeed.zero_optimization.stage={stage}); use hardware="
                f"zero3_offload, or offload only the optimizer"
            )
        if "offload_optimizer" in devices and run.train.optimizer != "adamw":
            found.append(
                f"train.optimizer={run.train.optimizer} with hardware.deepspeed."
                f"zero_optimization.offload_optimizer: offloaded steps run DeepSpeed's CPU "
                f"Adam; use train.optimizer=adamw"
            )
        gather = _get(config, "zero_optimization.stage3_gather_16bit_weights_on_model_save")
        if stage == 3 and gather is False:
            found.append(
                "hardware.deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_"
                "save=false: ft saves the adapter from the gathered ZeRO-3 weights; set it "
                "to true (or remove it)"
            )
        if stage == 3 and quantizes_base(run):
            found.append(
                f"peft=qlora with hardware={params.name} (ZeRO-3): ZeRO-3 shards weights, but "
                f"peft=qlora loads the whole bitsandbytes-quantized base onto each rank's "
                f"GPU (no bnb_4bit_quant_storage), which ZeRO-3 cannot partition; use "
                f"hardware=zero2 or hardware=ddp with qlora"
            )
        if params.device == "cpu" and "offload_optimizer" in devices:
            found.append(
                "hardware.device=cpu with hardware.deepspeed.zero_optimization."
                "offload_optimizer: the weights already live on the CPU; turn offload off"
            )
        found += cls.device_count_problems(params, run)
        return found

    @classmethod
    def shards_parameters(cls, params: Any, train: Any) -> bool:
        try:
            return zero_stage(deepspeed_config(params, train, 1)) == 3
        except Exception:
            return False

    @classmethod
    def memory_layout(cls, params: Any, train: Any) -> MemoryLayout:
        config = deepspeed_config(params, train, cls.world_size(params))
        stage = zero_stage(config) or 0
        devices = offload_devices(config)
        return MemoryLayout(
            shards=cls.world_size(params),
            shard_optimizer=stage >= 1,
            shard_gradients=stage >= 2,
            shard_weights=stage == 3,
            offload_optimizer=devices.get("offload_optimizer"),
            offload_weights=devices.get("offload_param"),
            master_weights=params.precision != "no",
        )

    @classmethod
    def resume_fingerprint(cls, params: Any, train: Any) -> dict[str, Any]:
        stage = zero_stage(deepspeed_config(params, train, cls.world_size(params)))
        return {**super().resume_fingerprint(params, train), "hardware.zero_stage": stage}

    @classmethod
    def launch_env(cls, params: Any) -> dict[str, str]:
        # Without CUDA, DeepSpeed must use its CPU accelerator (gloo when oneCCL is missing).
        env = super().launch_env(params)
        if params.device == "cpu":
            env["DS_ACCELERATOR"] = "cpu"
        return env

    @classmethod
    def plan(cls, params: Any, train: Any) -> dict[str, Any]:
        plan = super().plan(params, train)
        plan["deepspeed"] = deepspeed_config(params, train, cls.world_size(params))
        plan["deepspeed_precision"] = "fp16/bf16 sections set by Accelerate from hardware.precision"
        return plan

    @classmethod
    def accelerator_kwargs(cls, params: Any, train: Any) -> dict[str, Any]:
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        config = deepspeed_config(params, train, cls.world_size(params))
        stage = zero_stage(config)
        plugin = DeepSpeedPlugin(
            hf_ds_config=config,
            gradient_accumulation_steps=train.grad_accum,
            gradient_clipping=config["gradient_clipping"],
            zero3_init_flag=stage == 3,
            zero3_save_16bit_model=stage == 3,
        )
        # Accelerate refuses DeepSpeed with cpu=True; on CPU it is told to use gloo instead, so
        # that DeepSpeed's process group spans every rank (otherwise each rank sees world size 1).
        kwargs: dict[str, Any] = {
            "mixed_precision": cls.mixed_precision(params),
            "cpu": False,
            "gradient_accumulation_steps": train.grad_accum,
            "deepspeed_plugin": plugin,
        }
        if params.device == "cpu":
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        return kwargs

    @classmethod
    def build_optimizer(cls, params: Any, groups: list[dict[str, Any]], train: Any) -> Any | None:
        config = deepspeed_config(params, train, cls.world_size(params))
        if "offload_optimizer" not in offload_devices(config):
            return None
        # ZeRO-Offload steps the optimizer on the CPU; DeepSpeed insists on its vectorised Adam.
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(
            groups, lr=train.lr, weight_decay=train.weight_decay, adamw_mode=True
        )
