"""Updates learned in a transform domain: FourierFT (a few spectral coefficients of dW, inverse
2-D DFT) and WaveFT (wavelet coefficients)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework.peft.base import PeftMethod, PeftParams, common_kwargs
from framework.registry import PEFT_METHODS


@dataclass(kw_only=True)
class FourierFtParams(PeftParams):
    n_frequency: int = 1000  # learned spectral coefficients per layer (<= in x out)
    scaling: float = 150.0  # scale of the update (like LoRA's alpha/r; 100-150 suits classifiers)
    random_loc_seed: int = 777  # seed of the (frozen) frequency locations


@PEFT_METHODS.register("fourierft")
class FourierFt(PeftMethod):
    Params = FourierFtParams
    peft_type = "FOURIERFT"
    summary = "FourierFT: learn n spectral coefficients per layer; dW = inverse DFT"

    @classmethod
    def build(cls, params: FourierFtParams, task: str, family: Any, model_config: Any) -> Any:
        from peft import FourierFTConfig

        return FourierFTConfig(n_frequency=params.n_frequency, scaling=params.scaling,
                               random_loc_seed=params.random_loc_seed,
                               **common_kwargs(cls, params, task, family))


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
    summary = "WaveFT: learn sparse wavelet coefficients per layer; dW = inverse wavelet transform"

    @classmethod
    def build(cls, params: WaveFtParams, task: str, family: Any, model_config: Any) -> Any:
        from peft import WaveFTConfig

        return WaveFTConfig(n_frequency=params.n_frequency, scaling=params.scaling,
                            wavelet_family=params.wavelet_family,
                            random_loc_seed=params.random_loc_seed,
                            **common_kwargs(cls, params, task, family))
