"""Hydra multirun through `ft train -m`: a grid sweep and an Optuna sweep, each job a normal ft run
whose objective (the task's primary metric) goes back to the sweeper; failures are recorded and
the sweep goes on, a re-run resumes, and trials share one tokenization."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, ft_cli, toy_sentiment_files, toy_sentiment_rows, write_jsonl


@pytest.fixture
def data_args(tmp_path):
    files = toy_sentiment_files(tmp_path)
    return [
        "data=files",
        f"+data.source.train={files['train']}",
        f"data.source.validation={files['validation']}",
        "train.max_steps=2",
    ]


def test_sweep_user_error_is_one_line(tmp_path, data_args):
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "train.lr=abc,0.1",
        *data_args,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.lr: must be a number, got 'abc'" in result.stderr


def test_a_bad_later_job_stops_the_sweep_before_anything_runs(tmp_path, data_args):
    # Job 1 (lora) is valid; job 2 (ia3) has no alpha. Nothing may train before that is known.
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "peft=lora,ia3",
        "peft.alpha=32",
        *data_args,
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sweep job [peft=ia3 peft.alpha=32" in result.stderr
    assert "unknown key for peft=ia3" in result.stderr and "nothing was run" in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_sweep_jobs_cover_grids_ranges_and_interval_ends():
    from framework.sweep.planning import MAX_PREVALIDATED_JOBS, sweep_jobs

    jobs = sweep_jobs(
        [
            "peft=lora,ia3",
            "train.batch_size=range(8,17,8)",
            "train.epochs=2",
            "hydra.sweeper.n_trials=3",
            "hydra/sweeper=optuna",
        ]
    )
    assert sorted(map(tuple, jobs)) == sorted(
        [
            (p, b, "train.epochs=2")
            for p in ("peft=lora", "peft=ia3")
            for b in ("train.batch_size=8", "train.batch_size=16")
        ]
    )
    assert sweep_jobs(["train.lr=interval(1e-4,1e-2)", "data.max_length=interval(16,64)"]) == [
        ["train.lr=0.0001", "data.max_length=16"],
        ["train.lr=0.0001", "data.max_length=64"],
        ["train.lr=0.01", "data.max_length=16"],
        ["train.lr=0.01", "data.max_length=64"],
    ]
    big = sweep_jobs(
        [
            f"train.lr={','.join(str(i) for i in range(1, 9))}",
            f"train.batch_size={','.join(str(i) for i in range(1, 9))}",
        ]
    )
    assert MAX_PREVALIDATED_JOBS < 8 * 8 and len(big) == 7 + 7 + 1  # each value once
    assert sweep_jobs(["peft=glob(*)"]) == []  # Hydra expands globs; each job validates itself


@pytest.fixture
def unique_data_args(tmp_path):
    """Data no other run used (one row holds a random word): the first trial that reads it misses
    the shared tokenization cache, whatever ran before on this machine."""
    rows = toy_sentiment_rows(31, 0) + [
        {"text": f"the film {os.urandom(8).hex()} was great", "label": "pos"}
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", toy_sentiment_rows(8, 1))
    return [
        "data=files",
        f"+data.source.train={train}",
        f"data.source.validation={val}",
        "train.max_steps=2",
    ]


def trial_records(sweep: Path):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/trial.json")}


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_grid_goes_on(tmp_path, unique_data_args):
    # A PEFT-method dimension x lr: LoRA diverges at lr=1e30 (non-finite loss, exit 3) while HRA's
    # normalised reflections stay finite, so exactly one of the four trials fails at runtime.
    # train.nan_policy is a schema key the preset omits: no `+` needed in a sweep either.
    sweep = tmp_path / "sweep"
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "peft=lora,hra",
        "train.lr=1e-3,1e30",
        "train.nan_policy=stop",
        *unique_data_args,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not in struct" not in result.stderr
    records = trial_records(sweep)
    assert {k: (r["status"], r["exit_code"]) for k, r in records.items()} == {
        "0": ("completed", None),
        "1": ("failed", 3),
        "2": ("completed", None),
        "3": ("completed", None),
    }
    assert "non-finite loss" in records["1"]["reason"]
    assert records["1"]["overrides"][:2] == ["peft=lora", "train.lr=1e+30"]
    # One console line per trial, then the table and the best trial's command.
    lines = [line for line in result.stdout.splitlines() if line.startswith("[sweep] trial")]
    assert len(lines) == 4 and "failed (exit 3" in lines[1] and "accuracy=" in lines[0]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == [
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    assert summary["primary_metric"] == "accuracy" and summary["greater_is_better"] is True
    assert summary["counts"] == {"completed": 3, "failed": 1}
    best = summary["best"]
    assert best["value"] == max(r["value"] for r in records.values() if r["status"] == "completed")
    assert f"ft train seq_cls_tiny_bert_lora {best['overrides'][0]}" in result.stdout
    assert best["command"] in result.stdout and "1 failed" in result.stdout
    # The best command runs as it stands (++/hydra keys are gone): ft validate accepts it.
    words = shlex.split(best["command"])
    assert words[:2] == ["ft", "train"]
    check = ft_cli("validate", *words[2:], cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    # `ft sweep report` prints the same table again.
    again = ft_cli("sweep", "report", str(sweep), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() in result.stdout
    # The trials share data, tokenizer and preprocessing: only the first one tokenized.
    logs = [(sweep / str(i) / "train.log").read_text() for i in range(4)]
    assert "tokenized 40 examples" in logs[0]
    assert all("tokenized 0 examples (cache hit" in log for log in logs[1:])


@pytest.mark.slow
def test_fail_fast_stops_the_sweep_at_the_first_failure(tmp_path, data_args):
    sweep = tmp_path / "sweep"
    # Non-finite updates are skipped on the device and counted at log steps: log every step, so
    # the NaN stop comes at the first bad step (2: step 1's update, at the warm-up lr 5e29, is
    # finite but ruins the weights) and its checkpoint is checkpoint-2; step 3 remains to fail again.
    data_args = [a for a in data_args if not a.startswith("train.max_steps=")]
    data_args += ["train.max_steps=3", "train.log_every=1"]
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "train.lr=1e30,1e-3",
        "train.nan_policy=stop",
        "sweep.fail_fast=true",
        *data_args,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert [r["status"] for r in trial_records(sweep).values()] == ["failed"]
    assert json.loads((sweep / "sweep_summary.json").read_text())["counts"] == {"failed": 1}
    before = (sweep / "0" / "metrics.jsonl").read_text()
    # Again without fail_fast: the failed trial is tried again, resumed from the checkpoint its
    # NaN stop saved (its records up to that step kept; it stops again), and the sweep goes on
    # to the second trial.
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "train.lr=1e30,1e-3",
        "train.nan_policy=stop",
        *data_args,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = trial_records(sweep)
    assert [records[k]["status"] for k in "01"] == ["failed", "completed"]
    assert records["0"]["resumed_from"].endswith("checkpoint-00000002")
    after = (sweep / "0" / "metrics.jsonl").read_text()
    assert after.startswith(before) and '"non_finite_loss"' in after[len(before) :]


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def _snapshot(trial: Path):
    """Every file a trial's training wrote (trial.json is the sweep's record: a kill between the
    run's summary.json and the record's update leaves it for the re-run to complete)."""
    return {
        str(p.relative_to(trial)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(trial.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.name != "trial.json"
    }


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_retraining_finished_trials(tmp_path, data_args):
    # The grid has a method-dependent dimension too: the rank only where the method has one, so
    # IA3's two grid points (2, 3) are one trial and the second is skipped as a duplicate.
    sweep = tmp_path / "sweep"
    args = [
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "peft=lora,ia3",
        "peft.r=2,4",
        "sweep.conditional=[peft.r]",
        *data_args,
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while (
        not _complete_json(sweep / "1" / "summary.json")
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep: trial 1 just finished, trial 2 not yet
    proc.wait()
    assert (sweep / "1" / "summary.json").exists()
    assert not (sweep / "2" / "summary.json").exists(), "the sweep finished before the kill"
    finished = {name: _snapshot(sweep / name) for name in ("0", "1")}
    # Whatever trial 2 left behind must not leak into its restart.
    (sweep / "2").mkdir(exist_ok=True)
    (sweep / "2" / "metrics.jsonl").write_text('{"split": "train", "step": 99, "loss": 1.0}\n')

    result = ft_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("0", "1"):  # not retrained: every file byte- and time-identical
        assert _snapshot(sweep / name) == finished[name]
        assert f"trial {name}: already completed" in result.stdout
    steps = [
        json.loads(line)["step"]
        for line in (sweep / "2" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("split") == "train"
    ]
    assert steps and 99 not in steps and steps == sorted(set(steps)) and steps[-1] == 2
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["counts"] == {"completed": 3, "duplicate": 1}
    records = trial_records(sweep)
    assert [records[k]["status"] for k in "0123"] == [
        "completed",
        "completed",
        "completed",
        "duplicate",
    ]
    ranks = [
        yaml.safe_load((sweep / k / "config.yaml").read_text())["peft"].get("r") for k in "012"
    ]
    assert ranks == [2, 4, None]  # IA3 has no rank: peft.r was dropped, not refused
    assert records["2"]["dropped"] == ["peft.r"] and "peft.r=2" not in records["2"]["overrides"]


@pytest.mark.slow
def test_optuna_study_takes_its_direction_from_the_task_and_persists(tmp_path, data_args):
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # as ft itself sets it
    import optuna

    sweep = tmp_path / "sweep"
    # Seeded sampling draws lr=1e30 once: that trial is told to the study as failed.
    args = [
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=1",
        "train.lr=choice(1e-3,1e30,3e-3)",
        "train.nan_policy=stop",
        *data_args,
        f"hydra.sweep.dir={sweep}",
    ]
    result = ft_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="ft", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # accuracy: from the task
    states = [t.state for t in study.trials]
    assert len(states) == 4 and states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["best"]["value"] == pytest.approx(study.best_value)
    assert len(summary["trials"]) == 4
    # The same command again: the study is complete, nothing runs.
    again = ft_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        len(optuna.load_study(study_name="ft", storage=f"sqlite:///{sweep / 'optuna.db'}").trials)
        == 4
    )
    assert "[sweep] trial" not in again.stdout and len(list(sweep.glob("*/trial.json"))) == 4


def test_an_explicit_direction_against_the_task_is_refused(tmp_path, data_args):
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.n_trials=2",
        "train.lr=interval(1e-4,1e-2)",
        *data_args,
        f"hydra.sweep.dir={tmp_path}/s",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hydra.sweeper.direction=minimize: the task's primary metric accuracy" in result.stderr
    assert "direction is maximize" in result.stderr
    assert not list((tmp_path / "s").glob("*/trial.json"))


def test_sweep_bookkeeping(tmp_path):
    from framework.core.errors import UserError
    from framework.sweep.dirs import default_sweep_dir
    from framework.sweep.options import config_hash, split_sweep_options
    from framework.sweep.optuna import objective_direction
    from framework.sweep.trials import shown_overrides, trim_metrics

    # A trial resumed from checkpoint 2 drops the records after it (they are trained again).
    write_jsonl(
        tmp_path / "metrics.jsonl",
        [{"step": 1, "loss": 1}, {"step": 2, "event": "checkpoint"}, {"step": 3, "loss": 0.5}],
    )
    trim_metrics(tmp_path, tmp_path / "checkpoints" / "checkpoint-00000002")
    assert [
        json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2]

    node = {"train": {"lr": 1e-3}, "peft": {"name": "lora"}}
    assert config_hash({**node, "run_dir": "/a", "overwrite": True}) == config_hash(node)
    assert config_hash(node) != config_hash({**node, "train": {"lr": 2e-3}})
    one = default_sweep_dir("out", "r", ["peft=lora,ia3", "hydra.sweeper.n_trials=4"])
    assert one == default_sweep_dir("out", "r", ["hydra.sweeper.n_trials=9", "peft=lora,ia3"])
    assert one != default_sweep_dir("out", "r", ["peft=lora,dora"])
    assert objective_direction([("perplexity", False)], []) == "minimize"
    with pytest.raises(UserError, match="different metrics"):
        objective_direction([("accuracy", True), ("eval_loss", False)], [])
    options, rest = split_sweep_options(["sweep.fail_fast=true", "peft=lora"])
    assert options.fail_fast and rest == ["peft=lora"]
    with pytest.raises(UserError, match="unknown sweep option"):
        split_sweep_options(["sweep.fast=true"])
    assert shown_overrides(
        [
            "++train.nan_policy=stop",
            "hydra.sweep.dir=x",
            "+a.b=1",
            "+hparams_search=lora",
            "peft.r=8",
            "model.token=hf_abcdefghijklmnopqrstuvwxyz",
        ]
    ) == ["train.nan_policy=stop", "+a.b=1", "peft.r=8", "model.token=***REDACTED***"]


def test_hparams_search_presets_hold_their_spaces(tmp_path):
    """The shipped search spaces: a grid comparing methods with the rank only where a method has
    one, and an Optuna space over LoRA's rank, alpha and lr (one job of each validated here;
    `ft train -m` validates every grid point before the first runs)."""
    from framework.config.compose import with_search_preset
    from framework.config.recipe import read_recipe
    from framework.sweep.planning import preset_sweep, prevalidate_sweep

    recipe = read_recipe("seq_cls_tiny_bert_lora")
    assert with_search_preset(recipe, ["hparams_search=methods"]) == ["+hparams_search=methods"]
    sweeper, params, _, node = preset_sweep(recipe, ["+hparams_search=methods"])
    assert sweeper == "basic" and node == {"conditional": ["peft.r"]}
    assert sorted(params) == ["++peft.r=8,16", "peft=lora,dora,loha,ia3", "train.lr=1e-4,1e-3"]
    problems, runs = prevalidate_sweep(
        recipe, ["peft=ia3", "++peft.r=8", "train.lr=1e-3"], ["peft.r"]
    )
    assert problems == [] and runs[0].peft.name == "ia3"
    sweeper, params, n_trials, node = preset_sweep(recipe, ["+hparams_search=lora"])
    assert sweeper == "optuna" and n_trials == 20 and node is None
    assert {p.split("=", 1)[0] for p in params} == {"peft.r", "peft.alpha", "train.lr"}
    problems, _ = prevalidate_sweep(recipe, ["peft.r=4", "peft.alpha=8", "train.lr=1e-5"])
    assert problems == []


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_continued_optuna_study_runs_only_missing_trials(tmp_path):
    """The persistent study of a killed Optuna sweep: 2 trials finished and 1 left running. The
    re-run asks for the 2 still missing, the first of them the unfinished trial's parameters
    again, in trial directories numbered after the earlier ones."""
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # as ft itself sets it
    import optuna

    from framework.sweep.optuna import OPTUNA_DB, optuna_overrides

    storage = f"sqlite:///{tmp_path / OPTUNA_DB}"
    study = optuna.create_study(study_name="ft", storage=storage, direction="maximize")
    lr = optuna.distributions.LogUniformDistribution(1e-5, 1e-2)
    for value in (0.5, 0.7):
        trial = study.ask({"train.lr": lr})
        study.tell(trial, value)
    killed = study.ask({"train.lr": lr})
    for name in ("0", "1", "2"):
        (tmp_path / name).mkdir()
    added = optuna_overrides(
        ["hydra.sweeper.n_trials=4", "train.lr=interval(1e-5,1e-2)"], tmp_path, "maximize"
    )
    assert "hydra.sweeper.n_trials=2" in added and "hydra.sweeper.n_trials=4" not in added
    assert "hydra.sweep.subdir=r3_${hydra.job.num}" in added
    assert (
        f"hydra.sweeper.storage='{storage}'" in added
        and "hydra.sweeper.direction=maximize" in added
    )
    states = [t.state for t in optuna.load_study(study_name="ft", storage=storage).trials]
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    assert states[-1] == optuna.trial.TrialState.WAITING  # asked first by the re-run
    waiting = optuna.load_study(study_name="ft", storage=storage).trials[-1]
    assert waiting.system_attrs["fixed_params"] == killed.params


def test_a_sweep_refuses_one_run_dir_for_all_trials(tmp_path, data_args):
    result = ft_cli(
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "peft=lora,ia3",
        f"run_dir={tmp_path}/r",
        *data_args,
        cwd=tmp_path,
    )
    assert (
        result.returncode == 2
        and "run_dir: every trial of a sweep gets its own directory" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "r").exists()


SCRIPTED_ACCURACY = """
import sys

from framework.tasks.seq_cls import SeqCls

real = SeqCls.evaluate
queue = {queue!r}


def scripted(self, *args, **kwargs):
    return {{**real(self, *args, **kwargs), "accuracy": queue.pop(0)}}


SeqCls.evaluate = scripted
from framework.cli.app import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_sweep_ranks_trials_by_their_kept_best_under_early_stopping(tmp_path, data_args):
    """Each evaluation's accuracy is scripted (the trials run one after the other in one
    process): trial 0 peaks at step 1 (0.9) and ends at 0.5, stopped early; trial 1 ends at
    its best, 0.7. Ranked by the kept adapters, trial 0 wins; by the last steps it would lose."""
    script = tmp_path / "sweep_with_scripted_accuracy.py"
    script.write_text(SCRIPTED_ACCURACY.format(queue=[0.9, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7]))
    sweep = tmp_path / "sweep"
    args = [
        "train",
        "seq_cls_tiny_bert_lora",
        "-m",
        "train.lr=1e-3,2e-3",
        *[a for a in data_args if not a.startswith("train.max_steps")],
        "train.max_steps=4",
        "train.eval_every=1",
        "train.keep_best=true",
        "train.early_stopping_patience=2",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = trial_records(sweep)
    assert {k: r["value"] for k, r in records.items()} == {"0": 0.9, "1": 0.7}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["best"]["trial"] == "0" and summary["best"]["value"] == 0.9
    summaries = {i: json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)}
    assert summaries[0]["steps"] == 3 and summaries[0]["stopped_early"]
    assert [(s["final"]["accuracy"], s["last"]["accuracy"]) for s in summaries.values()] == [
        (0.9, 0.5),
        (0.7, 0.7),
    ]
    # ft report over the sweep ranks the kept adapters too.
    report = ft_cli("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    table = [line.split() for line in report.stdout.splitlines()[2:4]]
    assert [(row[0], row[2]) for row in table] == [("0", "0.9000"), ("1", "0.7000")], report.stdout
