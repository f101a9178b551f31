"""Resuming from a run's own saved config: a cold tiny-model cache trains like a warm one, `resume=auto`
alone continues the run bit-identically, a corrupt newest checkpoint is passed over with a
warning, trajectory changes are refused unless allowed, the printed resume hint reproduces the
run, and the checkpoint size estimate matches the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import TOY_CLS_RECIPE, toy_cls_overrides, train_recipe


def adapter(run_dir: Path):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path):
    ta, tb = adapter(a), adapter(b)
    assert ta.keys() == tb.keys()
    differing = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)}/{len(ta)} adapter tensors differ: {differing[:3]}"


# ---- reproducibility ------------------------------------------------------------------------
def test_cold_cache_run_equals_warm_cache_run(toy_files, tmp_path, monkeypatch, one_torch_thread):
    """The first run on a machine builds the tiny model (drawing random numbers); it must train
    exactly like every later run that finds the model cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    cold = train_recipe(
        TOY_CLS_RECIPE, *toy_cls_overrides(toy_files, "train.max_steps=2"), output_root=tmp_path
    )
    assert list((tmp_path / "empty-cache" / "ft" / "tiny").iterdir()), "the cache was not cold"
    warm = train_recipe(
        TOY_CLS_RECIPE, *toy_cls_overrides(toy_files, "train.max_steps=2"), output_root=tmp_path
    )
    assert_same_adapter(cold, warm)


# ---- resume from the run's own config; corrupt checkpoints ----------------------------------
@pytest.fixture(scope="module")
def reference(toy_files, tmp_path_factory, one_torch_thread):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6, started with overrides a
    resume will not repeat (other data, steps, lr, dropout)."""
    from framework.cli.app import main

    run_dir = tmp_path_factory.mktemp("holes") / "reference"
    assert (
        main(
            [
                "train",
                TOY_CLS_RECIPE,
                *toy_cls_overrides(
                    toy_files,
                    "train.max_steps=6",
                    "train.save_every=3",
                    "train.keep_last=5",
                    f"run_dir={run_dir}",
                ),
            ]
        )
        == 0
    )
    return run_dir


def interrupted_copy(reference: Path, target: Path) -> Path:
    """The reference run as if it had stopped after its last checkpoint: no adapter, no summary."""
    import shutil

    shutil.copytree(reference, target)
    shutil.rmtree(target / "adapter")
    (target / "summary.json").unlink()
    return target


def test_resume_without_overrides_reproduces_the_run(reference, tmp_path, capsys):
    """`resume=auto run_dir=...` alone continues the run with its own saved config (not the
    recipe's defaults) and ends bit-identical to the uninterrupted run. The newest checkpoint
    lost its COMPLETE marker (killed while saving): the fallback says so."""
    from framework.cli.app import main

    run_dir = interrupted_copy(reference, tmp_path / "run")
    (run_dir / "checkpoints" / "checkpoint-00000006" / "COMPLETE").unlink()
    assert main(["train", TOY_CLS_RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint-00000006 has no COMPLETE marker" in err, err
    assert "resumed from" in err and "checkpoint-00000003 at step 3" in err, err
    assert_same_adapter(reference, run_dir)
    resumed = yaml_of(run_dir / "config.resume-1.yaml")
    assert resumed["train"]["max_steps"] == 6 and resumed["data"]["name"] == "files"


def test_corrupt_checkpoint_falls_back_with_a_warning(reference, tmp_path, capsys):
    from framework.cli.app import main

    run_dir = interrupted_copy(reference, tmp_path / "run")
    weights = run_dir / "checkpoints" / "checkpoint-00000006" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    # A corrupt checkpoint named explicitly: one line naming the file, nothing trained.
    assert main(["train", TOY_CLS_RECIPE, f"resume={weights.parent}"]) == 2
    err = capsys.readouterr().err
    assert f"corrupt checkpoint: {weights} has" in err and "Traceback" not in err, err
    assert main(["train", TOY_CLS_RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 0
    err = capsys.readouterr().err
    assert f"corrupt checkpoint checkpoint-00000006: {weights} has" in err, err
    assert "falling back to checkpoint-00000003" in err, err
    assert_same_adapter(reference, run_dir)


def yaml_of(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_resume_refuses_trajectory_changes_unless_allowed(reference):
    from framework.config.path import load_run
    from framework.core.errors import UserError

    base = [TOY_CLS_RECIPE, ["resume=auto", f"run_dir={reference}"]]
    with pytest.raises(UserError) as refused:
        load_run(base[0], base[1] + ["train.max_steps=9", "train.lr=1e-3"])
    message = str(refused.value)
    assert "train.max_steps: 6 -> 9" in message and "train.lr: 0.003 -> 0.001" in message
    assert "resume_allow_changes=[train.lr,train.max_steps]" in message
    run = load_run(
        base[0], base[1] + ["train.max_steps=9", "resume_allow_changes=[train.max_steps]"]
    )
    assert run.train.max_steps == 9 and run.train.lr == 3e-3  # the rest is the saved run's
    run = load_run(base[0], base[1] + ["train.log_every=2"])  # not trajectory
    assert run.train.log_every == 2 and run.data.name == "files"


def test_resume_hint_is_a_command_that_reproduces_the_run(reference):
    """The hint printed on SIGTERM/SIGINT and full disks: following it literally composes exactly
    the config the run was started with."""
    import shlex

    from framework.config.path import load_run
    from framework.store.run_dir import resume_command

    hint = resume_command(reference, TOY_CLS_RECIPE)
    words = shlex.split(hint)
    assert words[:2] == ["ft", "train"] and f"run_dir={reference}" in words
    run = load_run(words[2], words[3:])
    original = yaml_of(reference / "config.yaml")
    invocation = ("resume", "run_dir", "overwrite", "dry_run", "resume_allow_changes")
    assert {k: v for k, v in run.raw.items() if k not in invocation} == {
        k: v for k, v in original.items() if k not in invocation
    }


# ---- secrets --------------------------------------------------------------------------------


def rebuilt_model(run_dir: Path):
    """The run's peft model as set_up builds it (what a resume loads the checkpoint into)."""
    from framework.config.schema import load_run_file
    from framework.training.trainer import set_up

    run = load_run_file(run_dir / "config.yaml")
    return set_up(run, run_dir).model


def test_checkpoint_holds_the_trainable_weights_and_their_optimizer_state_only(reference):
    """Adapter-only checkpoints: the tensors in model.safetensors are exactly the trainable
    parameters (LoRA factors and the new head) and their bytes sum to theirs; optimizer.bin holds
    AdamW's two fp32 moments per trainable weight; the disk check's estimate covers the files."""
    from framework.store.checkpoint import checkpoint_bytes

    checkpoint = reference / "checkpoints" / "checkpoint-00000003"
    saved = load_file(str(checkpoint / "model.safetensors"))
    model = rebuilt_model(reference)
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    frozen = {n for n, p in params.items() if not p.requires_grad}
    assert frozen and not frozen & set(saved), "a frozen base weight was saved"
    assert set(saved) == set(trainable)
    assert sum(t.numel() * t.element_size() for t in saved.values()) == sum(
        p.numel() * p.element_size() for p in trainable.values()
    )
    # The same names the exported adapter holds (peft drops its `.default` adapter name there).
    assert {
        n.replace(".modules_to_save.default.", ".").replace(".default.", ".") for n in saved
    } == (set(adapter(reference)))
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=True)  # ft's own file
    moments = [t for state in optimizer["state"].values() for k, t in state.items() if k != "step"]
    trainable_count = sum(p.numel() for p in trainable.values())
    assert sum(t.numel() for t in moments) == 2 * trainable_count
    assert all(t.dtype == torch.float32 for t in moments)

    actual = sum(p.stat().st_size for p in checkpoint.iterdir())
    estimate = checkpoint_bytes(model)
    assert actual <= estimate <= actual + (1 << 20), (actual, estimate)
    # ft estimate's disk line, from the meta-device model: the same arithmetic.
    from framework.config.schema import load_run_file
    from framework.training.memory import estimate_run

    planned = estimate_run(load_run_file(reference / "config.yaml")).checkpoint
    assert actual <= planned <= actual + (1 << 20), (actual, planned)
    # Today's format (the whole model) would have been over 10x this on the tiny model too.
    assert checkpoint_bytes(model, whole_model=True) > 10 * (estimate - (1 << 20))


def rewrite_complete(checkpoint: Path) -> None:
    """Record a checkpoint's files again in COMPLETE (after a test edited them)."""
    import json

    from framework.store.checkpoint import COMPLETE_MARKER, manifest

    step = int(checkpoint.name.split("-")[1])
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps(manifest(checkpoint, step)))


def test_a_whole_model_checkpoint_of_an_earlier_ft_still_resumes(reference, tmp_path):
    """Checkpoints written before adapter-only ones hold every weight and no base fingerprint:
    resuming one loads all of it and ends bit-identical to the uninterrupted run."""
    from safetensors.torch import save_file

    from framework.cli.app import main
    from framework.store.checkpoint import BASE_FILE

    run_dir = interrupted_copy(reference, tmp_path / "run")
    shutil_rmtree(run_dir / "checkpoints" / "checkpoint-00000006")
    old = run_dir / "checkpoints" / "checkpoint-00000003"
    state = rebuilt_model(reference).state_dict()  # the step-0 base + this checkpoint's adapter
    state.update(load_file(str(old / "model.safetensors")))
    save_file({k: v.contiguous() for k, v in state.items()}, str(old / "model.safetensors"))
    (old / BASE_FILE).unlink()
    rewrite_complete(old)
    assert len(load_file(str(old / "model.safetensors"))) > 26
    assert main(["train", TOY_CLS_RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 0
    assert_same_adapter(reference, run_dir)


def test_resume_onto_another_base_is_refused_in_one_line(reference, tmp_path, capsys):
    """The checkpoint records the base's fingerprint; a resume whose model.checkpoint files differ
    (here: the record says another header) stops with one line before loading anything, writing
    nothing."""
    import json

    from framework.cli.app import main
    from framework.store.checkpoint import BASE_FILE

    run_dir = interrupted_copy(reference, tmp_path / "run")
    newest = run_dir / "checkpoints" / "checkpoint-00000006"
    record = json.loads((newest / BASE_FILE).read_text())
    name = next(n for n in record["files"] if n.endswith(".safetensors"))
    record["files"][name]["header_sha256"] = "0" * 64
    (newest / BASE_FILE).write_text(json.dumps(record))
    rewrite_complete(newest)
    before = sorted(run_dir.rglob("*"))
    assert main(["train", TOY_CLS_RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "is not the base" in x)
    assert f"{name} changed (tensor names, dtypes or shapes differ)" in line, err
    assert "start a new run" in line and "Traceback" not in err
    assert sorted(run_dir.rglob("*")) == before, "a refused resume wrote files"


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# Measured on main before adapter-only checkpoints (ft train sft_smollm2_chat_lora
# train.max_steps=1 train.save_every=1): model.safetensors 547,925,648 B + optimizer.bin
# 19,879,247 B + metadata = 567,860,955 B for checkpoint-00000001.
SMOLLM2_WHOLE_MODEL_CHECKPOINT_BYTES = 567_860_955


@pytest.mark.slow
def test_smollm2_lora_checkpoint_is_under_10_percent_of_a_whole_model_one(
    tmp_path, one_torch_thread
):
    """SmolLM2-135M + LoRA (the recipe's r=8 on all 7 projections): a checkpoint after one AdamW
    update (zero gradients: the optimizer's state exists, as after any step) against the whole-model
    checkpoint ft wrote before, measured on main and recomputed from the model."""
    from framework.config.path import load_run
    from framework.run.execute import prepare_run_dir
    from framework.store.checkpoint import checkpoint_bytes
    from framework.training.best import BestKeeper
    from framework.training.trainer import Position, save, set_up

    run = load_run(
        "sft_smollm2_chat_lora",
        [
            f"run_dir={tmp_path / 'run'}",
            "data.max_train_examples=16",
            "data.max_eval_examples=4",
            "train.packing=false",  # no packing probe: the size does not depend on it
            "task.generate_eval=false",
        ],
    )
    setup = set_up(run, prepare_run_dir(run).run_dir)
    setup.best = BestKeeper(run.train, setup.task.primary_metric, setup.task.greater_is_better)
    for param in setup.model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    setup.optimizer.step()
    path = save(setup, Position(step=1))
    size = sum(p.stat().st_size for p in path.iterdir())
    whole = checkpoint_bytes(setup.model, whole_model=True)
    # The whole-model formula is today's file size (within its 1 MiB allowance for metadata).
    assert abs(whole - SMOLLM2_WHOLE_MODEL_CHECKPOINT_BYTES) < (1 << 20)
    assert size < 0.10 * SMOLLM2_WHOLE_MODEL_CHECKPOINT_BYTES, (size, size / whole)
    assert size <= checkpoint_bytes(setup.model) <= size + (1 << 20)
    share = 100 * size / SMOLLM2_WHOLE_MODEL_CHECKPOINT_BYTES
    print(f"SmolLM2-135M + LoRA checkpoint: {size:,} B = {share:.1f}% of the whole-model one")


def test_resume_through_hydra_door_is_the_same_resume(reference, tmp_path, capsys):
    """`ft train RECIPE -m resume=auto run_dir=...` (Hydra's own command line) continues the run
    exactly as `ft train RECIPE resume=auto run_dir=...` does: the same saved config plus the
    same overrides, from the same checkpoint, to a bit-equal adapter; Hydra leaves no file
    behind (no multirun/ folder in the working directory, nothing new in the run directory
    but what the plain door writes)."""
    import os

    from framework.cli.app import main

    plain = interrupted_copy(reference, tmp_path / "plain")
    door = interrupted_copy(reference, tmp_path / "door")
    for run_dir in (plain, door):  # both continue from step 3
        import shutil

        shutil.rmtree(run_dir / "checkpoints" / "checkpoint-00000006")
    assert main(["train", TOY_CLS_RECIPE, "resume=auto", f"run_dir={plain}"]) == 0
    plain_err = capsys.readouterr().err
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["train", TOY_CLS_RECIPE, "-m", "resume=auto", f"run_dir={door}"]) == 0
    finally:
        os.chdir(cwd)
    door_err = capsys.readouterr().err
    for err in (plain_err, door_err):
        assert "checkpoint-00000003 at step 3" in err, err
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    plain_config, door_config = (yaml_of(d / "config.resume-1.yaml") for d in (plain, door))
    assert plain_config.pop("run_dir") == str(plain) and door_config.pop("run_dir") == str(door)
    assert plain_config == door_config
    assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in door.iterdir())
    assert_same_adapter(reference, plain)
    assert_same_adapter(reference, door)
