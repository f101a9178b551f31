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


def test_a_bad_later_job_stops_the_sweep_before_anything_runs(tmp_path, data_args):
    # Job 1 (lora) is valid; job 2 (ia3) has no alpha. Nothing may train before that is known.
    result = ft_cli("train", "seq_cls_tiny_bert_lora", "-m", "peft=lora,ia3", "peft.alpha=32",
                    *data_args, f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sweep job [peft=ia3 peft.alpha=32" in result.stderr
    assert "unknown key for peft=ia3" in result.stderr and "nothing was run" in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_sweep_jobs_cover_grids_ranges_and_interval_ends():
    from framework.hydra_app import MAX_PREVALIDATED_JOBS, sweep_jobs

    jobs = sweep_jobs(["peft=lora,ia3", "train.batch_size=range(8,17,8)", "train.epochs=2",
                       "hydra.sweeper.n_trials=3", "hydra/sweeper=optuna"])
    assert sorted(map(tuple, jobs)) == sorted([
        (p, b, "train.epochs=2") for p in ("peft=lora", "peft=ia3")
        for b in ("train.batch_size=8", "train.batch_size=16")])
    assert sweep_jobs(["train.lr=interval(1e-4,1e-2)", "data.max_length=interval(16,64)"]) == [
        ["train.lr=0.0001", "data.max_length=16"], ["train.lr=0.0001", "data.max_length=64"],
        ["train.lr=0.01", "data.max_length=16"], ["train.lr=0.01", "data.max_length=64"]]
    big = sweep_jobs([f"train.lr={','.join(str(i) for i in range(1, 9))}",
                      f"train.batch_size={','.join(str(i) for i in range(1, 9))}"])
    assert 8 * 8 > MAX_PREVALIDATED_JOBS and len(big) == 7 + 7 + 1  # each value once
    assert sweep_jobs(["peft=glob(*)"]) == []  # Hydra expands globs; each job validates itself
