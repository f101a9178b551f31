"""The reliability holes a new user found (issue 13): cold-cache reproducibility, resume from the
run's saved config, corrupt checkpoints, secrets in every file ft or Hydra writes, a checkpoint
that cannot be silently ignored, clear messages and quiet logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, ft_cli, train_recipe, toy_sentiment_files, write_jsonl

RECIPE = "seq_cls_tiny_bert_lora"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("holes-data")
    return toy_sentiment_files(tmp)


def data_overrides(files, *extra: str):
    return ["data=files", f"+data.source.train={files['train']}",
            f"data.source.validation={files['validation']}", "data.max_length=16",
            "train.log_every=1", "train.lr=3e-3", "peft.dropout=0.1", *extra]


def adapter(run_dir: Path):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path):
    ta, tb = adapter(a), adapter(b)
    assert ta.keys() == tb.keys()
    differing = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)}/{len(ta)} adapter tensors differ: {differing[:3]}"


# ---- reproducibility ------------------------------------------------------------------------
def test_cold_cache_run_equals_warm_cache_run(files, tmp_path, monkeypatch, one_torch_thread):
    """The first run on a machine builds the tiny model (drawing random numbers); it must train
    exactly like every later run that finds the model cached."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    cold = train_recipe(RECIPE, *data_overrides(files, "train.max_steps=2"), output_root=tmp_path)
    assert list((tmp_path / "empty-cache" / "ft" / "tiny").iterdir()), "the cache was not cold"
    warm = train_recipe(RECIPE, *data_overrides(files, "train.max_steps=2"), output_root=tmp_path)
    assert_same_adapter(cold, warm)


# ---- resume from the run's own config; corrupt checkpoints ----------------------------------
@pytest.fixture(scope="module")
def reference(files, tmp_path_factory, one_torch_thread):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6, started with overrides a
    resume will not repeat (other data, steps, lr, dropout)."""
    from framework.cli import main

    run_dir = tmp_path_factory.mktemp("holes") / "reference"
    assert main(["train", RECIPE, *data_overrides(files, "train.max_steps=6", "train.save_every=3",
                                                  "train.keep_last=5", f"run_dir={run_dir}")]) == 0
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
    from framework.cli import main

    run_dir = interrupted_copy(reference, tmp_path / "run")
    (run_dir / "checkpoints" / "checkpoint-00000006" / "COMPLETE").unlink()
    assert main(["train", RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint-00000006 has no COMPLETE marker" in err, err
    assert "resumed from" in err and "checkpoint-00000003 at step 3" in err, err
    assert_same_adapter(reference, run_dir)
    resumed = yaml_of(run_dir / "config.resume-1.yaml")
    assert resumed["train"]["max_steps"] == 6 and resumed["data"]["name"] == "files"


def test_corrupt_checkpoint_falls_back_with_a_warning(reference, tmp_path, capsys):
    from framework.cli import main

    run_dir = interrupted_copy(reference, tmp_path / "run")
    weights = run_dir / "checkpoints" / "checkpoint-00000006" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    # A corrupt checkpoint named explicitly: one line naming the file, nothing trained.
    assert main(["train", RECIPE, f"resume={weights.parent}"]) == 2
    err = capsys.readouterr().err
    assert f"corrupt checkpoint: {weights} has" in err and "Traceback" not in err, err
    assert main(["train", RECIPE, "resume=auto", f"run_dir={run_dir}"]) == 0
    err = capsys.readouterr().err
    assert f"corrupt checkpoint checkpoint-00000006: {weights} has" in err, err
    assert "falling back to checkpoint-00000003" in err, err
    assert_same_adapter(reference, run_dir)


def yaml_of(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_resume_refuses_trajectory_changes_unless_allowed(reference):
    from framework.errors import UserError
    from framework.session import compose_and_validate

    base = [RECIPE, ["resume=auto", f"run_dir={reference}"]]
    with pytest.raises(UserError) as refused:
        compose_and_validate(base[0], base[1] + ["train.max_steps=9", "train.lr=1e-3"])
    message = str(refused.value)
    assert "train.max_steps: 6 -> 9" in message and "train.lr: 0.003 -> 0.001" in message
    assert "resume_allow_changes=[train.lr,train.max_steps]" in message
    _, run = compose_and_validate(base[0], base[1] + ["train.max_steps=9",
                                                      "resume_allow_changes=[train.max_steps]"])
    assert run.train.max_steps == 9 and run.train.lr == 3e-3  # the rest is the saved run's
    _, run = compose_and_validate(base[0], base[1] + ["train.log_every=2"])  # not trajectory
    assert run.train.log_every == 2 and run.data.name == "files"


def test_resume_hint_is_a_command_that_reproduces_the_run(reference):
    """The hint printed on SIGTERM/SIGINT and full disks: following it literally composes exactly
    the config the run was started with."""
    import shlex

    from framework.run_dir import resume_command
    from framework.session import compose_and_validate

    hint = resume_command(reference, RECIPE)
    words = shlex.split(hint)
    assert words[:2] == ["ft", "train"] and f"run_dir={reference}" in words
    composed, _ = compose_and_validate(words[2], words[3:])
    original = yaml_of(reference / "config.yaml")
    invocation = ("resume", "run_dir", "overwrite", "dry_run", "resume_allow_changes")
    assert {k: v for k, v in composed.config.items() if k not in invocation} == \
        {k: v for k, v in original.items() if k not in invocation}


# ---- secrets --------------------------------------------------------------------------------
PLANTED = "hf_PLANTEDSECRET123"  # shorter than a real HF token
PLANTED_ENV = "PlantedEnvSecret789"  # nothing about it looks secret but the variable's name


def files_containing(folder: Path, *needles: str):
    return [str(p) for p in folder.rglob("*") if p.is_file()
            and any(n.encode() in p.read_bytes() for n in needles)]


def test_planted_secrets_never_reach_a_run_dir_or_ft_show(files, tmp_path, monkeypatch, capsys,
                                                          one_torch_thread):
    from framework.cli import main

    monkeypatch.setenv("HF_TOKEN", PLANTED_ENV)
    # an env secret interpolated into a key that is not secret-named (a tracker's run name)
    secret_overrides = [f"model.token={PLANTED}", "logger=wandb", "logger.wandb.mode=disabled",
                        "logger.wandb.run_name=${oc.env:HF_TOKEN}"]
    assert main(["show", RECIPE, *secret_overrides]) == 0
    shown = capsys.readouterr().out
    assert PLANTED not in shown and PLANTED_ENV not in shown and "REDACTED" in shown
    assert main(["train", RECIPE, "--cfg", "job", f"++model.token={PLANTED}"]) == 0  # Hydra's print
    shown = capsys.readouterr().out
    assert PLANTED not in shown and "token: '***REDACTED***'" in shown, shown
    run_dir = tmp_path / "run"
    assert main(["train", RECIPE, *data_overrides(files, "train.max_steps=1", f"run_dir={run_dir}",
                                                  *secret_overrides)]) == 0
    out = capsys.readouterr()
    assert (run_dir / "train.log").is_file()
    assert files_containing(run_dir, PLANTED, PLANTED_ENV) == []
    assert PLANTED not in out.err + out.out and PLANTED_ENV not in out.err + out.out


@pytest.mark.slow
def test_planted_secrets_never_reach_a_sweep_dir(files, tmp_path):
    """Hydra saves the composed config and the overrides itself (.hydra/*.yaml, multirun.yaml);
    ft redacts those too: a grep of the whole sweep directory finds neither planted token."""
    sweep = tmp_path / "sweep"
    result = ft_cli("train", RECIPE, "-m", "train.lr=1e-3,2e-3", f"++model.token={PLANTED}",
                    "logger=wandb", "logger.wandb.mode=disabled",
                    "logger.wandb.run_name=${oc.env:WANDB_API_KEY}",
                    "data=files", f"+data.source.train={files['train']}",
                    f"data.source.validation={files['validation']}", "train.max_steps=1",
                    f"hydra.sweep.dir={sweep}",
                    env={"WANDB_API_KEY": PLANTED_ENV})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in sweep.glob("*/.hydra")) and (sweep / "multirun.yaml").is_file()
    assert len(list(sweep.glob("*/adapter"))) == 2
    assert files_containing(sweep, PLANTED, PLANTED_ENV) == []
    assert PLANTED not in result.stderr + result.stdout


def test_hf_and_sk_style_values_of_any_length_are_redacted():
    from framework.run_dir import REDACTED, redact, redact_text

    assert redact({"note": f"use {PLANTED} here"}) == {"note": f"use {REDACTED} here"}
    assert redact_text("key sk-aBc1 and hf_X9") == f"key {REDACTED} and {REDACTED}"
    assert redact_text(f"hf_{'q' * 34}") == REDACTED  # a long one in any case
    for name in ("hf_hub_download failed", "/data/hf_models/task-sk-1/train.jsonl"):
        assert redact_text(name) == name  # names and paths, not tokens


# ---- model.checkpoint on a random-init preset -----------------------------------------------
def test_checkpoint_on_a_random_init_recipe_is_never_ignored(tmp_path, capsys):
    """tiny_bert builds a random model; model.checkpoint=... must load that checkpoint instead
    (random init off, in the saved config too), and a missing one is a clear error."""
    from framework.cli import main
    from framework.models.loading import build_tiny_checkpoint
    from framework.session import compose_and_validate

    assert main(["train", RECIPE, "model.checkpoint=/nonexistent",
                 f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model.checkpoint='/nonexistent': no such directory" in err and "Traceback" not in err
    assert not (tmp_path / RECIPE).exists() or not any((tmp_path / RECIPE).iterdir())
    local = build_tiny_checkpoint("bert", compose_and_validate(RECIPE, [])[1].model.random_init)
    composed, run = compose_and_validate(RECIPE, [f"model.checkpoint={local}"])
    assert run.model.random_init is None and composed.config["model"]["random_init"] is None


# ---- messages -------------------------------------------------------------------------------
def test_duplicate_yaml_key_names_the_key_and_line(tmp_path, capsys):
    from framework.cli import main

    recipe = tmp_path / "dupkey.yaml"
    recipe.write_text(f"defaults:\n  - {RECIPE}\n  - _self_\ntrain:\n  lr: 1.0e-3\n"
                      f"  max_steps: 2\n  lr: 2.0e-3\n")
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:7:" in err and "duplicate key 'lr' (first at line 5)" in err, err


def test_key_in_the_wrong_group_suggests_the_right_group(capsys):
    from framework.cli import main

    assert main(["validate", RECIPE, "peft.lr=1e-3"]) == 2
    assert "did you mean 'train.lr'?" in capsys.readouterr().err


def test_empty_data_file_says_empty_and_leaves_no_run_dir(files, tmp_path, capsys):
    """A run that fails at setup removes the run directory it had just created."""
    from framework.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    run_dir = tmp_path / "run"
    assert main(["train", RECIPE, "data=files", f"+data.source.train={empty}",
                 f"data.source.validation={files['validation']}", f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert f"data.source.train: {empty} is empty" in err, err
    assert not run_dir.exists(), "the failed run left its directory behind"


def test_checkpoint_size_estimate_matches_the_files(reference):
    """The disk check's estimate (checkpoint_bytes) against a real checkpoint of the same model:
    the checkpoint holds the whole model (not only the adapter), and the estimate covers it."""
    from framework.checkpoint import checkpoint_bytes

    checkpoint = reference / "checkpoints" / "checkpoint-00000003"
    whole = load_file(str(checkpoint / "model.safetensors"))
    trainable = set(adapter(reference))  # the adapter + the new head: what the optimizer updates
    assert len(whole) > len(trainable), "the checkpoint holds the base weights too"

    for name, tensor in whole.items():  # trainable: its name in the adapter (peft's suffixes off)
        plain = name.replace(".modules_to_save.default.", ".").replace(".default.", ".")
        tensor.requires_grad_(plain in trainable)
    assert sum(t.numel() for t in whole.values() if t.requires_grad) == \
        sum(t.numel() for t in adapter(reference).values())

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


# ---- noise ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_run_imports_no_deepspeed_and_logs_for_people(files, tmp_path):
    """A CPU run that checkpoints: DeepSpeed (installed) is never imported, so its "Setting
    accelerator to CPU" warning never shows, and train.log holds ft's lines, not Accelerate's
    one-line-per-saved-file INFO records."""
    run_dir = tmp_path / "run"
    script = ("import sys; from framework.cli import main; "
              "code = main(sys.argv[1:]); "
              "print('deepspeed imported:', 'deepspeed' in sys.modules); sys.exit(code)")
    args = ["train", RECIPE, *data_overrides(files, "train.max_steps=2", "train.save_every=1",
                                             f"run_dir={run_dir}")]
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "deepspeed imported: False" in result.stdout
    assert "Setting accelerator" not in result.stderr
    assert len(list((run_dir / "checkpoints").iterdir())) >= 1
    log = (run_dir / "train.log").read_text().splitlines()
    assert not [line for line in log if " accelerate" in line], log
    assert len(log) <= 8 and any("done:" in line for line in log), log


def test_validate_data_reads_the_data_without_loading_the_model(files, tmp_path, monkeypatch,
                                                                capsys):
    """`ft validate --data` catches what `ft train` would (here: a label only in validation),
    reports columns, labels and token lengths, and never loads model weights."""
    import framework.models.loading as loading
    from framework.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("ft validate --data loaded the model")

    monkeypatch.setattr(loading, "load_model", no_model)
    source = ["data=files", f"+data.source.train={files['train']}", "data.max_length=8"]
    assert main(["validate", RECIPE, "--data", *source,
                 f"data.source.validation={files['validation']}"]) == 0
    out = capsys.readouterr().out
    assert "train: 32 examples" in out and "columns text, label" in out, out
    assert "tokens per example: max 8" in out and "labels (2): neg, pos" in out, out
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "so so", "label": "meh"}])
    assert main(["validate", RECIPE, *source, f"data.source.validation={odd}"]) == 0  # config only
    assert main(["validate", RECIPE, "--data", *source, f"data.source.validation={odd}"]) == 2
    assert "label 'meh' in split 'validation'" in capsys.readouterr().err
