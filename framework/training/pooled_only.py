"""The last encoder layer of a classifier computed at the one position its head reads.

A BERT-style sequence classifier (BERT, RoBERTa, MiniLM, XLM-R, ELECTRA, ...) pools the first
token of the last layer's output: every other position of that layer is computed, then thrown
away. Its keys and values are needed at every position (the first token attends to the whole
row), but its query, attention output, and feed-forward block only at position 0. On a 6-layer
encoder that is about 1/7 of the multiply-adds of a step, forward and backward (the last layer's
FFN alone is 2/3 of that layer's matmuls).

`install` replaces the `forward` of the last layer *instance* (not its class) by
`first_position_forward`, which returns [batch, 1, hidden]: what the pooler reads
(`hidden[:, 0]`). It keeps it only where the model gives a probe batch (padded and unpadded rows)
the same logits with and without it, so a head that reads other positions (mean pooling, a
per-token head), an unknown layer layout, or a mask this cannot slice leaves it off. Dropout in
that layer then draws its masks for one position instead of all of them: the same distribution,
another random stream.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from framework.tasks.probe import agrees

ATTRIBUTE = "_ft_pooled_only"  # set on the layer while first_position_forward is installed


def last_encoder_layer(model: Any) -> Any:
    """The last self-attention layer of a BERT-style encoder under `model` (a PeftModel or a
    transformers model), or None where the model is not laid out like one (decoders included)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_decoder", False):
        return None
    if getattr(config, "add_cross_attention", False) or getattr(config, "is_encoder_decoder", 0):
        return None
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(layer, "attention", None)
    parts = (
        getattr(attention, "self", None),
        getattr(attention, "output", None),
        getattr(layer, "feed_forward_chunk", None),
    )
    if any(part is None for part in parts):
        return None
    if not all(hasattr(attention.self, name) for name in ("query", "key", "value")):
        return None
    if hasattr(layer, "_hf_hook"):  # accelerate's device hooks wrap forward on the instance
        return None
    return layer


def first_position_forward(
    layer: Any, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any
) -> Any:
    """The layer's output at position 0 only, [batch, 1, hidden]: the query of the first token
    over the keys and values of the whole row, then the attention output and the feed-forward
    block on that one position. Anything it cannot slice (a mask that is not 4-D, a cache,
    encoder states) goes to the class's own forward."""
    sliceable = attention_mask is None or getattr(attention_mask, "dim", lambda: 0)() == 4
    if not sliceable or kwargs.get("cache") is not None or (args and args[0] is not None):
        return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attention = layer.attention.self
    batch = hidden_states.shape[0]
    heads_shape = (batch, -1, attention.num_attention_heads, attention.attention_head_size)
    first = hidden_states[:, :1]
    query = attention.query(first).view(*heads_shape).transpose(1, 2)
    key = attention.key(hidden_states).view(*heads_shape).transpose(1, 2)
    value = attention.value(hidden_states).view(*heads_shape).transpose(1, 2)
    mask = attention_mask
    if mask is not None and mask.shape[2] > 1:
        mask = mask[:, :, :1, :]  # the first query's row of the [batch, 1, query, key] mask
    # The attention function the layer's own forward would call (eager: its module's own).
    eager = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
    if eager is None:
        raise AttributeError(f"{type(attention).__name__} has no eager_attention_forward")
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    context, _ = attend(
        attention,
        query,
        key,
        value,
        mask,
        dropout=attention.dropout.p if attention.training else 0.0,
        scaling=attention.scaling,
    )
    context = context.reshape(batch, 1, -1).contiguous()
    attended = layer.attention.output(context, first)
    return layer.feed_forward_chunk(attended)


def install(model: Any, vocab_size: int) -> bool:
    """Put first_position_forward on the model's last encoder layer if the model then gives a
    probe batch the logits it gives without it; True when installed."""
    layer = last_encoder_layer(model)
    if layer is None:
        return False
    try:
        before = probe_logits(model, vocab_size)
        layer.forward = types.MethodType(first_position_forward, layer)
        setattr(layer, ATTRIBUTE, True)
        after = probe_logits(model, vocab_size)
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError):
        uninstall(model)
        return False
    if before.shape != after.shape or not agrees(before, after, model):
        uninstall(model)
        return False
    return True


def uninstall(model: Any) -> None:
    """Give the last encoder layer its class's forward back (nothing when it has not ours)."""
    layer = last_encoder_layer(model)
    if layer is not None and getattr(layer, ATTRIBUTE, False):
        del layer.forward
        delattr(layer, ATTRIBUTE)


def probe_logits(model: Any, vocab_size: int) -> Any:
    """The model's logits on two 7-token rows, the second padded after 4 tokens (no gradient,
    eval mode, RNG untouched)."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    input_ids = torch.arange(3, 17, device=device).remainder(vocab_size).view(2, 7)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            padded = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            unpadded = model(input_ids=input_ids).logits.float()  # SDPA then takes no mask
    finally:
        model.train(was_training)
    return torch.cat([padded, unpadded])
