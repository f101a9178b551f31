"""Attention of a packed row computed per example, not over the whole row.

A packed row (tasks/packing.py) holds several examples; with transformers' SDPA path, the model
builds a dense block-diagonal mask over the whole row from its position ids and attends over
(row length)^2 pairs, most of them masked: for a row of n similar examples, about n times the
pairs they need, and an explicit mask keeps SDPA off its fused causal kernels. Flash-attention
varlen avoids this on GPUs that have it; this does the same with plain SDPA, on any device: one
causal SDPA call per example (`is_causal=True`, no mask), the examples' lengths known on the host
from the collator, so no device sync is needed to find the boundaries.

It is registered in transformers' own attention registry (`AttentionInterface`) under `NAME`,
and installed only on models whose attention is "sdpa" (flash-attention and flex keep their own
varlen handling). Anything that is not a packed row with its lengths, sliding windows shorter
than an example, soft-capping or non-causal attention goes to transformers' SDPA function
unchanged. `training/speed.py` checks at set-up that the model gives a packed row the logits it
gives each example alone with this attention installed, and uninstalls it otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framework.tasks.packing import LENGTHS_KEY

NAME = "ft_packed_sdpa"


def attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function interface: query [1, heads, L, dim], key/value
    [1, kv heads, L, dim]; returns ([1, L, heads, dim], None)."""
    import torch
    from transformers.integrations.sdpa_attention import (
        repeat_kv,
        sdpa_attention_forward,
        use_gqa_in_sdpa,
    )

    lengths: Sequence[int] | None = kwargs.get(LENGTHS_KEY)
    window = kwargs.get("sliding_window")
    per_example = (
        lengths is not None
        and query.shape[0] == 1
        and sum(lengths) == query.shape[2] == key.shape[2]
        and is_causal is not False
        and getattr(module, "is_causal", True)
        and kwargs.get("softcap") is None
        and (not window or max(lengths) <= window)
    )
    if not per_example:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    grouped = key.shape[1] != query.shape[1]
    if grouped and not use_gqa_in_sdpa(None, key, value):  # transformers' own choice, unmasked
        key = repeat_kv(key, query.shape[1] // key.shape[1])
        value = repeat_kv(value, query.shape[1] // value.shape[1])
        grouped = False
    parts, start = [], 0
    for length in lengths:
        end = start + length
        parts.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
                enable_gqa=grouped,
            )
        )
        start = end
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def install(model: Any) -> bool:
    """Switch a model whose attention is transformers' "sdpa" to per-example attention on packed
    rows; False (nothing changed) for any other attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    base = _base(model)
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    # transformers' registries are keyed by name; registering the same function again is a no-op.
    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks of non-packed batches
    try:
        base.set_attn_implementation(NAME)
    except (ValueError, TypeError, AttributeError):  # a model that does not dispatch by name
        return False
    return getattr(base.config, "_attn_implementation", None) == NAME


def uninstall(model: Any) -> None:
    """Back to transformers' SDPA attention (after a failed check)."""
    base = _base(model)
    if getattr(base.config, "_attn_implementation", None) == NAME:
        base.set_attn_implementation("sdpa")
