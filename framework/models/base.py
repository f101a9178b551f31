"""Model families. The base class is the `auto` family: everything comes from the checkpoint's
config.json (model_type, is_encoder_decoder) and from tables transformers and peft already keep:

  tasks served       the task's Auto class has a class for the model type (automap.py)
  model kind         decoder (decoder-only), encoder or seq2seq (automap.model_kind)
  target modules     peft's per-architecture defaults, else the linear layers of the model built
                     on the meta device (no weights read)
  new task heads     trained in full (modules_to_save): the top-level modules of the task model
                     beside its backbone, found on the meta device
  pad token          eos (or unk) when the tokenizer has none

A registered subclass is an optional override for the few cases where those defaults are not what
a recipe wants (e.g. LoRA on every linear layer of a Llama instead of peft's q_proj/v_proj), or
where ft builds something config.json does not describe (bert2bert)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from framework.core import automap
from framework.core.registry import TASKS
from framework.models.params import ModelParams, TinySpec


class ModelFamily:
    """The `auto` family and the base of every override. Classmethods only: a family is asked
    about a checkpoint by passing its config (a config.json mapping or a transformers config)."""

    Params: ClassVar[type] = ModelParams
    # The architecture this family describes when no config.json can be read (a GGUF file, a tiny
    # model before it is built, a hub id not in the local cache); None = learn it from config.json.
    model_type: ClassVar[str | None] = None
    # Extra holes on top of what transformers' tables say: task name -> why.
    unsupported_tasks: ClassVar[dict[str, str]] = {}
    # Target modules per PEFT method kind, overriding peft's tables: "lora" (every LoRA-like
    # method), "ia3" and "ia3_feedforward", "ln" (ln_tuning).
    target_modules: ClassVar[dict[str, list[str]]] = {}
    summary: ClassVar[str] = ""

    # ---- what the checkpoint is ---------------------------------------------------------------
    @classmethod
    def describe(cls, config: Mapping | None) -> dict[str, Any] | None:
        """The architecture ft reasons about, as a config.json-like mapping (model_type and, when
        known, is_encoder_decoder), or None when it cannot be known without downloading."""
        if config is not None:
            return dict(config)
        return {"model_type": cls.model_type} if cls.model_type else None

    @classmethod
    def model_type_of(cls, config: Any = None) -> str | None:
        """The model type ft reasons about for a config (mapping or transformers config)."""
        described = cls.describe(_as_mapping(config))
        return str(described["model_type"]) if described and described.get("model_type") else None

    @classmethod
    def traits(cls, config: Mapping | None = None) -> frozenset[str]:
        """What PEFT compatibility rules match on: the model type and its kind (decoder, encoder,
        seq2seq). Empty when the architecture is unknown (checked again at train time)."""
        described = cls.describe(_as_mapping(config))
        if not described or not described.get("model_type"):
            return frozenset()
        return frozenset({str(described["model_type"]), automap.model_kind(described)})

    @classmethod
    def checkpoint_config(cls, params: ModelParams) -> dict[str, Any] | None:
        """The described architecture of a run's checkpoint, read without torch or network
        (config.json of a local, package or hub-cached checkpoint; the family's own otherwise)."""
        from framework.models.loading import read_config_json

        return cls.describe(read_config_json(cls, params))

    @classmethod
    def has_chat_template(cls, params: Any) -> bool | None:
        """Whether the run's tokenizer has a chat template, read from its files without torch or
        network; None when that is not known before download."""
        from framework.models.loading import read_has_chat_template

        return read_has_chat_template(cls, params)

    @classmethod
    def auto_model(cls, task_auto_model: str, config: Mapping | None) -> str:
        """The transformers Auto class to load for a task (an encoder-decoder embeds with its
        encoder alone)."""
        described = cls.describe(_as_mapping(config))
        return (
            automap.text_encoder_class(described, task_auto_model) if described else task_auto_model
        )

    @classmethod
    def unsupported(cls, task: str, config: Mapping | None = None) -> str | None:
        """Why this model cannot serve a task, or None when it can (or cannot be known yet)."""
        if task in cls.unsupported_tasks:
            return cls.unsupported_tasks[task]
        described = cls.describe(_as_mapping(config))
        if not described or not described.get("model_type") or task not in TASKS:
            return None
        model_type = str(described["model_type"])
        entry = TASKS.get(task)
        kinds = getattr(entry, "model_kinds", None)
        kind = automap.model_kind(described)
        if kinds and kind not in kinds:
            article = "an" if kind[0] in "aeiou" else "a"
            return (
                f"{task} needs a {' or '.join(sorted(kinds))} model and '{model_type}' is "
                f"{article} {kind} model"
            )
        auto_class = cls.auto_model(entry.auto_model, described)
        table = automap.classes_of(auto_class)
        if table is not None and model_type not in table:
            return f"transformers has no {auto_class} class for model type '{model_type}'"
        return None

    @classmethod
    def served_tasks(cls, config: Mapping | None = None) -> list[str]:
        """The registered tasks this model serves (for messages and `ft list`)."""
        return [task for task in TASKS.names() if cls.unsupported(task, config) is None]

    # ---- defaults for PEFT --------------------------------------------------------------------
    @classmethod
    def default_targets(
        cls, kind: str, model_config: Any = None, peft_type: str | None = None
    ) -> Any:
        """Target modules for a PEFT method kind: the family's own list, else peft's default for
        the model type, else the model's linear (or, for "ln", normalisation) layers found on the
        meta device. None when nothing is known (validation, before config.json is read)."""
        if kind in cls.target_modules:
            return list(cls.target_modules[kind])
        model_type = _model_type(model_config)
        if model_type is None:
            return None
        from framework.models import skeleton

        found = skeleton.peft_default_targets(kind, peft_type, model_type)
        if found is not None:
            return found
        return skeleton.layer_names(
            model_config, norms=(kind == "ln"), none_if_feedforward=(kind == "ia3_feedforward")
        )

    @classmethod
    def head_modules(cls, task: str, model_config: Any = None) -> list[str]:
        """New task-head modules to train in full (peft's modules_to_save): the task model's
        top-level modules beside its backbone, e.g. `classifier`, T5/BART's `classification_head`,
        DistilBERT's `pre_classifier`; none for a generation head (the pretrained LM head)."""
        if _model_type(model_config) is None or task not in TASKS:
            return []
        from framework.models import skeleton

        auto_class = cls.auto_model(TASKS.get(task).auto_model, _as_mapping(model_config))
        return skeleton.head_names(model_config, auto_class)

    # ---- tokenizer and checkpoint ---------------------------------------------------------------
    @classmethod
    def prepare_tokenizer(cls, tokenizer: Any) -> Any:
        """Fix up a loaded tokenizer: a pad token (eos, else unk) when it has none."""
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    @classmethod
    def prepare_checkpoint(cls, path: Any) -> Any:
        """Turn a resolved local checkpoint into the one to load (e.g. warm-start an
        encoder-decoder from an encoder checkpoint, cached); by default the path itself."""
        return path

    # ---- tiny test models -----------------------------------------------------------------------
    @classmethod
    def tiny_config(cls, spec: TinySpec, tokenizer: Any) -> Any:
        """A transformers config for a tiny random-init model of spec.model_type."""
        from framework.testing.tiny_models import tiny_config

        return tiny_config(cls.tiny_model_type(spec), spec, tokenizer)

    @classmethod
    def tiny_model_type(cls, spec: TinySpec) -> str:
        model_type = spec.model_type or cls.model_type
        if not model_type:
            from framework.core.errors import UserError

            name = getattr(cls, "registry_name", cls.__name__)
            raise UserError(
                f"model.random_init.model_type: missing; model family '{name}' has no "
                f"default architecture. Set a transformers model type, e.g. "
                f"model.random_init.model_type=qwen2"
            )
        return model_type


def _as_mapping(config: Any) -> Mapping | None:
    """A config.json mapping from a mapping or a transformers config; None for anything else."""
    if config is None or isinstance(config, Mapping):
        return config
    if hasattr(config, "to_dict") and getattr(config, "model_type", None):
        return config.to_dict()
    return None


def _model_type(config: Any) -> str | None:
    mapping = _as_mapping(config)
    return str(mapping["model_type"]) if mapping and mapping.get("model_type") else None
