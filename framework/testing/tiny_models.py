"""Tiny random-init models of any transformers architecture, for tests: the model type's own config
class (AutoConfig.for_model) with 2 layers of width 64, its special-token ids taken from a
tokenizer trained on the fly, dropout off. Sizes are given under transformers' common names
(hidden_size, num_hidden_layers, ...), which each config class maps to its own (d_model, n_layer,
...); the few size fields outside that map are set when the class has them."""

from __future__ import annotations

from typing import Any

from framework.core import automap


def tokenizer_kind(model_type: str) -> str:
    """Which special-token layout the tiny tokenizer gets: WordPiece with [CLS]/[SEP] for
    encoders, byte-level BPE with </s> appended for encoder-decoders, BPE with <s> for decoders."""
    kind = automap.model_kind({"model_type": model_type})
    return {automap.ENCODER: "bert", automap.SEQ2SEQ: "t5"}.get(kind, "llama")


def save_class(model_type: str) -> str:
    """The Auto class a tiny checkpoint is saved with: the generation class of decoders and
    encoder-decoders (their usual hub form), the bare encoder otherwise."""
    kind = automap.model_kind({"model_type": model_type})
    return {automap.DECODER: "AutoModelForCausalLM", automap.SEQ2SEQ: "AutoModelForSeq2SeqLM"}.get(
        kind, "AutoModel"
    )


def _sizes(spec: Any) -> dict[str, Any]:
    head_dim = spec.hidden_size // spec.num_heads
    return {
        # names every config class understands (directly or through its attribute_map)
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "intermediate_size": spec.intermediate_size,
        # names only some classes have; set where the class has the field
        "num_key_value_heads": spec.num_heads,
        "head_dim": head_dim,
        "d_kv": head_dim,
        "d_ff": spec.intermediate_size,
        "n_inner": spec.intermediate_size,
        "hidden_dim": spec.intermediate_size,  # DistilBERT's feed-forward width
        "encoder_ffn_dim": spec.intermediate_size,
        "decoder_ffn_dim": spec.intermediate_size,
        "decoder_layers": spec.num_layers,
        "num_decoder_layers": spec.num_layers,
        "decoder_attention_heads": spec.num_heads,
        "encoder_attention_heads": spec.num_heads,
        # RoBERTa-style position ids start after the padding index: leave room for the offset
        "max_position_embeddings": spec.max_positions + 2,
    }


def _special_ids(tokenizer: Any, kind: str) -> dict[str, Any]:
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
    }
    if kind == automap.SEQ2SEQ:
        # T5 starts decoding at <pad>; BART-style models at </s> (their own conventions)
        ids["decoder_start_token_id"] = tokenizer.pad_token_id
        ids["forced_eos_token_id"] = tokenizer.eos_token_id
    return ids


def tiny_config(model_type: str, spec: Any, tokenizer: Any) -> Any:
    """A small config of `model_type` sized by spec, matching `tokenizer`'s vocabulary."""
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(model_type).to_dict()
    kind = automap.model_kind({"model_type": model_type, **defaults})
    values: dict[str, Any] = {"vocab_size": len(tokenizer)}
    common = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    for key, value in _sizes(spec).items():
        if key in common or key in defaults:
            values[key] = value
    # Special ids: set where the class has the field; generation ids (decoder start, forced eos)
    # always for encoder-decoders (transformers 5 keeps them out of the config's defaults).
    for key, value in _special_ids(tokenizer, kind).items():
        if key in defaults or key in ("decoder_start_token_id", "forced_eos_token_id"):
            values[key] = value
    if model_type in ("bart", "mbart", "plbart", "mvp"):
        values["decoder_start_token_id"] = tokenizer.eos_token_id
    for key, value in defaults.items():  # dropout off (see TinySpec)
        if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
            values[key] = 0.0
    return AutoConfig.for_model(model_type, **values)
