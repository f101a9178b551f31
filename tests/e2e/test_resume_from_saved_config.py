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


def test_checkpoint_size_estimate_matches_the_files(reference):
    """The disk check's estimate (checkpoint_bytes) against a real checkpoint of the same model:
    the checkpoint holds the whole model (not only the adapter), and the estimate covers it."""
    from framework.store.checkpoint import checkpoint_bytes

    checkpoint = reference / "checkpoints" / "checkpoint-00000003"
    whole = load_file(str(checkpoint / "model.safetensors"))
    trainable = set(adapter(reference))  # the adapter + the new head: what the optimizer updates
    assert len(whole) > len(trainable), "the checkpoint holds the base weights too"

    for name, tensor in whole.items():  # trainable: its name in the adapter (peft's suffixes off)
        plain = name.replace(".modules_to_save.default.", ".").replace(".default.", ".")
        tensor.requires_grad_(plain in trainable)
    assert sum(t.numel() for t in whole.values() if t.requires_grad) == sum(
        t.numel() for t in adapter(reference).values()
    )

    class Model:  # the parameters of the checkpointed model, with their trainable flags
        def parameters(self):
            return iter(whole.values())

        def buffers(self):
            return iter(())

    actual = sum(p.stat().st_size for p in checkpoint.iterdir())
    estimate = checkpoint_bytes(Model())
    assert actual <= estimate <= actual + (1 << 20), (actual, estimate)
    # Without the 1 MiB of metadata, the estimate is the weights and optimizer files (pickle
    # framing of optimizer.bin aside), not just the adapter's share.
    big = sum((checkpoint / f).stat().st_size for f in ("model.safetensors", "optimizer.bin"))
    assert estimate - (1 << 20) >= 0.9 * big, (estimate, big)


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
