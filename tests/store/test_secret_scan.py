"""The secret scan: a token planted in the overrides, the environment and a tracker's run name
never reaches a run directory, `ft show`, or a sweep directory (Hydra's own files included);
hf_/sk_-style values of any length are redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TOY_CLS_RECIPE, ft_cli, toy_cls_overrides

PLANTED = "hf_PLANTEDSECRET123"  # shorter than a real HF token
PLANTED_ENV = "PlantedEnvSecret789"  # nothing about it looks secret but the variable's name


def files_containing(folder: Path, *needles: str):
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and any(n.encode() in p.read_bytes() for n in needles)
    ]


def test_planted_secrets_never_reach_a_run_dir_or_ft_show(
    toy_files, tmp_path, monkeypatch, capsys, one_torch_thread
):
    from framework.cli.app import main

    monkeypatch.setenv("HF_TOKEN", PLANTED_ENV)
    # an env secret interpolated into a key that is not secret-named (a tracker's run name)
    secret_overrides = [
        f"model.token={PLANTED}",
        "logger=wandb",
        "logger.wandb.mode=disabled",
        "logger.wandb.run_name=${oc.env:HF_TOKEN}",
    ]
    assert main(["show", TOY_CLS_RECIPE, *secret_overrides]) == 0
    shown = capsys.readouterr().out
    assert PLANTED not in shown and PLANTED_ENV not in shown and "REDACTED" in shown
    assert (
        main(["train", TOY_CLS_RECIPE, "--cfg", "job", f"++model.token={PLANTED}"]) == 0
    )  # Hydra's print
    shown = capsys.readouterr().out
    assert PLANTED not in shown and "token: '***REDACTED***'" in shown, shown
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                TOY_CLS_RECIPE,
                *toy_cls_overrides(
                    toy_files, "train.max_steps=1", f"run_dir={run_dir}", *secret_overrides
                ),
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert (run_dir / "train.log").is_file()
    assert files_containing(run_dir, PLANTED, PLANTED_ENV) == []
    assert PLANTED not in out.err + out.out and PLANTED_ENV not in out.err + out.out


@pytest.mark.slow
def test_planted_secrets_never_reach_a_sweep_dir(toy_files, tmp_path):
    """Hydra saves the composed config and the overrides itself (.hydra/*.yaml, multirun.yaml);
    ft redacts those too: a grep of the whole sweep directory finds neither planted token."""
    sweep = tmp_path / "sweep"
    result = ft_cli(
        "train",
        TOY_CLS_RECIPE,
        "-m",
        "train.lr=1e-3,2e-3",
        f"++model.token={PLANTED}",
        "logger=wandb",
        "logger.wandb.mode=disabled",
        "logger.wandb.run_name=${oc.env:WANDB_API_KEY}",
        "data=files",
        f"+data.source.train={toy_files['train']}",
        f"data.source.validation={toy_files['validation']}",
        "train.max_steps=1",
        f"hydra.sweep.dir={sweep}",
        env={"WANDB_API_KEY": PLANTED_ENV},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in sweep.glob("*/.hydra")) and (sweep / "multirun.yaml").is_file()
    assert len(list(sweep.glob("*/adapter"))) == 2
    assert files_containing(sweep, PLANTED, PLANTED_ENV) == []
    assert PLANTED not in result.stderr + result.stdout


def test_hf_and_sk_style_values_of_any_length_are_redacted():
    from framework.store.redaction import REDACTED, redact, redact_text

    assert redact({"note": f"use {PLANTED} here"}) == {"note": f"use {REDACTED} here"}
    assert redact_text("key sk-aBc1 and hf_X9") == f"key {REDACTED} and {REDACTED}"
    assert redact_text(f"hf_{'q' * 34}") == REDACTED  # a long one in any case
    for name in ("hf_hub_download failed", "/data/hf_models/task-sk-1/train.jsonl"):
        assert redact_text(name) == name  # names and paths, not tokens
