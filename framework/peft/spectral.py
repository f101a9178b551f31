"""Updates learned in a transform domain: FourierFT (a few spectral coefficients of dW, inverse
2-D DFT) and WaveFT (wavelet coefficients)."""

from __future__ import annotations

from dataclasses import dataclass

from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams


@dataclass(kw_only=True)
class FourierFtParams(PeftParams):
    n_frequency: int = 1000  # learned spectral coefficients per layer (<= in x out)
    scaling: float = 150.0  # scale of the update (like LoRA's alpha/r; 100-150 suits classifiers)
    random_loc_seed: int = 777  # seed of the (frozen) frequency locations


@PEFT_METHODS.register("fourierft")
class FourierFt(PeftMethod):
    Params = FourierFtParams
    peft_type = "FOURIERFT"
    peft_config = "FourierFTConfig"
    summary = "FourierFT: learn n spectral coefficients per layer; dW = inverse DFT"
    not_identity = (
        "its spectral coefficients start random, so the fresh adapter already changes outputs"
    )


@dataclass(kw_only=True)
class WaveFtParams(PeftParams):
    n_frequency: int = 2592  # learned wavelet coefficients per layer (<= in x out)
    scaling: float = 25.0  # scale of the update
    wavelet_family: str = "db1"  # wavelet of the inverse transform (db1 = Haar)
    random_loc_seed: int = 777  # seed of the (frozen) coefficient locations


@PEFT_METHODS.register("waveft")
class WaveFt(PeftMethod):
    Params = WaveFtParams
    peft_type = "WAVEFT"
    min_peft = "0.18.0"
    peft_config = "WaveFTConfig"
    summary = "WaveFT: learn sparse wavelet coefficients per layer; dW = inverse wavelet transform"
