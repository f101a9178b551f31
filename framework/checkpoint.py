"""Atomic checkpoints: everything needed to continue a run exactly (adapter, optimizer, scheduler,
grad scaler and RNG states through Accelerate's save_state; the step and data position; the
resolved config), written to a temporary directory, fsynced, renamed, and marked complete last."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from framework.errors import UserError
from framework.run_dir import CHECKPOINTS_DIR, CONFIG_FILE

COMPLETE_MARKER = "COMPLETE"  # written last; a checkpoint without it is never used
STATE_FILE = "trainer_state.json"
PREFIX = "checkpoint-"


def checkpoint_bytes(model: Any) -> int:
    """Disk per checkpoint: trainable weights + Adam's two moments, fp32 (4 bytes each), plus
    1 MiB of metadata."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable * 4 * 3 + (1 << 20)


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS_DIR


def complete_checkpoints(run_dir: Path) -> List[Path]:
    """Complete checkpoints, oldest first (by step)."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
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


def rng_state() -> Dict[str, Any]:
    """This process's RNG states (Python, NumPy, torch CPU, CUDA) as JSON-safe lists."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(accelerator: Any, run_dir: Path, step: int, trainer_state: Dict[str, Any],
                    keep_last: int, config_yaml: str) -> Path:
    """Save atomically on every rank; return the final path. On failure (e.g. disk full) the
    partial directory is removed, earlier checkpoints are untouched, and the error propagates."""
    folder = checkpoints_dir(run_dir)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}"
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
            if final.exists():  # a re-save of the same step (after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            (final / COMPLETE_MARKER).write_text(str(step))
            _fsync_tree(final)
            _rotate(run_dir, keep_last)
        accelerator.wait_for_everyone()
    except BaseException:
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _rotate(run_dir: Path, keep_last: int) -> None:
    """Delete old complete checkpoints beyond keep_last (never the newest) and stale temps."""
    complete = complete_checkpoints(run_dir)
    for old in complete[:-max(keep_last, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in checkpoints_dir(run_dir).glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path:
    """resume=auto -> newest complete checkpoint of run_dir; resume=PATH -> that checkpoint,
    which must be a complete ft checkpoint (pickled RNG files are only read from those)."""
    if resume == "auto":
        found = latest_checkpoint(run_dir)
        if found is None:
            raise UserError(f"resume=auto: no complete checkpoint in {checkpoints_dir(run_dir)}. "
                            f"Set train.save_every to write checkpoints, or drop resume")
        return found
    path = Path(resume).expanduser().resolve()
    if path.is_dir() and path.name == CHECKPOINTS_DIR:
        found = latest_checkpoint(path.parent)
        if found:
            return found
    if not (path / COMPLETE_MARKER).is_file() or not (path / STATE_FILE).is_file():
        raise UserError(f"resume='{resume}': not a complete ft checkpoint (no {COMPLETE_MARKER} "
                        f"marker). Use resume=auto or a checkpoint-* directory of an earlier run")
    return path


def run_dir_of_checkpoint(checkpoint: Path) -> Path:
    return checkpoint.parent.parent


def read_trainer_state(checkpoint: Path) -> Dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def checkpoint_config(checkpoint: Path) -> Path:
    """The resolved config a checkpoint's state was made with."""
    return checkpoint / CONFIG_FILE
