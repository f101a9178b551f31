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

import functools
from collections.abc import Sequence
from typing import Any

from framework.tasks.packing import CU_SEQLENS_KEY, LENGTHS_KEY

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
    outside: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function interface: query [1, heads, L, dim], key/value
    [1, kv heads, L, dim]; returns ([1, L, heads, dim], None). `outside`: per_example_sdpa
    wrapped to run between compiled graphs (registered_attention binds it)."""
    from transformers.integrations.sdpa_attention import (
        repeat_kv,
        sdpa_attention_forward,
        use_gqa_in_sdpa,
    )

    lengths: Sequence[int] | None = kwargs.get(LENGTHS_KEY)
    offsets = kwargs.get(CU_SEQLENS_KEY)  # the same boundaries as a tensor (under torch.compile)
    window = kwargs.get("sliding_window")
    applies = (
        query.shape[0] == 1
        and query.shape[2] == key.shape[2]
        and is_causal is not False
        and getattr(module, "is_causal", True)
        and kwargs.get("softcap") is None
    )
    per_example = (
        applies
        and lengths is not None
        and sum(lengths) == query.shape[2]
        and (not window or max(lengths) <= window)
    )
    if not per_example and not (applies and offsets is not None and not window):
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
    if per_example:
        spans, start = [], 0
        for length in lengths:
            spans.append((start, start + length))
            start += length
        return per_example_sdpa(query, key, value, spans, dropout, scaling, grouped), None
    run = outside or per_example_from_offsets
    return run(query, key, value, offsets, dropout, scaling, grouped), None


def per_example_sdpa(
    query: Any,
    key: Any,
    value: Any,
    spans: Sequence[tuple[int, int]],
    dropout: float,
    scaling: float | None,
    grouped: bool,
) -> Any:
    """One causal SDPA call per (start, end) span of the row; [1, L, heads, dim]."""
    import torch

    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=grouped,
        )
        for start, end in spans
        if end > start
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous()


def per_example_from_offsets(
    query: Any, key: Any, value: Any, offsets: Any, dropout: float, scaling: Any, grouped: bool
) -> Any:
    """per_example_sdpa for boundaries given as a tensor [examples + 1] of offsets."""
    bounds = offsets.tolist()
    if bounds[-1] != query.shape[2]:
        raise ValueError(f"{CU_SEQLENS_KEY} ends at {bounds[-1]}, the row has {query.shape[2]}")
    return per_example_sdpa(
        query, key, value, list(zip(bounds, bounds[1:])), dropout, scaling, grouped
    )


@functools.cache
def registered_attention() -> Any:
    """The attention function installed in transformers' registry: `attention`, with the
    boundaries-as-a-tensor path run eagerly between torch.compile's graphs
    (torch.compiler.disable): the boundaries are read on the host there, so the compiled graphs
    never see their values (no recompile for new lengths), and autograd records the calls as in
    eager mode. torch 2.13 has no CPU kernel that takes the boundaries itself (flex attention has
    no CPU backward, varlen attention is CUDA-only)."""
    import torch

    return functools.partial(attention, outside=torch.compiler.disable(per_example_from_offsets))


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
    AttentionInterface.register(NAME, registered_attention())
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
