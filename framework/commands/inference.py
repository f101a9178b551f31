"""Use a finished run: `ft eval` (one or several adapters on one base), `ft predict`, `ft merge`.
Adapters are loaded with plain PeftModel.from_pretrained, exactly as a user outside ft would.

`ft eval` and `ft predict` run on the GPU when there is one (under the mixed precision the run
trained with, when it trained on a GPU), else on CPU; `--hardware PRESET` picks the device and
precision instead (a GPU preset on a machine without one is refused). `ft merge` stays on CPU:
it writes the full-precision model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from framework.config.recipe import group_presets, preset_file
from framework.config.schema import SavedConfig, build_run_config, load_saved_run
from framework.core.errors import UserError
from framework.store.run_dir import ADAPTER_DIR, CONFIG_FILE, MERGED_DIR, TASK_FILE


class Placement(NamedTuple):
    """Where ft eval / predict run a model."""

    device: str  # "cuda" or "cpu"
    precision: str  # Accelerate's mixed_precision: "no", "bf16" or "fp16"
    load_kwargs: dict[str, Any]  # from_pretrained placement (device_map profiles), else {}


ON_CPU = Placement("cpu", "no", {})


def choose_placement(run: Any, hardware_given: bool, cuda_available: bool) -> Placement:
    """The device and precision of ft eval / predict for `run` (its hardware being the one given
    with --hardware, when hardware_given). Without --hardware: the GPU when there is one, under
    the run's own mixed precision if it trained on a GPU (fp32 otherwise), else CPU. With it: the
    preset's device and precision; a GPU preset without a GPU is a UserError."""
    profile, params = run.plugins.profile, run.hardware
    on_gpu = profile.on_gpu(params)
    if hardware_given and not on_gpu:
        return ON_CPU
    if not cuda_available:
        if hardware_given:
            raise UserError(
                f"--hardware {params.name}: this machine has no CUDA GPU; use --hardware cpu, "
                f"or leave --hardware out to use the GPU where there is one"
            )
        return ON_CPU
    precision = profile.mixed_precision(params) if on_gpu else "no"
    return Placement("cuda", precision, profile.load_kwargs(params) if on_gpu else {})


def with_hardware(run: Any, run_dir: Path, preset: str) -> Any:
    """The run as it was saved, with its hardware group replaced by a shipped preset (validated
    against the rest of the run, as `ft train hardware=PRESET` would be)."""
    if preset not in group_presets("hardware"):
        raise UserError(
            f"--hardware {preset}: no such hardware preset; choose one of "
            f"{', '.join(group_presets('hardware'))}"
        )
    node = {**run.raw, "hardware": yaml.safe_load(preset_file("hardware", preset).read_text())}
    return build_run_config(node, SavedConfig(Path(run_dir) / CONFIG_FILE))


def placement_for(run: Any, run_dir: Path, hardware: str | None) -> tuple[Any, Placement]:
    """(the run with --hardware applied, where to run it) for ft eval / predict."""
    from framework.hardware.base import cuda_device_count

    if hardware is not None:
        run = with_hardware(run, run_dir, hardware)
    return run, choose_placement(run, hardware is not None, cuda_device_count() > 0)


def describe(placement: Placement) -> str:
    """'on cuda, mixed precision bf16' (one stderr line: where ft eval / predict run)."""
    return f"on {placement.device}, mixed precision {placement.precision}"


def on_accelerator_device(placement: Placement, accelerator: Any) -> Placement:
    """The placement on the device the process's Accelerate state already chose: a process that
    trained on CPU before (in-process, as tests do) keeps Accelerate on CPU, and the tasks
    evaluate on accelerator.device; a fresh `ft eval` process always gets the placement's."""
    if accelerator.device.type == placement.device:
        return placement
    return ON_CPU if accelerator.device.type == "cpu" else placement._replace(device="cuda")


def place(model: Any, placement: Placement) -> Any:
    """Move a loaded model to the placement's device (one placed by a device_map stays put)."""
    if getattr(model, "hf_device_map", None) is None:
        model.to(placement.device)
    return model


@contextlib.contextmanager
def autocast(placement: Placement) -> Iterator[None]:
    """The placement's mixed precision around a forward pass (nothing in fp32)."""
    if placement.precision not in ("bf16", "fp16"):
        yield
        return
    import torch

    dtype = torch.bfloat16 if placement.precision == "bf16" else torch.float16
    with torch.autocast(placement.device, dtype=dtype):
        yield


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


def load_base(run: Any, task: Any, placement: Placement = ON_CPU) -> Any:
    from framework.models.loading import load_model, resolve_checkpoint

    return load_model(
        run.plugins.family,
        run.model,
        resolve_checkpoint(run.plugins.family, run.model),
        task.auto_model,
        task.model_kwargs(),
        placement.load_kwargs,
    )


def load_trained(run_dir: Path) -> tuple[Any, Any, Any]:
    """(run config, task, PeftModel in eval mode) rebuilt from a run directory, on CPU."""
    run, task, _ = load_task(run_dir)
    return run, task, trained_model(run, task, run_dir, ON_CPU)


def trained_model(run: Any, task: Any, run_dir: Path, placement: Placement) -> Any:
    """The run's base with its adapter (PeftModel, eval mode) at `placement`."""
    from peft import PeftModel

    from framework.peft.base import after_load

    model = PeftModel.from_pretrained(load_base(run, task, placement), str(adapter_dir(run_dir)))
    after_load(model)
    return place(model, placement).eval()


def _base_key(run: Any) -> str:
    return json.dumps({"model": run.raw.get("model"), "task": run.raw.get("task")}, sort_keys=True)


def evaluate_runs(
    run_dirs: list[Path], split: str, hardware: str | None = None
) -> dict[str, dict[str, float]]:
    """Evaluate each run's adapter on `split` of its data, on the GPU when there is one (or as
    --hardware says: placement_for). Runs that share a base model and task load the base once
    and switch adapters on it (PeftModel.load_adapter / set_adapter)."""
    import torch
    from accelerate import Accelerator
    from accelerate.data_loader import prepare_data_loader
    from peft import PeftModel
    from torch.utils.data import DataLoader

    from framework.data.loading import load_raw_splits
    from framework.peft.base import after_load

    results: dict[str, dict[str, float]] = {}
    model, loaded_key, accelerator = None, None, None
    for index, run_dir in enumerate(run_dirs):
        run, task, _ = load_task(run_dir)
        run, placement = placement_for(run, run_dir, hardware)
        # One per process (Accelerate's state is shared); the tasks put tensors on its device.
        accelerator = accelerator or Accelerator(cpu=placement.device == "cpu")
        placement = on_accelerator_device(placement, accelerator)
        print(f"ft eval {run_dir}: {describe(placement)}", file=sys.stderr)
        raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
        if split not in raw.splits:
            raise UserError(f"--split {split}: {run_dir} has splits {sorted(raw.splits)}")
        subset = {split: raw.splits[split]}
        task.check_columns(subset, raw.describe)
        task.fit_labels({"train": raw.splits["train"], **subset}, raw.describe)
        tokenized = task.tokenize(subset)
        name = f"run{index}"
        if model is None or (_base_key(run), placement) != loaded_key:
            model = PeftModel.from_pretrained(
                load_base(run, task, placement), str(adapter_dir(run_dir)), adapter_name=name
            )
            loaded_key = (_base_key(run), placement)
        else:
            model.load_adapter(str(adapter_dir(run_dir)), adapter_name=name)
        model.set_adapter(name)
        after_load(model)
        place(model, placement).eval()  # a newly loaded adapter goes to the device too
        loader = DataLoader(
            tokenized[split],
            batch_size=run.train.eval_batch_size or run.train.batch_size,
            collate_fn=task.collate,
        )
        on_device = prepare_data_loader(
            loader, torch.device(placement.device), 1, 0, put_on_device=True
        )
        with autocast(placement):
            results[str(run_dir)] = task.evaluate(
                model, on_device, accelerator, raw=raw.splits[split]
            )
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


def predict_file(
    run_dir: Path, input_path: Path, output_path: Path | None, hardware: str | None = None
) -> int:
    """Write one JSON prediction per input row (the row plus the task's outputs) to output_path,
    or stdout; return the number of rows. Runs where placement_for says (the GPU if any)."""
    run, task, _ = load_task(run_dir)
    run, placement = placement_for(run, run_dir, hardware)
    print(f"ft predict {run_dir}: {describe(placement)}", file=sys.stderr)
    model = trained_model(run, task, run_dir, placement)
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
            with autocast(placement):
                predictions = task.predict(model, chunk, model.device)
            for row, prediction in zip(chunk, predictions):
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
    _, task, model = load_trained(run_dir)  # on CPU: the merged model is full precision
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
