"""Hydra multirun through `ft train -m`: a grid sweep and an Optuna sweep, each job a normal ft run
whose objective (the task's primary metric) goes back to the sweeper."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import ft_cli, toy_sentiment_rows, write_jsonl


@pytest.fixture
def data_args(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", toy_sentiment_rows(32, 0))
    val = write_jsonl(tmp_path / "val.jsonl", toy_sentiment_rows(8, 1))
    return ["data=files", f"+data.source.train={train}", f"data.source.validation={val}",
            "train.max_steps=2"]


@pytest.mark.slow
def test_grid_sweep_runs_every_combination(tmp_path, data_args):
    result = ft_cli("train", "seq_cls_tiny_bert_lora", "-m", "peft=lora,ia3", *data_args,
                    f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert len(jobs) == 2
    methods = {yaml.safe_load((job / "config.yaml").read_text())["peft"]["name"] for job in jobs}
    assert methods == {"lora", "ia3"}
    for job in jobs:
        assert (job / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_optuna_sweep_gets_the_objective(tmp_path, data_args):
    result = ft_cli("train", "seq_cls_tiny_bert_lora", "-m", "hydra/sweeper=optuna",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
                    "train.lr=interval(1e-4,1e-2)", *data_args,
                    f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    best_job = max(json.loads((job / "summary.json").read_text())["final"]["accuracy"]
                   for job in (tmp_path / "sweep").glob("[0-9]*"))
    assert results["best_value"] == pytest.approx(best_job)


def test_sweep_user_error_is_one_line(tmp_path, data_args):
    result = ft_cli("train", "seq_cls_tiny_bert_lora", "-m", "train.lr=abc,0.1", *data_args,
                    f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.lr: must be a number, got 'abc'" in result.stderr
