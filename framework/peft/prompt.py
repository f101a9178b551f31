"""Prompt learning: the model is untouched and trainable virtual tokens are added to its input
(prompt tuning, P-tuning) or to every attention layer's keys/values (prefix tuning). Adaption
prompt (LLaMA-Adapter) adds gated learned prompts to the top attention layers of Llama/Mistral/GPT-2.
Holes are declared by model kind (decoder, encoder, seq2seq) or model type, so that they hold for
any checkpoint of that kind.

None of them can be merged into the weights: the adapter stays a separate input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from framework.core.registry import PEFT_METHODS
from framework.peft.base import PeftMethod, PeftParams, exclude

# Facts about peft 0.21 + transformers 5, each checked by tests/test_peft_compat.py. A reward
# model is a one-output sequence-classification head: what holds for seq_cls holds for it.
_NO_PAST_KEY_VALUES = exclude(
    ("seq_cls", "reward_model", "token_cls", "question_ans"),
    reason="prefix tuning passes past_key_values, which the transformers classification and QA "
    "heads do not accept (peft raises 'Model does not support past key values')",
    errors=("ValueError",),
    match="does not support past key values",
)
_TOKEN_CLS_SHIFT = exclude(
    ("token_cls",),
    reason="peft prepends the virtual tokens to the input but not to the per-token labels, so "
    "logits and labels differ in length (peft raises a batch-size mismatch)",
    errors=("ValueError",),
    match="Expected input batch_size",
)
_NO_INPUT_EMBEDS = exclude(
    ("seq_cls", "reward_model", "question_ans"),
    ("seq2seq",),
    reason="peft feeds inputs_embeds, which encoder-decoder (T5, BART) classification and QA "
    "heads refuse (transformers raises NotImplementedError / asks for input_ids)",
    errors=("NotImplementedError", "ValueError"),
    match=r"input embeddings is currently not supported|`input_ids` cannot be `None`",
)
_LAST_POSITION = exclude(
    ("seq_cls", "reward_model"),
    ("decoder",),
    reason="decoder-only classifiers find the last real token from input_ids; given peft's "
    "inputs_embeds they read the last position, which is padding for shorter rows",
    peft_fails=False,
    fact="test_fact_decoder_seq_cls_reads_padding_with_prompts",
)
_QA_UNSHIFTED = exclude(
    ("question_ans",),
    reason="peft prepends the virtual tokens but does not shift start/end positions, and the "
    "start/end logits then cover the virtual tokens: answer spans would be off by "
    "num_virtual_tokens",
    peft_fails=False,
    fact="test_fact_qa_logits_include_virtual_tokens",
)
_POOLING = exclude(
    ("feature_extraction",),
    reason="the hidden states gain num_virtual_tokens leading positions that the attention mask "
    "ft pools with does not cover (mean pooling misaligns, cls pooling reads a virtual token)",
    peft_fails=False,
    fact="test_fact_hidden_states_include_virtual_tokens",
)
_ENCODER_DECODER_CONFIG = exclude(
    models=("encoder-decoder",),  # the model type of transformers' EncoderDecoderModel (bert2bert)
    reason="peft reads num_layers / num_attention_heads from the top-level model config, which "
    "an EncoderDecoderModel config lacks (peft raises 'Please specify num_layers')",
    errors=("ValueError",),
    match="Please specify `num_layers`",
)
_ENCODER_ONLY_PREFIX = exclude(
    ("feature_extraction",),
    ("seq2seq",),
    reason="embeddings of an encoder-decoder come from its encoder alone (e.g. T5EncoderModel), "
    "which does not take the prefixes: they get no gradient (torch raises 'element 0 of "
    "tensors does not require grad')",
    errors=("RuntimeError",),
    match="does not require grad",
)
_SOFT_PROMPT_HOLES = (
    _TOKEN_CLS_SHIFT,
    _NO_INPUT_EMBEDS,
    _LAST_POSITION,
    _QA_UNSHIFTED,
    _POOLING,
    _ENCODER_DECODER_CONFIG,
)
_ADAPTION_HEADS = exclude(
    ("token_cls", "question_ans"),
    reason="peft's adaption prompt cannot wrap token-classification or QA models "
    "(it raises TypeError: 'NoneType' object is not iterable)",
    errors=("TypeError",),
    match="'NoneType' object is not iterable",
)
_ADAPTION_NO_HEAD = exclude(
    ("seq_cls", "reward_model"),
    reason="adaption prompt has no modules_to_save: the new, randomly initialised classifier "
    "head would stay frozen and would not be saved with the adapter",
    peft_fails=False,
    fact="test_fact_adaption_prompt_leaves_the_new_head_untrained",
)


class PromptLearning(PeftMethod):
    """Shared facts of the prompt-learning methods."""

    target_kind = None
    can_merge = False
    prompt_learning = True
    common_keys = ("task_type", "modules_to_save")  # peft's prompt configs take no target_modules

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if params.target_modules is not None:
            found.append(
                f"peft.target_modules={params.target_modules}: {run.peft.name} adds "
                f"virtual tokens and targets no modules; remove the key"
            )
        if params.num_virtual_tokens < 1:
            found.append(f"peft.num_virtual_tokens={params.num_virtual_tokens}: must be >= 1")
        # The virtual tokens share the context window with the real ones.
        return found


@dataclass(kw_only=True)
class PromptTuningParams(PeftParams):
    num_virtual_tokens: int = 20  # learned soft-prompt tokens prepended to every input
    init: Literal["text", "random", "sample_vocab"] = "text"  # how the soft prompt starts
    init_text: str = "Read the text and give the right answer:"  # with init=text: its token embeddings (cycled to length)


@PEFT_METHODS.register("prompt_tuning")
class PromptTuning(PromptLearning):
    Params = PromptTuningParams
    peft_type = "PROMPT_TUNING"
    peft_config = "PromptTuningConfig"
    peft_names = {"init": "prompt_tuning_init", "init_text": "prompt_tuning_init_text"}
    exclusions = _SOFT_PROMPT_HOLES
    summary = "prompt tuning: learn soft-prompt embeddings prepended to the input (text init)"

    @classmethod
    def config_kwargs(
        cls, params: PromptTuningParams, task: str, family: Any, model_config: Any
    ) -> dict[str, Any]:
        text = params.init == "text"
        kwargs = super().config_kwargs(params, task, family, model_config)
        kwargs["prompt_tuning_init"] = params.init.upper()
        kwargs["prompt_tuning_init_text"] = params.init_text if text else None
        # peft tokenizes init_text with the model's own tokenizer: the checkpoint directory.
        kwargs["tokenizer_name_or_path"] = (
            getattr(model_config, "name_or_path", None) if text else None
        )
        return kwargs


@dataclass(kw_only=True)
class PTuningParams(PeftParams):
    num_virtual_tokens: int = 20  # learned prompt tokens prepended to every input
    encoder: Literal["MLP", "LSTM"] = "MLP"  # reparameterisation network producing the prompt
    encoder_hidden_size: int = 128  # hidden width of that network
    encoder_num_layers: int = 2  # its depth
    encoder_dropout: float = 0.0  # its dropout


@PEFT_METHODS.register("p_tuning")
class PTuning(PromptLearning):
    Params = PTuningParams
    peft_type = "P_TUNING"
    peft_config = "PromptEncoderConfig"
    peft_names = {"encoder": "encoder_reparameterization_type"}
    exclusions = _SOFT_PROMPT_HOLES
    summary = "P-tuning: virtual tokens produced by a small MLP/LSTM prompt encoder"


@dataclass(kw_only=True)
class PrefixTuningParams(PeftParams):
    num_virtual_tokens: int = 20  # learned key/value prefix length in every attention layer
    # reparameterise the prefix through an MLP (stabler, more params)
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None  # hidden width of that MLP; null = the model's width


@PEFT_METHODS.register("prefix_tuning")
class PrefixTuning(PromptLearning):
    Params = PrefixTuningParams
    peft_type = "PREFIX_TUNING"
    # encoder_hidden_size=None is peft's own default (the model's width), so it is passed as is
    peft_config = "PrefixTuningConfig"
    exclusions = (_NO_PAST_KEY_VALUES, _ENCODER_DECODER_CONFIG, _ENCODER_ONLY_PREFIX)
    summary = "prefix tuning: learned key/value prefixes in every attention layer"


@dataclass(kw_only=True)
class AdaptionPromptParams(PeftParams):
    adapter_len: int = 10  # learned prompt tokens per adapted layer
    adapter_layers: int = 8  # adapt the top N decoder layers (at most the model's layer count)


@PEFT_METHODS.register("adaption_prompt")
class AdaptionPrompt(PeftMethod):
    Params = AdaptionPromptParams
    peft_type = "ADAPTION_PROMPT"
    peft_config = "AdaptionPromptConfig"
    common_keys = ("task_type",)  # it adapts the attention layers itself: no module lists
    target_kind = None
    can_merge = False
    prompt_learning = True
    # peft implements it for these model types only (its TRANSFORMERS_MODEL_CONFIG).
    model_types = frozenset({"llama", "mistral", "gpt2"})
    model_type_error = ("ValueError", "Unsupported model type for adaption prompt")
    exclusions = (_ADAPTION_HEADS, _ADAPTION_NO_HEAD)
    summary = "LLaMA-Adapter: zero-gated learned prompts in the top attention layers (Llama, Mistral, GPT-2)"

    @classmethod
    def not_identity_at_init(cls, params: Any) -> str:
        return ""  # its gates start at zero: the prompts are switched off at initialisation

    @classmethod
    def config_kwargs(
        cls, params: AdaptionPromptParams, task: str, family: Any, model_config: Any
    ) -> dict[str, Any]:
        kwargs = super().config_kwargs(params, task, family, model_config)
        total = getattr(model_config, "num_hidden_layers", None)
        if total is not None:  # peft refuses more layers than the model has
            kwargs["adapter_layers"] = min(params.adapter_layers, total)
        return kwargs

    @classmethod
    def params_problems(cls, params: Any, run: Any) -> list[str]:
        found = super().params_problems(params, run)
        if params.target_modules is not None or params.modules_to_save is not None:
            found.append(
                "peft.target_modules / peft.modules_to_save: adaption_prompt adapts the "
                "attention layers itself and takes neither; remove them"
            )
        if params.adapter_len < 1 or params.adapter_layers < 1:
            found.append(
                f"peft.adapter_len={params.adapter_len}, peft.adapter_layers="
                f"{params.adapter_layers}: both must be >= 1"
            )
        return found
