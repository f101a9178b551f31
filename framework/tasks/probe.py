"""The tolerance the set-up checks share (packing, the fused loss, pooled_only): whether a fast
path gives a probe batch the result of the plain path, up to float rounding."""

from __future__ import annotations

from typing import Any


def agrees(expected: Any, got: Any, model: Any) -> bool:
    """Whether tensor `got` equals `expected` up to float rounding for `model`'s weights: within
    1e-4 of the expected values' scale (at least 1) in fp32 (~1e-6 seen), 3e-2 in bf16/fp16. A
    path that computes something else (attends across examples, reads other positions) differs
    by the scale itself."""
    import torch

    exact = next(model.parameters()).dtype == torch.float32
    scale = float(expected.abs().max().clamp(min=1.0))
    return float((got - expected).abs().max()) <= (1e-4 if exact else 3e-2) * scale
