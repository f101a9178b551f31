"""Alternatives to LoRA's low-rank update in peft 0.21 (MiSS shards, SHiRA sparse, C3A circular
convolution, RoAd rotations, DeLoRA, GraLoRA, HiRA), each working on any linear layer (checked
across ft's model families by tests/test_peft_compat.py). They keep peft's defaults except where
noted.

Not registered, and why (peft 0.21 on CPU): X-LoRA, Poly, multitask prompt tuning and CPT need
extra per-example inputs (task ids, adapter mixes, CPT masks) that ft's tasks do not produce;
trainable_tokens only trains chosen token rows; AdaMSS needs scikit-learn; ShadowPEFT crashed on
BERT; FRoD's init takes seconds per layer; Lily and BEFT cannot merge; OSF rewrites the base weights
and trains about half of every matrix; PSOFT, PEANUT, SuperTuning, DeFT, GLoRA, UniLoRA, TinyLoRA
and PVeRA are left out to keep the test budget for the better-known methods (each is a few lines
like those below)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from framework.core.registry import PEFT_METHODS
from framework.peft.base import LINEAR_ONLY, PeftMethod, PeftParams


@dataclass(kw_only=True)
class MissParams(PeftParams):
    # rows of the shared shard matrix (even numbers; params = r x out_features per layer)
    r: int = 64
    dropout: float = 0.0  # dropout on the adapter input


@PEFT_METHODS.register("miss")
class Miss(PeftMethod):
    Params = MissParams
    peft_type = "MISS"
    peft_config = "MissConfig"
    peft_names = {"dropout": "miss_dropout"}
    exclusions = (LINEAR_ONLY,)
    summary = "MiSS (formerly Bone): one shard matrix per layer shared across weight blocks"


@dataclass(kw_only=True)
class ShiraParams(PeftParams):
    # budget: r x (in + out) trainable entries per layer, like LoRA's r (not a rank limit)
    r: int = 32
    mask_type: Literal["random"] = "random"  # which entries of W train (peft ships a random mask)
    random_seed: int = 0  # seed of the sparse mask


@PEFT_METHODS.register("shira")
class Shira(PeftMethod):
    Params = ShiraParams
    peft_type = "SHIRA"
    peft_config = "ShiraConfig"
    exclusions = (LINEAR_ONLY,)
    summary = "SHiRA: train a sparse, high-rank set of weight entries (LoRA's parameter budget)"


@dataclass(kw_only=True)
class C3aParams(PeftParams):
    # circulant block size; must divide every target's in and out width (peft default 256)
    block_size: int = 64


@PEFT_METHODS.register("c3a")
class C3a(PeftMethod):
    Params = C3aParams
    peft_type = "C3A"
    peft_config = "C3AConfig"
    at_least_one = ("block_size",)
    exclusions = (LINEAR_ONLY,)
    summary = "C3A: update as a block-circular convolution (FFT), full rank at LoRA-like cost"
    not_identity = "its circular kernels start random, so the fresh adapter already changes outputs"


@dataclass(kw_only=True)
class RoadParams(PeftParams):
    # 1: one scale+angle per pair; 2, 4: 2x, 4x the params
    variant: Literal["road_1", "road_2", "road_4"] = "road_1"
    group_size: int = 64  # output elements per rotation group; must divide the layers' output width


@PEFT_METHODS.register("road")
class Road(PeftMethod):
    Params = RoadParams
    peft_type = "ROAD"
    min_peft = "0.18.0"
    peft_config = "RoadConfig"
    exclusions = (LINEAR_ONLY,)
    summary = (
        "RoAd: learned 2-D rotations and scales of output pairs (fewest params of the adapters)"
    )


@dataclass(kw_only=True)
class DeloraParams(PeftParams):
    r: int = 8  # rank of the update
    delora_lambda: float = 15.0  # initial bound on the Frobenius norm of the update (learned)
    module_dropout: float = 0.0  # probability of skipping the adapter for a step


@PEFT_METHODS.register("delora")
class Delora(PeftMethod):
    Params = DeloraParams
    peft_type = "DELORA"
    min_peft = "0.18.0"
    peft_config = "DeloraConfig"
    exclusions = (LINEAR_ONLY,)
    summary = "DeLoRA: LoRA with normalised factors and a learned bound on the update's norm"


@dataclass(kw_only=True)
class GraloraParams(PeftParams):
    r: int = 32  # total rank (same parameter count as LoRA with this r); divisible by k
    # blocks per side: the update is a k x k grid of rank-r/k LoRAs (widths divisible by k)
    k: int = 2
    alpha: float = 64.0  # scale = alpha / r
    hybrid_r: int = 0  # extra rank given to a plain LoRA beside the grid (hybrid GraLoRA)
    dropout: float = 0.0  # dropout on the adapter input


@PEFT_METHODS.register("gralora")
class Gralora(PeftMethod):
    Params = GraloraParams
    peft_type = "GRALORA"
    min_peft = "0.19.0"
    peft_config = "GraloraConfig"
    peft_names = {"k": "gralora_k", "dropout": "gralora_dropout"}
    summary = "GraLoRA: k x k grid of small LoRAs, more expressive at LoRA's parameter count"

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if params.k < 1 or params.r % params.k:
            found.append(f"peft.r={params.r}, peft.k={params.k}: r must be a multiple of k >= 1")
        return found


@dataclass(kw_only=True)
class HiraParams(PeftParams):
    r: int = 32  # rank of the low-rank factor; the update W ⊙ (B·A) is high rank
    dropout: float = 0.0  # dropout on the adapter input


@PEFT_METHODS.register("hira")
class Hira(PeftMethod):
    Params = HiraParams
    peft_type = "HIRA"
    min_peft = "0.19.0"
    peft_config = "HiraConfig"
    peft_names = {"dropout": "hira_dropout"}
    summary = "HiRA: high-rank update W0 ⊙ (B·A), the Hadamard product with the frozen weight"
