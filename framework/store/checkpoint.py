"""Atomic checkpoints: everything needed to continue a run exactly (the trainable weights, optimizer,
scheduler, grad scaler and RNG states through Accelerate's save_state; the step and data position;
the resolved config), written to a temporary directory, fsynced, renamed, and marked complete last.

Adapter-only. The frozen base is not saved: a resumed run loads it again from model.checkpoint
(and rebuilds whatever the PEFT method derives from it, with the same seed), so a checkpoint
records a fingerprint of the base instead (BASE_FILE) and a resume refuses a base that changed.
How each backend keeps the base out:

  one process, DDP   a save_state pre-hook drops the frozen parameters from the state dict that
                     Accelerate writes to model.safetensors; a load_state pre-hook loads the
                     trainable names itself (non-strict for the frozen ones only, every trainable
                     name required) and hands Accelerate nothing to load strictly
  DeepSpeed ZeRO     DeepSpeed's own save_checkpoint(exclude_frozen_parameters=True): each rank's
                     partition of the trainable weights and their optimizer state, no frozen
                     parameter or ZeRO-3 frozen fragment; loaded non-strictly with the same check
  FSDP               unchanged: Accelerate's save_state has no adapter-only path for FSDP (its
                     save_fsdp_model has one, but save_state does not pass it), so the gathered
                     whole model is saved (the hardware profile says so: checkpoint_holds_base)

Checkpoints of earlier ft versions hold the whole model; they load as before (the extra names are
loaded too)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

from framework.core.errors import UserError
from framework.store.run_dir import CHECKPOINTS_DIR, CONFIG_FILE

COMPLETE_MARKER = "COMPLETE"  # written last: the step and each file's size and sha256 (JSON)
STATE_FILE = "trainer_state.json"
BASE_FILE = "base_model.json"  # fingerprint of the frozen base the saved weights were trained on
PREFIX = "checkpoint-"
WEIGHTS_FILE = "model.safetensors"  # Accelerate's name for the (first) model's saved state
METADATA_BYTES = 1 << 20  # RNG states, scheduler, config, COMPLETE: under 1 MiB together
# A base weight file up to this size is hashed whole; a larger one by SAMPLE_BLOCKS evenly spaced
# blocks of SAMPLE_BYTES (4 MiB read per file whatever its size: a 16 GB base stays cheap).
HASH_WHOLE_BYTES = 64 << 20
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 64 << 10

log = logging.getLogger("ft")


def checkpoint_size(
    trainable_params: int,
    saved_weight_bytes: float,
    optimizer_state_bytes: float,
) -> int:
    """Disk per checkpoint (bytes): the saved weights (the trainable ones, or the whole model
    where the backend saves it), the optimizer's state per trainable parameter (AdamW: two fp32
    moments, 8 B; + 4 B for a 16-bit run's fp32 master copy under DeepSpeed) and METADATA_BYTES."""
    return int(saved_weight_bytes + trainable_params * optimizer_state_bytes + METADATA_BYTES)


def checkpoint_bytes(
    model: Any, optimizer_state_bytes: float = 8.0, whole_model: bool = False
) -> int:
    """checkpoint_size of this model: its trainable parameters and persistent buffers in their own
    dtypes, or with whole_model (FSDP, older ft) every parameter and buffer."""
    if whole_model:
        weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    else:  # a tensor under two names (tied weights) is written once
        distinct = {id(t): t for _, t in saved_tensors(model)}
        weights = sum(t.numel() * t.element_size() for t in distinct.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return checkpoint_size(trainable, weights, optimizer_state_bytes)


# ---- adapter-only model state ------------------------------------------------------------------
def saved_tensors(model: Any) -> list[tuple[str, Any]]:
    """(state-dict name, tensor) of what a checkpoint keeps of a model: every trainable parameter
    (under each name it has: tied weights appear twice in a state dict) and every persistent
    buffer (a buffer may change in training, e.g. norm statistics; they are small). Frozen
    parameters, and what a quantized base adds to the state dict, are left out."""
    kept = [
        (name, param)
        for name, param in model.named_parameters(remove_duplicate=False)
        if param.requires_grad
    ]
    for module_name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{module_name}." if module_name else ""
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                kept.append((prefix + name, buffer))
    return kept


def saved_names(model: Any) -> set[str]:
    return {name for name, _ in saved_tensors(model)}


def _missing_tensors(model: Any, names: set[str]) -> list[str]:
    """Names of kept tensors of `model` found in `names` under none of their names (a tensor
    tied to another is saved once, under one of them)."""
    aliases: dict[int, list[str]] = {}
    for name, tensor in saved_tensors(model):
        aliases.setdefault(id(tensor), []).append(name)
    return sorted(group[0] for group in aliases.values() if not names.intersection(group))


def keep_trainable(models: list, weights: list[dict[str, Any]], output_dir: str) -> None:
    """Accelerate save_state pre-hook: drop from each state dict it is about to write what
    saved_tensors leaves out (for one process and DDP; FSDP and DeepSpeed save themselves)."""
    for model, state in zip(models, weights):
        keep = saved_names(model)
        for name in [n for n in state if n not in keep]:
            del state[name]


def load_trainable(models: list, input_dir: str) -> None:
    """Accelerate load_state pre-hook: load each model's saved tensors (weights_file(i)) with
    check_saved_names, then empty `models` so that Accelerate does not load them strictly."""
    from safetensors.torch import load_file

    for index, model in enumerate(models):
        path = Path(input_dir) / weights_file(index)
        load_checked(model, load_file(str(path)), path)
    models.clear()


def load_checked(model: Any, saved: dict[str, Any], where: Path) -> None:
    """Load `saved` into `model` when it holds every tensor a checkpoint of this model keeps and
    nothing the model lacks (older checkpoints with the whole model pass: the base is loaded too);
    otherwise one UserError naming what differs."""
    names = set(saved)
    missing = _missing_tensors(model, names)
    unknown = sorted(names - set(model.state_dict()))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} trained tensor(s) missing (e.g. {missing[0]})")
        if unknown:
            parts.append(f"{len(unknown)} tensor(s) this model does not have (e.g. {unknown[0]})")
        raise UserError(
            f"resume: {where} does not fit this run's model and adapter: {'; '.join(parts)}. "
            f"Resume with the config the checkpoint was saved with, or start a new run"
        )
    model.load_state_dict(saved, strict=False)


def weights_file(index: int) -> str:
    """Accelerate's file name for the index-th prepared model's state."""
    return WEIGHTS_FILE if index == 0 else WEIGHTS_FILE.replace(".", f"_{index}.")


def _deepspeed_load(src: dict[str, Any], dst: Any) -> None:
    """DeepSpeed's custom_load_fn: its module state, checked as load_checked does."""
    load_checked(dst, src, Path("the DeepSpeed checkpoint"))


def use_adapter_only_checkpoints(accelerator: Any) -> None:
    """Register the hooks that keep the frozen base out of save_state (call once, after
    accelerator.prepare)."""
    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def _is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def load_checkpoint_state(accelerator: Any, checkpoint: Path) -> None:
    """accelerator.load_state of an ft checkpoint (DeepSpeed: its trainable-only module state)."""
    if _is_deepspeed(accelerator):
        accelerator.load_state(
            str(checkpoint), load_module_strict=False, custom_load_fn=_deepspeed_load
        )
    else:
        accelerator.load_state(str(checkpoint))


# ---- the base a checkpoint was trained on ------------------------------------------------------
def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file: every tensor's name, dtype, shape and offsets."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return handle.read(min(size, 100 << 20))  # the format caps headers at 100 MB


def _content_digest(path: Path) -> str:
    """sha256 of a file, or of SAMPLE_BLOCKS evenly spaced blocks of it when it is large."""
    size = path.stat().st_size
    if size <= HASH_WHOLE_BYTES:
        return _sha256(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in range(SAMPLE_BLOCKS):
            handle.seek(block * (size - SAMPLE_BYTES) // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(SAMPLE_BYTES))
    return "sampled:" + digest.hexdigest()


def base_fingerprint(checkpoint: str, revision: str | None = None) -> dict[str, Any]:
    """What identifies the frozen base weights of model.checkpoint, cheaply: for each safetensors
    file its size, its header's sha256 (tensor names, dtypes, shapes) and a content digest (whole
    below HASH_WHOLE_BYTES, sampled above), and the sha256 of config.json and of the shard index.
    A hub id is read from its local snapshot (it was just loaded); without one, its id and
    revision stand for it."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(checkpoint, revision=revision, local_files_only=True))
        except Exception:  # not in the local cache in a form the hub client finds
            return {"hub_id": checkpoint, "revision": revision}
    files: dict[str, Any] = {}
    for path in sorted(folder.glob("*.safetensors")):
        files[path.name] = {
            "bytes": path.stat().st_size,
            "header_sha256": hashlib.sha256(_safetensors_header(path)).hexdigest(),
            "content": _content_digest(path),
        }
    for name in ("config.json", "model.safetensors.index.json"):
        if (folder / name).is_file():
            files[name] = {"sha256": _sha256(folder / name)}
    return {"files": files}


def base_problem(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between the base a checkpoint recorded and this run's, or None."""
    if recorded == current:
        return None
    before, after = recorded.get("files"), current.get("files")
    if before is None or after is None:
        return f"it was recorded as {recorded}, this run's is {current}"
    for name in sorted(set(before) | set(after)):
        if name not in after:
            return f"{name} is gone"
        if name not in before:
            return f"{name} is new"
        for key, value in before[name].items():
            if after[name].get(key) != value:
                what = {"header_sha256": "tensor names, dtypes or shapes"}.get(key, key)
                return f"{name} changed ({what} differ)"
    return "the files differ"


def check_base(checkpoint: Path, current: dict[str, Any], model_checkpoint: str) -> None:
    """Refuse to resume onto another base than the checkpoint's (its weights are the trained
    part only). Checkpoints without BASE_FILE (older ft) hold the whole model: nothing to check."""
    path = checkpoint / BASE_FILE
    if not path.is_file():
        return
    problem = base_problem(json.loads(path.read_text()), current)
    if problem:
        raise UserError(
            f"resume: model.checkpoint={model_checkpoint} is not the base {checkpoint.name} was "
            f"trained on ({problem}); the checkpoint holds only the trained weights. Restore "
            f"that base, or start a new run"
        )


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS_DIR


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives once it is complete."""
    return checkpoints_dir(run_dir) / f"{PREFIX}{step:08d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and (p / COMPLETE_MARKER).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    complete = complete_checkpoints(run_dir)
    return complete[-1] if complete else None


def _fsync_tree(path: Path) -> None:
    for item in sorted(path.rglob("*")):
        if item.is_file():
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU, CUDA) as JSON-safe lists."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):  # 1 MiB at a time
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: Path, step: int) -> dict[str, Any]:
    """What COMPLETE records: the step and every file's size (bytes) and sha256."""
    files = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    return {"step": step, "files": files}


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a complete checkpoint cannot be used (a file missing, cut short or changed since it was
    saved), or None when its files match what COMPLETE recorded. Checkpoints of older ft
    versions recorded only the step: nothing to verify."""
    marker = checkpoint / COMPLETE_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):  # cut short: the disk filled, or the run died, as it was written
        return f"{marker} is unreadable (cut short while it was written)"
    if not isinstance(recorded, dict):
        return None
    for name, expected in recorded.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{path} has {size} bytes, {expected['bytes']} when it was saved"
        if _sha256(path) != expected["sha256"]:
            return f"{path} changed since it was saved (sha256 differs)"
    return None


def save_checkpoint(
    accelerator: Any,
    run_dir: Path,
    step: int,
    trainer_state: dict[str, Any],
    keep_last: int,
    config_yaml: str,
    base: dict[str, Any] | None = None,
) -> Path:
    """Save atomically on every rank; return the final path. On failure (e.g. disk full) the
    partial directory is removed, earlier checkpoints are untouched, and the error propagates.
    `base`: the frozen base's fingerprint (base_fingerprint), recorded beside the weights."""
    folder = checkpoints_dir(run_dir)
    final = checkpoint_path(run_dir, step)
    tmp = folder / f".tmp-{final.name}"
    try:
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        # DeepSpeed writes its own files: its option keeps frozen parameters out of them.
        deepspeed = {"exclude_frozen_parameters": True} if _is_deepspeed(accelerator) else {}
        accelerator.save_state(str(tmp), safe_serialization=True, **deepspeed)
        rank = accelerator.process_index
        (tmp / f"rng_rank{rank}.json").write_text(json.dumps(rng_state()))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
            (tmp / CONFIG_FILE).write_text(config_yaml)  # the config this state was made with
            if base is not None:
                (tmp / BASE_FILE).write_text(json.dumps(base, indent=1))
            _fsync_tree(tmp)
            recorded = manifest(tmp, step)
            if final.exists():  # a re-save of the same step (after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_atomically(final / COMPLETE_MARKER, json.dumps(recorded, indent=1))
            _fsync_tree(final)
            _rotate(run_dir, keep_last)
        accelerator.wait_for_everyone()
    except BaseException:
        if accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if final.exists() and not (final / COMPLETE_MARKER).is_file():  # renamed, unmarked
                shutil.rmtree(final, ignore_errors=True)
        raise
    return final


def _write_atomically(path: Path, text: str) -> None:
    """Write a file whole or not at all (a disk that fills leaves only the hidden temp file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rotate(run_dir: Path, keep_last: int) -> None:
    """Delete old complete checkpoints beyond keep_last (never the newest) and stale temps."""
    complete = complete_checkpoints(run_dir)
    for old in complete[: -max(keep_last, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoints_dir(run_dir).glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path:
    """resume=auto -> newest complete checkpoint of run_dir; resume=PATH -> that checkpoint,
    which must be a complete ft checkpoint (pickled RNG files are only read from those)."""
    if resume == "auto":
        return newest_usable_checkpoint(run_dir, "resume=auto")
    path = Path(resume).expanduser().resolve()
    if path.is_dir() and path.name == CHECKPOINTS_DIR and complete_checkpoints(path.parent):
        return newest_usable_checkpoint(path.parent, f"resume={resume}")
    if not (path / COMPLETE_MARKER).is_file() or not (path / STATE_FILE).is_file():
        raise UserError(
            f"resume='{resume}': not a complete ft checkpoint (no {COMPLETE_MARKER} "
            f"marker). Use resume=auto or a checkpoint-* directory of an earlier run"
        )
    problem = checkpoint_problem(path)
    if problem:
        raise UserError(
            f"resume='{resume}': corrupt checkpoint: {problem}. Resume from an "
            f"earlier checkpoint-* directory, or use resume=auto"
        )
    return path


def newest_usable_checkpoint(run_dir: Path, setting: str) -> Path:
    """The newest complete checkpoint whose files match COMPLETE's record. Newer ones that are
    incomplete (no COMPLETE: the run stopped while saving) or corrupt are passed over with a
    warning naming them; when none is usable, the error names the newest bad file."""
    folder = checkpoints_dir(run_dir)
    complete = complete_checkpoints(run_dir)
    if not complete:
        raise UserError(
            f"{setting}: no complete checkpoint in {folder}. "
            f"Set train.save_every to write checkpoints, or drop resume"
        )
    unfinished = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and p.name.startswith(PREFIX)
        and not (p / COMPLETE_MARKER).is_file()
        and int(p.name[len(PREFIX) :]) > int(complete[-1].name[len(PREFIX) :])
    ]
    for path in sorted(unfinished):
        log.warning(
            "%s has no %s marker (the run stopped while saving it): not used", path, COMPLETE_MARKER
        )
    first_problem = None
    for path in reversed(complete):
        problem = checkpoint_problem(path)
        if problem is None:
            if first_problem:
                log.warning("falling back to %s", path.name)
            return path
        log.warning("corrupt checkpoint %s: %s", path.name, problem)
        first_problem = first_problem or problem
    raise UserError(
        f"{setting}: no usable checkpoint in {folder}: {first_problem}. Start a new "
        f"run, or restore the file"
    )


def run_dir_of_checkpoint(checkpoint: Path) -> Path:
    return checkpoint.parent.parent


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def checkpoint_config(checkpoint: Path) -> Path:
    """The resolved config a checkpoint's state was made with."""
    return checkpoint / CONFIG_FILE
