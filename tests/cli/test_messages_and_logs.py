"""Clear messages and quiet logs: a checkpoint on a random-init recipe is never ignored, a duplicate
YAML key and a key in the wrong group are named, an empty data file leaves no run directory, a
CPU run imports no DeepSpeed and logs for people, `ft validate --data` loads no model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, TOY_CLS_RECIPE, toy_cls_overrides, write_jsonl


# ---- model.checkpoint on a random-init preset -----------------------------------------------
def test_checkpoint_on_a_random_init_recipe_is_never_ignored(tmp_path, capsys):
    """tiny_bert builds a random model; model.checkpoint=... must load that checkpoint instead
    (random init off, in the saved config too), and a missing one is a clear error."""
    from framework.cli.app import main
    from framework.config.path import load_run
    from framework.models.loading import build_tiny_checkpoint

    assert (
        main(["train", TOY_CLS_RECIPE, "model.checkpoint=/nonexistent", f"output_root={tmp_path}"])
        == 2
    )
    err = capsys.readouterr().err
    assert "model.checkpoint='/nonexistent': no such directory" in err and "Traceback" not in err
    assert not (tmp_path / TOY_CLS_RECIPE).exists() or not any(
        (tmp_path / TOY_CLS_RECIPE).iterdir()
    )
    tiny = load_run(TOY_CLS_RECIPE, [])
    local = build_tiny_checkpoint(tiny.plugins.family, tiny.model.random_init)
    run = load_run(TOY_CLS_RECIPE, [f"model.checkpoint={local}"])
    assert run.model.random_init is None and run.raw["model"]["random_init"] is None


# ---- messages -------------------------------------------------------------------------------
def test_duplicate_yaml_key_names_the_key_and_line(tmp_path, capsys):
    from framework.cli.app import main

    recipe = tmp_path / "dupkey.yaml"
    recipe.write_text(
        f"defaults:\n  - {TOY_CLS_RECIPE}\n  - _self_\ntrain:\n  lr: 1.0e-3\n"
        f"  max_steps: 2\n  lr: 2.0e-3\n"
    )
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:7:" in err and "duplicate key 'lr' (first at line 5)" in err, err


def test_key_in_the_wrong_group_suggests_the_right_group(capsys):
    from framework.cli.app import main

    assert main(["validate", TOY_CLS_RECIPE, "peft.lr=1e-3"]) == 2
    assert "did you mean 'train.lr'?" in capsys.readouterr().err


def test_empty_data_file_says_empty_and_leaves_no_run_dir(toy_files, tmp_path, capsys):
    """A run that fails at setup removes the run directory it had just created."""
    from framework.cli.app import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                TOY_CLS_RECIPE,
                "data=files",
                f"+data.source.train={empty}",
                f"data.source.validation={toy_files['validation']}",
                f"run_dir={run_dir}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"data.source.train: {empty} is empty" in err, err
    assert not run_dir.exists(), "the failed run left its directory behind"


# ---- noise ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_run_imports_no_deepspeed_and_logs_for_people(toy_files, tmp_path):
    """A CPU run that checkpoints: DeepSpeed (installed) is never imported, so its "Setting
    accelerator to CPU" warning never shows, and train.log holds ft's lines, not Accelerate's
    one-line-per-saved-file INFO records."""
    run_dir = tmp_path / "run"
    script = (
        "import sys; from framework.cli.app import main; "
        "code = main(sys.argv[1:]); "
        "print('deepspeed imported:', 'deepspeed' in sys.modules); sys.exit(code)"
    )
    args = [
        "train",
        TOY_CLS_RECIPE,
        *toy_cls_overrides(
            toy_files, "train.max_steps=2", "train.save_every=1", f"run_dir={run_dir}"
        ),
    ]
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "deepspeed imported: False" in result.stdout
    assert "Setting accelerator" not in result.stderr
    assert len(list((run_dir / "checkpoints").iterdir())) >= 1
    log = (run_dir / "train.log").read_text().splitlines()
    assert not [line for line in log if " accelerate" in line], log
    assert len(log) <= 8 and any("done:" in line for line in log), log


def test_validate_data_reads_the_data_without_loading_the_model(
    toy_files, tmp_path, monkeypatch, capsys
):
    """`ft validate --data` catches what `ft train` would (here: a label only in validation),
    reports columns, labels and token lengths, and never loads model weights."""
    import framework.models.loading as loading
    from framework.cli.app import main

    def no_model(*args, **kwargs):
        raise AssertionError("ft validate --data loaded the model")

    monkeypatch.setattr(loading, "load_model", no_model)
    source = ["data=files", f"+data.source.train={toy_files['train']}", "data.max_length=8"]
    assert (
        main(
            [
                "validate",
                TOY_CLS_RECIPE,
                "--data",
                *source,
                f"data.source.validation={toy_files['validation']}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "train: 32 examples" in out and "columns text, label" in out, out
    assert "tokens per example: max 8" in out and "labels (2): neg, pos" in out, out
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "so so", "label": "meh"}])
    assert (
        main(["validate", TOY_CLS_RECIPE, *source, f"data.source.validation={odd}"]) == 0
    )  # config only
    assert (
        main(["validate", TOY_CLS_RECIPE, "--data", *source, f"data.source.validation={odd}"]) == 2
    )
    assert "label 'meh' in split 'validation'" in capsys.readouterr().err


def test_the_hydra_door_in_process_leaves_logging_as_it_was(tmp_path, monkeypatch):
    """Hydra's logging setup disables every existing logger and resets the root level; after an
    in-process `ft train -m` (a test, a notebook), ft still logs and a later run still writes its
    train.log."""
    import logging

    from framework.cli.app import main

    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("ft").disabled)
    main(["train", TOY_CLS_RECIPE, "-m", "dry_run=true", f"hydra.sweep.dir={tmp_path}/sweep"])
    assert (root.level, list(root.handlers), logging.getLogger("ft").disabled) == before
