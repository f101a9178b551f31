"""What transformers' Auto classes can load, read without importing torch.

transformers keeps, per Auto class, a table `model_type -> model class name`
(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, ...) in models/auto/modeling_auto.py. In
transformers 5 importing that module imports torch, and `ft validate` must not, so the tables are
read from the module's source: each is a literal `OrderedDict([(str, str), ...])`, evaluated with
ast.literal_eval (no code runs). This takes about 20 ms and is done once per process.

From the tables: whether an architecture serves a task (its model type is in the task's Auto
class table) and what kind of model it is (decoder-only, encoder, encoder-decoder).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path

# Auto class -> the name of its table in modeling_auto.py.
TABLE_OF_AUTO_CLASS = {
    "AutoModel": "MODEL_MAPPING_NAMES",
    "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForMaskedLM": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "AutoModelForSeq2SeqLM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "AutoModelForTextEncoding": "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES",
}

DECODER, ENCODER, SEQ2SEQ = "decoder", "encoder", "seq2seq"  # model kinds (decoder = decoder-only)


@functools.lru_cache(maxsize=1)  # a pure read of an installed file: parse it once per process
def _tables() -> dict[str, dict[str, str]]:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return {}
    source = Path(list(spec.submodule_search_locations)[0]) / "models" / "auto" / "modeling_auto.py"
    tables: dict[str, dict[str, str]] = {}
    for node in ast.parse(source.read_text()).body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in TABLE_OF_AUTO_CLASS.values()
        ):
            continue
        call = node.value
        if isinstance(call, ast.Call) and call.args:
            try:
                tables[node.targets[0].id] = dict(ast.literal_eval(call.args[0]))
            except ValueError:  # a table built by code, not a literal: treated as unknown
                continue
    return tables


def classes_of(auto_class: str) -> dict[str, str] | None:
    """model_type -> class name for an Auto class; None when ft cannot read its table."""
    table = TABLE_OF_AUTO_CLASS.get(auto_class)
    return _tables().get(table) if table else None


def model_class(auto_class: str, model_type: str) -> str | None:
    """The class the Auto class loads for a model type, or None if it has none."""
    return (classes_of(auto_class) or {}).get(model_type)


def model_kind(config: Mapping) -> str:
    """decoder (causal, decoder-only), encoder, or seq2seq (encoder-decoder), from config.json.

    Encoders such as BERT also appear in the causal-LM table (BertLMHeadModel), but they are
    masked-LM models first and attend both ways; a decoder-only model has no masked-LM class."""
    model_type = str(config.get("model_type", ""))
    if config.get("is_encoder_decoder") or model_type == "encoder-decoder":
        return SEQ2SEQ
    if "is_encoder_decoder" not in config and model_class("AutoModelForSeq2SeqLM", model_type):
        return SEQ2SEQ  # a bare {"model_type": ...} (tiny model spec, family default): its table
    if model_class("AutoModelForCausalLM", model_type) and not model_class(
        "AutoModelForMaskedLM", model_type
    ):
        return DECODER
    return ENCODER


def text_encoder_class(config: Mapping, auto_class: str) -> str:
    """The Auto class that yields token states for embeddings: the base model, except for an
    encoder-decoder, whose base model wants decoder inputs; there, its encoder alone (T5 ->
    T5EncoderModel through AutoModelForTextEncoding)."""
    if auto_class == "AutoModel" and model_kind(config) == SEQ2SEQ:
        return "AutoModelForTextEncoding"
    return auto_class
