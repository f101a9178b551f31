"""`ft report`: one run, several runs ranked by the primary metric with the differing config keys
as columns, a directory of runs (a sweep), `latest RECIPE`, and the curves (curves.png and
`--plot`), with and without matplotlib. Run directories are written by hand: no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import write_jsonl


def fake_run(root: Path, name: str, lr: float, r: int, accuracy: list, best=None) -> Path:
    """A finished run: config.yaml, metrics.jsonl (train every step, eval every 2) and summary."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "recipe": "seq_cls_tiny_bert_lora",
        "seed": 0,
        "output_root": str(root),
        "train": {"lr": lr, "max_steps": 2 * len(accuracy)},
        "peft": {"name": "lora", "r": r},
        "model": {"name": "bert"},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"step": 0, "split": "eval", "eval_loss": 0.7, "accuracy": 0.5}]
    for i, acc in enumerate(accuracy, start=1):
        rows += [
            {"step": 2 * i - 1, "split": "train", "loss": 1 / i, "tokens_per_s": 1000.0},
            {"step": 2 * i, "split": "train", "loss": 0.9 / i, "tokens_per_s": 3000.0},
            {"step": 2 * i, "split": "eval", "eval_loss": 0.7 - acc / 10, "accuracy": acc},
        ]
    write_jsonl(run_dir / "metrics.jsonl", rows)
    summary = {
        "recipe": "seq_cls_tiny_bert_lora",
        "steps": 2 * len(accuracy),
        "final": {"eval_loss": 0.7 - accuracy[-1] / 10, "accuracy": accuracy[-1]},
        "baseline": {"eval_loss": 0.7, "accuracy": 0.5},
        "primary_metric": "accuracy",
        "greater_is_better": True,
        "train_seconds": 12.5,
    }
    if best:
        summary["best"] = {
            "metric": "accuracy",
            "greater_is_better": True,
            "step": best[0],
            "value": best[1],
        }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2026-01-01"
    fake_run(root / "0", "run", 1e-3, 8, [0.6, 0.7])
    fake_run(root / "1", "run", 3e-3, 8, [0.8, 0.75])
    fake_run(root / "2", "run", 1e-3, 16, [0.65, 0.9], best=(4, 0.9))
    fake_run(root / "3", "run", 3e-3, 16, [0.55, 0.6])
    return root


def test_one_run_report(tmp_path, capsys):
    from framework.commands.report import print_report

    run_dir = fake_run(
        tmp_path / "outputs" / "seq_cls_tiny_bert_lora",
        "2026-01-01_00-00-00",
        1e-3,
        8,
        [0.6, 0.8, 0.7],
    )
    print_report(["latest", "seq_cls_tiny_bert_lora"], str(tmp_path / "outputs"))
    out = capsys.readouterr().out
    assert f"run: {run_dir}" in out
    assert "accuracy                  0.5000    0.7000" in out
    # tokens/s is the mean over log steps; the best eval comes from metrics.jsonl when the run
    # did not track one itself.
    assert "steps: 6 in 12.5 s; 2000 tokens/s (mean of log steps)" in out
    assert "best eval: accuracy=0.8000 at step 4 (higher is better; 3 evaluations)" in out


def test_several_runs_ranked_with_differing_keys_as_columns(sweep, capsys, tmp_path):
    from framework.commands.report import print_report

    print_report([str(sweep)], plot=tmp_path / "all.png")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4 runs, sorted by accuracy (higher is better)")
    assert lines[1].split() == [
        "run",
        "peft.r",
        "train.lr",
        "accuracy",
        "best@step",
        "steps",
        "time_s",
        "tok/s",
    ]
    table = [line.split() for line in lines[2:6]]
    assert [row[1:4] for row in table] == [
        ["16", "0.001", "0.9000"],
        ["8", "0.003", "0.7500"],
        ["8", "0.001", "0.7000"],
        ["16", "0.003", "0.6000"],
    ]
    assert [row[4] for row in table] == ["0.9000@4", "0.8000@2", "0.7000@4", "0.6000@4"]
    assert lines[6] == f"curves of 4 run(s) written to {tmp_path / 'all.png'}"
    assert (tmp_path / "all.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_png_and_no_matplotlib(sweep, monkeypatch, caplog):
    import importlib.util

    from framework.training.curves import run_series, write_run_curves

    run_dir = sweep / "2" / "run"
    series = run_series(run_dir)
    assert series["accuracy"] == [(0, 0.5), (2, 0.65), (4, 0.9)]
    assert [s for s, _ in series["train loss"]] == [1, 2, 3, 4]
    assert write_run_curves(run_dir) == run_dir / "curves.png"
    assert (run_dir / "curves.png").stat().st_size > 10_000
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    (run_dir / "curves.png").unlink()
    with caplog.at_level("INFO", logger="ft"):
        assert write_run_curves(run_dir) is None
    assert not (run_dir / "curves.png").exists()
    assert [r.message for r in caplog.records] == [
        "curves: matplotlib is not installed (pip install 'ft-peft[report]'); no curves.png written"
    ]


def test_report_errors_name_the_fix(tmp_path):
    from framework.commands.report import print_report
    from framework.core.errors import UserError

    with pytest.raises(UserError, match="no finished ft run there"):
        print_report([str(tmp_path)])
    with pytest.raises(UserError, match="no finished run of x under"):
        print_report(["latest", "x"], str(tmp_path))
