"""`ft merge RUN_DIR`: fold a trained adapter into its base model and save a plain transformers
checkpoint (safetensors) that loads with AutoModelFor*.from_pretrained and no peft at all."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Union

from framework.errors import UserError
from framework.registry import PEFT_METHODS

MERGED_DIR = "merged"


def merge_adapter(run_dir: Union[str, Path], output_dir: Optional[Union[str, Path]] = None) -> Path:
    """Merge run_dir's adapter into the full-precision base (peft's merge_and_unload) and write
    the model, tokenizer and ft's label maps to output_dir (default RUN_DIR/merged). Return it.

    Methods that cannot merge (prompt learning, adaption prompt) raise a UserError that says so.
    A QLoRA adapter is merged into the unquantized base, so the merged model is full precision."""
    from framework.cli import load_run_from_dir
    from framework.inference import load_trained
    from framework.peft.base import after_load
    from framework.registry import load_all

    load_all()
    run_dir = Path(run_dir)
    output = Path(output_dir) if output_dir is not None else run_dir / MERGED_DIR
    if output.exists() and any(output.iterdir()):
        raise UserError(f"ft merge --output {output}: the directory exists and is not empty; "
                        f"remove it or give another --output")
    run = load_run_from_dir(run_dir)
    method = PEFT_METHODS.get(run.peft.name, key="peft.name")
    if not method.can_merge:
        raise UserError(f"ft merge {run_dir}: peft={run.peft.name} cannot be merged into the "
                        f"weights (it adds virtual tokens or gated prompts, not a weight update). "
                        f"Use the adapter as it is: PeftModel.from_pretrained(base, "
                        f"'{run_dir / 'adapter'}')")
    _, task, model = load_trained(run_dir)
    after_load(model)
    merged = model.merge_and_unload()
    tmp = output.with_name(f".{output.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    task.tokenizer.save_pretrained(str(tmp))
    task.save_artifacts(tmp)
    if output.exists():
        output.rmdir()  # empty, checked above
    tmp.rename(output)  # a half-written merge is never left under the final name
    return output
