"""bert2bert: a transformers EncoderDecoderModel whose encoder and decoder are both BERT-family
encoders (e.g. MiniLM), warm-started as in Rothe et al. 2020. The decoder copy gets causal
self-attention and new, randomly initialised cross-attention layers; train those in full
(peft.modules_to_save) and the rest with LoRA. Given an encoder checkpoint (config model_type
bert), ft builds the warm-started encoder-decoder once and caches it; a saved encoder-decoder
checkpoint is loaded as is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from framework.core.registry import MODELS
from framework.models.base import ModelFamily
from framework.models.params import TinySpec


def _special_ids(config: Any, tokenizer: Any) -> None:
    """Decoding starts at [CLS], stops at [SEP], pads with [PAD] (the BERT tokenizer's own)."""
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.bos_token_id = tokenizer.cls_token_id
    config.eos_token_id = tokenizer.sep_token_id
    config.pad_token_id = tokenizer.pad_token_id


@MODELS.register("bert2bert")
class Bert2Bert(ModelFamily):
    # What ft builds is an encoder-decoder, whatever encoder config.json the checkpoint has.
    model_type = "encoder-decoder"
    # Module names are shared by encoder and decoder; cross-attention layers are named
    # "crossattention" (their query/key/value match the LoRA targets too).
    target_modules = {
        "ia3": ["key", "value", "output.dense"],
        "ia3_feedforward": ["output.dense"],
        "ln": ["LayerNorm"],  # ln_tuning
    }
    # LoRA goes everywhere except the new cross-attention (a regex, matched in full by peft): a
    # low-rank update of random weights learns little, so recipes train those layers in full
    # with peft.modules_to_save=[crossattention].
    lora_targets = r"^(?!.*crossattention).*\.(query|key|value|dense)$"
    drop_target_cls = True  # the decoder starts at [CLS]: labels do not repeat it
    summary = "build an encoder-decoder from two copies of a BERT-style encoder (warm start)"

    @classmethod
    def describe(cls, config: Any) -> Any:
        if config is not None and config.get("model_type") == "encoder-decoder":
            return dict(config)
        return {"model_type": "encoder-decoder", "is_encoder_decoder": True}

    @classmethod
    def default_targets(cls, kind: str, model_config: Any = None, peft_type: Any = None) -> Any:
        if kind == "lora":
            return cls.lora_targets
        return super().default_targets(kind, model_config, peft_type)

    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer: Any) -> Any:
        from transformers import BertConfig, EncoderDecoderConfig

        def bert(decoder: bool) -> Any:
            return BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=spec.hidden_size,
                intermediate_size=spec.intermediate_size,
                num_hidden_layers=spec.num_layers,
                num_attention_heads=spec.num_heads,
                max_position_embeddings=spec.max_positions,
                pad_token_id=tokenizer.pad_token_id,
                is_decoder=decoder,
                add_cross_attention=decoder,
            )

        config = EncoderDecoderConfig.from_encoder_decoder_configs(bert(False), bert(True))
        _special_ids(config, tokenizer)
        return config

    @classmethod
    def tiny_model_type(cls, spec: TinySpec) -> str:
        return "bert"  # the encoder it joins: its tokenizer (WordPiece, [CLS]/[SEP])

    @classmethod
    def prepare_checkpoint(cls, path: Any) -> Any:
        config = json.loads((Path(path) / "config.json").read_text())
        if config.get("model_type") == "encoder-decoder":
            return path
        from framework.core.cache import atomic_dir, cache_root

        stat = (Path(path) / "config.json").stat()
        digest = hashlib.sha256(f"{Path(path).resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[
            :16
        ]

        def build(tmp: Path) -> None:
            from transformers import AutoTokenizer, EncoderDecoderModel

            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(path), str(path))
            _special_ids(model.config, tokenizer)
            _special_ids(model.generation_config, tokenizer)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        return atomic_dir(cache_root() / "bert2bert" / f"{Path(path).name}-{digest}", build)
