"""Use a finished run: `ft eval` (one or several adapters on one base), `ft predict`, `ft merge`.
Adapters are loaded with plain PeftModel.from_pretrained, exactly as a user outside ft would."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from framework.config.schema import load_saved_run
from framework.core.errors import UserError
from framework.store.run_dir import ADAPTER_DIR, MERGED_DIR, TASK_FILE


def adapter_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / ADAPTER_DIR
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{run_dir}: no trained adapter in {path} (did the run finish?)")
    return path


def load_task(run_dir: Path) -> tuple[Any, Any, Any]:
    """(run config, task with its saved label maps, tokenizer) of a finished run."""
    from transformers import AutoTokenizer

    run = load_saved_run(run_dir)
    adapter = adapter_dir(run_dir)
    family = run.plugins.family
    tokenizer = family.prepare_tokenizer(AutoTokenizer.from_pretrained(adapter))
    task = run.plugins.task_class(run.task, run.data, tokenizer, family)
    extras = adapter / TASK_FILE
    if extras.is_file():
        task.restore_artifacts(json.loads(extras.read_text()))
    return run, task, tokenizer


def load_base(run: Any, task: Any) -> Any:
    from framework.models.loading import load_model, resolve_checkpoint

    return load_model(
        run.plugins.family,
        run.model,
        resolve_checkpoint(run.plugins.family, run.model),
        task.auto_model,
        task.model_kwargs(),
    )


def load_trained(run_dir: Path) -> tuple[Any, Any, Any]:
    """(run config, task, PeftModel in eval mode) rebuilt from a run directory."""
    from peft import PeftModel

    from framework.peft.base import after_load

    run, task, _ = load_task(run_dir)
    model = PeftModel.from_pretrained(load_base(run, task), str(adapter_dir(run_dir)))
    after_load(model)
    model.eval()
    return run, task, model


def _base_key(run: Any) -> str:
    return json.dumps({"model": run.raw.get("model"), "task": run.raw.get("task")}, sort_keys=True)


def evaluate_runs(run_dirs: list[Path], split: str) -> dict[str, dict[str, float]]:
    """Evaluate each run's adapter on `split` of its data. Runs that share a base model and task
    load the base once and switch adapters on it (PeftModel.load_adapter / set_adapter)."""
    from accelerate import Accelerator
    from peft import PeftModel
    from torch.utils.data import DataLoader

    from framework.data.loading import load_raw_splits
    from framework.peft.base import after_load

    accelerator = Accelerator(cpu=True)
    results: dict[str, dict[str, float]] = {}
    model = None
    loaded_key = None
    for index, run_dir in enumerate(run_dirs):
        run, task, _ = load_task(run_dir)
        raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
        if split not in raw.splits:
            raise UserError(f"--split {split}: {run_dir} has splits {sorted(raw.splits)}")
        subset = {split: raw.splits[split]}
        task.check_columns(subset, raw.describe)
        task.fit_labels({"train": raw.splits["train"], **subset}, raw.describe)
        tokenized = task.tokenize(subset)
        name = f"run{index}"
        if model is None or _base_key(run) != loaded_key:
            model = PeftModel.from_pretrained(
                load_base(run, task), str(adapter_dir(run_dir)), adapter_name=name
            )
            loaded_key = _base_key(run)
        else:
            model.load_adapter(str(adapter_dir(run_dir)), adapter_name=name)
        model.set_adapter(name)
        after_load(model)
        model.eval()
        loader = DataLoader(
            tokenized[split],
            batch_size=run.train.eval_batch_size or run.train.batch_size,
            collate_fn=task.collate,
        )
        results[str(run_dir)] = task.evaluate(model, loader, accelerator, raw=raw.splits[split])
    return results


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"--input {path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"--input {path}:{number}: not valid JSON ({error.msg})") from None
    if not rows:
        raise UserError(f"--input {path}: no rows")
    return rows


def predict_file(run_dir: Path, input_path: Path, output_path: Path | None) -> int:
    """Write one JSON prediction per input row (the row plus the task's outputs) to output_path,
    or stdout; return the number of rows."""
    run, task, model = load_trained(run_dir)
    rows = read_jsonl(input_path)
    needed = [task.column(role) for role, required in task.predict_roles().items() if required]
    for number, row in enumerate(rows, 1):
        missing = [c for c in needed if c not in row]
        if missing:
            raise UserError(
                f"--input {input_path}:{number}: missing column(s) {missing}; rows need {needed}"
            )
    out = output_path.open("w") if output_path else sys.stdout
    try:
        batch_size = run.train.eval_batch_size or run.train.batch_size
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            for row, prediction in zip(chunk, task.predict(model, chunk, model.device)):
                out.write(json.dumps({**row, **prediction}) + "\n")
    finally:
        if output_path:
            out.close()
    return len(rows)


def merge_adapter(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Merge run_dir's adapter into the full-precision base (peft's merge_and_unload) and write
    the model, tokenizer and ft's label maps to output_dir (default RUN_DIR/merged). Return it.

    Methods that cannot merge (prompt learning, adaption prompt) raise a UserError that says so.
    A QLoRA adapter is merged into the unquantized base, so the merged model is full precision."""
    run_dir = Path(run_dir)
    output = Path(output_dir) if output_dir is not None else run_dir / MERGED_DIR
    if output.exists() and any(output.iterdir()):
        raise UserError(
            f"ft merge --output {output}: the directory exists and is not empty; "
            f"remove it or give another --output"
        )
    run = load_saved_run(run_dir)
    method = run.plugins.method
    if not method.can_merge:
        raise UserError(
            f"ft merge {run_dir}: peft={run.peft.name} cannot be merged into the "
            f"weights (it adds virtual tokens or gated prompts, not a weight update). "
            f"Use the adapter as it is: PeftModel.from_pretrained(base, "
            f"'{run_dir / ADAPTER_DIR}')"
        )
    _, task, model = load_trained(run_dir)
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
