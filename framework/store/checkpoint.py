"""Atomic checkpoints: everything needed to continue a run exactly (adapter, optimizer, scheduler,
grad scaler and RNG states through Accelerate's save_state; the step and data position; the
resolved config), written to a temporary directory, fsynced, renamed, and marked complete last."""

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
PREFIX = "checkpoint-"

log = logging.getLogger("ft")


def checkpoint_bytes(model: Any) -> int:
    """Disk per checkpoint, as Accelerate's save_state writes it: the whole model state (frozen
    base weights and buffers too, in their own dtypes), Adam's two fp32 moments (4 bytes each)
    per trainable weight, plus 1 MiB for RNG states, scheduler, config and the COMPLETE record."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights + trainable * 4 * 2 + (1 << 20)


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
) -> Path:
    """Save atomically on every rank; return the final path. On failure (e.g. disk full) the
    partial directory is removed, earlier checkpoints are untouched, and the error propagates."""
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
        accelerator.save_state(str(tmp), safe_serialization=True)
        rank = accelerator.process_index
        (tmp / f"rng_rank{rank}.json").write_text(json.dumps(rng_state()))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
            (tmp / CONFIG_FILE).write_text(config_yaml)  # the config this state was made with
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
