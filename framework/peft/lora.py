"""LoRA and its close variants: DoRA, rsLoRA, PiSSA/OLoRA init (presets of `lora`), LoRA+ (`lora_plus`,
which takes every LoRA key, e.g. peft=lora_plus peft.use_dora=true), and QLoRA (`qlora`: a 4-bit bitsandbytes base, optionally with
LoftQ init, preset `loftq`)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from framework.core.registry import PEFT_METHODS
from framework.peft.base import CONV1D_MODEL_TYPES, PeftMethod, PeftParams, missing_package

# Inits that rewrite the base weights (W -> W_res) at start; their adapter is converted back to a
# plain LoRA of rank 2r on save (peft's path_initial_model_for_weight_conversion), so that it loads
# on the untouched base like any LoRA.
MUTATING_INITS = ("pissa", "olora")
INIT_CHOICES = "true | false | gaussian | pissa | pissa_niter_N | olora | orthogonal"


@dataclass(kw_only=True)
class LoraParams(PeftParams):
    r: int = 8  # rank: higher = more capacity and memory
    alpha: float = 16.0  # scale = alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.05  # dropout on the LoRA input
    bias: str = "none"  # none | all | lora_only
    use_dora: bool = False  # DoRA: learn magnitude and direction separately
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    init: bool | str = True  # true | gaussian | pissa | pissa_niter_N | olora | orthogonal


def _init_kind(init: bool | str) -> str:
    """'pissa' for pissa and pissa_niter_N, else the init as a lower-case string."""
    text = str(init).lower()
    return "pissa" if text.startswith("pissa") else text


def _initial_adapter_dirs() -> Path:
    """A process-wide temp dir for initial PiSSA/OLoRA adapters, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="ft-lora-init-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@PEFT_METHODS.register("lora")
class Lora(PeftMethod):
    Params = LoraParams
    peft_type = "LORA"
    peft_config = "LoraConfig"
    peft_names = {"alpha": "lora_alpha", "dropout": "lora_dropout", "init": "init_lora_weights"}
    summary = "low-rank update B·A on target linears (also DoRA, rsLoRA, PiSSA/OLoRA init, LoRA+)"

    @classmethod
    def not_identity_at_init(cls, params: Any) -> str:
        kind = _init_kind(params.init)
        if kind in MUTATING_INITS:
            return (
                f"peft.init={params.init} moves the principal part of each weight into the "
                f"adapter, so the base with the adapter disabled is not the starting model"
            )
        if kind == "false":
            return "peft.init=false starts A and B random, so the fresh adapter changes outputs"
        if getattr(params, "loftq_init", False):
            return "LoftQ starts A and B where they cancel the quantization error"
        return ""

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if params.r < 1:
            found.append(f"peft.r={params.r}: the rank must be >= 1")
        if params.bias not in ("none", "all", "lora_only"):
            found.append(f"peft.bias={params.bias}: use none, all or lora_only")
        kind = _init_kind(params.init)
        if kind == "loftq":
            found.append(
                "peft.init=loftq: LoftQ in peft needs a bitsandbytes 4-bit base on a CUDA GPU "
                "and rewrites the base weights; use peft=loftq (QLoRA + LoftQ init) instead"
            )
        elif not isinstance(params.init, bool) and kind not in (
            "true",
            "false",
            "gaussian",
            "pissa",
            "olora",
            "orthogonal",
        ):
            found.append(
                f"peft.init={params.init}: unknown LoRA init; use one of {INIT_CHOICES} "
                f"(eva/corda need calibration data, which ft does not wire up)"
            )
        family = run.plugins.family
        traits = family.traits(run.architecture)
        if kind == "olora" and traits & set(CONV1D_MODEL_TYPES):
            found.append(
                "peft.init=olora with a GPT-2 model: peft's OLoRA init breaks on "
                "GPT-2's Conv1D layers (shape mismatch in the first forward); use "
                "init=pissa or init=true"
            )
        profile = run.plugins.profile
        if kind in MUTATING_INITS and profile.shards_parameters(run.hardware, run.train):
            found.append(
                f"peft.init={params.init} with hardware={run.hardware.name}: converting "
                f"the PiSSA/OLoRA adapter to plain LoRA on save reads whole weights, which "
                f"ZeRO-3/FSDP keep sharded; use init=true, or ddp / ZeRO-1/2"
            )
        return found

    @classmethod
    def lr_ratio(cls, params: Any, train: Any) -> float | None:
        """LoRA+ ratio lr(B)/lr(A); None = one learning rate for everything (plain LoRA)."""
        return None

    @classmethod
    def param_groups(cls, params: Any, model: Any, train: Any) -> list[dict[str, Any]]:
        ratio = cls.lr_ratio(params, train)
        if not ratio:
            return super().param_groups(params, model, train)
        # LoRA+ (Hayou et al. 2024): B matrices learn `ratio` times faster than A. peft's own
        # grouping decides which parameters are "B" (lora_B, and 1-d params such as biases);
        # ft keeps only the groups and learning rates (weight decay stays train.weight_decay).
        import torch
        from peft.optimizers import create_loraplus_optimizer

        grouped = create_loraplus_optimizer(
            model,
            torch.optim.SGD,
            lr=train.lr,
            loraplus_lr_ratio=ratio,
            loraplus_lr_embedding=getattr(params, "lr_embedding", 1e-6),
        )
        return [
            {"params": group["params"], "lr": group["lr"]}
            for group in grouped.param_groups
            if group["params"]
        ]

    # ---- PiSSA / OLoRA: the adapter is saved as a plain LoRA on the original base -----------
    _init_root: Path | None = None

    @classmethod
    def prepare_model(cls, params: Any, model: Any, total_steps: int) -> None:
        super().prepare_model(params, model, total_steps)
        if _init_kind(params.init) not in MUTATING_INITS:
            return
        if Lora._init_root is None:
            Lora._init_root = _initial_adapter_dirs()
        initial = Path(tempfile.mkdtemp(dir=Lora._init_root)) / "initial_adapter"
        model.save_pretrained(str(initial), safe_serialization=True)  # A0, B0 before training
        model._ft_initial_adapter = str(initial)

    @classmethod
    def save_adapter(
        cls,
        params: Any,
        model: Any,
        directory: str,
        is_main_process: bool = True,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        initial = getattr(model, "_ft_initial_adapter", None)
        if initial is None:
            return super().save_adapter(params, model, directory, is_main_process, state_dict)
        # peft converts W_res + BA into W + [B|-B0][A;A0] (rank 2r). The conversion reads the
        # live parameters (state_dict=None): fine for one process and DDP, whose copies are equal.
        model.save_pretrained(
            directory,
            is_main_process=is_main_process,
            safe_serialization=True,
            path_initial_model_for_weight_conversion=initial,
        )
        if is_main_process:
            _restore_dropped_modules(model, directory)


def _restore_dropped_modules(model: Any, directory: str) -> None:
    """peft 0.21's PiSSA/OLoRA conversion keeps only lora_A/lora_B tensors and drops the
    modules_to_save copies (e.g. the classifier head); put them back from the live model."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    path = Path(directory) / "adapter_model.safetensors"
    converted = load_file(str(path))
    full = get_peft_model_state_dict(model)
    missing = {k: v.detach().contiguous().cpu() for k, v in full.items() if k not in converted}
    if missing:
        converted.update(missing)
        save_file(converted, str(path), metadata={"format": "pt"})


@dataclass(kw_only=True)
class LoraPlusParams(LoraParams):
    lr_ratio_b: float = 16.0  # lr of the B matrices = train.lr x this (the paper suggests 16)
    lr_embedding: float = 1e-6  # lr of LoRA on embedding layers, if any are targeted


@PEFT_METHODS.register("lora_plus")
class LoraPlus(Lora):
    Params = LoraPlusParams
    ft_only = frozenset({"lr_ratio_b", "lr_embedding"})  # optimizer settings, not LoraConfig's
    summary = "LoRA+ : LoRA with a higher learning rate (x lr_ratio_b) for the B matrices"

    @classmethod
    def lr_ratio(cls, params: Any, train: Any) -> float | None:
        return params.lr_ratio_b

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if params.lr_ratio_b <= 0:
            found.append(f"peft.lr_ratio_b={params.lr_ratio_b}: must be > 0 (about 16 is typical)")
        return found


@dataclass(kw_only=True)
class QLoraParams(LoraParams):
    bits: Literal[4, 8] = 4  # base weights in 4-bit (QLoRA) or 8-bit (LLM.int8)
    # 4-bit data type: nf4 suits normally distributed weights
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True  # also quantize the quantization constants (saves ~0.4 bit/param)
    # matmul dtype of 4-bit layers
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # LoftQ: init A, B to cancel the quantization error (reads the fp weights once)
    loftq_init: bool = False


@PEFT_METHODS.register("qlora")
class QLora(Lora):
    Params = QLoraParams
    # how the base is loaded (load_kwargs) and initialised (prepare_model), not LoraConfig's
    ft_only = frozenset({"bits", "quant_type", "double_quant", "compute_dtype", "loftq_init"})
    needs_cuda = True
    quantized_base = True
    cuda_reason = "bitsandbytes quantized base weights"
    summary = "QLoRA: LoRA on a 4-bit (or 8-bit) bitsandbytes base; GPU only. Preset loftq adds LoftQ init"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        found += missing_package("bitsandbytes", "bitsandbytes", "peft=qlora", "peft.name")
        if not run.plugins.profile.uses_gpu:
            found.append(
                f"hardware={run.hardware.name}: peft=qlora quantizes the base on a GPU; "
                f"use hardware=gpu (or another GPU profile)"
            )
        if _init_kind(params.init) in MUTATING_INITS:
            found.append(
                f"peft.init={params.init}: PiSSA/OLoRA rewrite base weights, which a "
                f"quantized base cannot hold exactly; use init=true (or loftq_init=true)"
            )
        if params.loftq_init and params.bits != 4:
            found.append(
                f"peft.loftq_init=true with peft.bits={params.bits}: LoftQ init needs bits=4"
            )
        return found

    @classmethod
    def base_weight_bytes(cls, params: Any, dtype_bytes: float, quantizable: bool) -> float:
        if not quantizable:
            # prepare_model_for_kbit_training casts every non-quantized weight (embeddings,
            # norms, the LM head) to fp32.
            return 4.0
        if params.bits == 8:
            return 1.0 + 4 / 4096  # int8 + an fp32 scale per row (rows of ~4k)
        # 4 bits + absmax per 64-weight block: fp32 (0.5 bit/param), or with double_quant an
        # 8-bit absmax plus an fp32 constant per 256 blocks (0.127 bit/param).
        overhead_bits = 8 / 64 + 32 / (64 * 256) if params.double_quant else 32 / 64
        return (4 + overhead_bits) / 8

    @classmethod
    def load_kwargs(cls, params: Any) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        if params.bits == 8:
            quant = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quant = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=params.quant_type,
                bnb_4bit_use_double_quant=params.double_quant,
                bnb_4bit_compute_dtype=getattr(torch, params.compute_dtype),
            )
        # Quantized weights cannot be moved after loading: load straight onto this rank's GPU.
        return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}}

    @classmethod
    def prepare_base(cls, params: Any, model: Any, train: Any) -> Any:
        from peft import prepare_model_for_kbit_training

        # Casts norms/head to fp32 and makes inputs require grad, as QLoRA training needs.
        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=train.gradient_checkpointing
        )

    @classmethod
    def prepare_model(cls, params: Any, model: Any, total_steps: int) -> None:
        super().prepare_model(params, model, total_steps)
        if params.loftq_init:
            from peft import replace_lora_weights_loftq

            # Reads the full-precision weights from the checkpoint's safetensors and sets A, B so
            # that Q(W) + BA ~ W. The base stays the plain quantized checkpoint: the adapter then
            # loads like any QLoRA adapter.
            replace_lora_weights_loftq(model)
