"""Experiment trackers, for real: one training run with logger=[tensorboard,mlflow,wandb] and planted
secrets (a token in the overrides and on the process's command line, and in the environment),
then each tracker's own files are read back with its own reader, and every byte they wrote is
scanned for the secrets."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import pytest
import yaml

from tests.helpers import metrics, train_recipe

SECRET_ARG = "hf_PLANTEDargABCDEFGHIJKLMNOPQRSTUVWXYZ"
SECRET_ENV = "hf_PLANTEDenvABCDEFGHIJKLMNOPQRSTUVWXYZ"
REDACTED = b"***REDACTED***"


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("trackers")
    overrides = [
        "logger=[tensorboard,mlflow,wandb]",
        "train.max_steps=4",
        "train.eval_every=2",
        "train.log_every=1",
        "train.keep_best=true",
        f"model.token={SECRET_ARG}",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        # What `ft train ... model.token=hf_...` leaves where trackers look: argv and environment.
        patch.setattr("sys.argv", ["ft", "train", "seq_cls_tiny_bert_lora", *overrides])
        patch.setenv("HF_TOKEN", SECRET_ENV)
        patch.setenv("MY_SERVICE_API_KEY", SECRET_ENV)
        run_dir = train_recipe("seq_cls_tiny_bert_lora", *overrides, output_root=out)
    torch.set_num_threads(threads)
    return run_dir


def _expected(run_dir: Path, split: str, key: str) -> dict:
    return {r["step"]: r[key] for r in metrics(run_dir, split)}


def test_tensorboard_event_files_hold_train_and_eval_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard" / "seq_cls_tiny_bert_lora")).Reload()
    scalars = {
        tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]
    }
    for split, key in (("train", "loss"), ("eval", "accuracy"), ("eval", "eval_loss")):
        expected = _expected(tracked_run, split, key)
        assert sorted(scalars[f"{split}/{key}"]) == sorted(expected) and len(expected) >= 2
        for step, value in expected.items():
            assert scalars[f"{split}/{key}"][step] == pytest.approx(value, rel=1e-6)
    assert "final/accuracy" in scalars
    hparams = yaml.safe_load(next((tracked_run / "tensorboard").rglob("hparams.yml")).read_text())
    assert hparams["train.eval_every"] == 2 and hparams["model.token"] == REDACTED.decode()


def test_mlflow_file_store_holds_params_metrics_summary_and_adapter(tracked_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads file stores only so

    client = MlflowClient((tracked_run / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    assert experiment.name == "seq_cls_tiny_bert_lora"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == tracked_run.name
    params = run.data.params
    assert params["train.max_steps"] == "4" and params["logger.mlflow.tracking_uri"] == "None"
    assert params["model.token"] == REDACTED.decode()
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/accuracy")}
    assert history == pytest.approx(_expected(tracked_run, "eval", "accuracy"))
    train = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert train == pytest.approx(_expected(tracked_run, "train", "loss"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "adapter_last", "summary.json"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in adapter
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text()
    )
    assert summary == json.loads((tracked_run / "summary.json").read_text())


def wandb_records(path: Path):
    """The protobuf records of a W&B offline run file (LevelDB log format: a 7-byte header, then
    32 KiB blocks of [crc32 (4) | length (2) | type (1) | data] chunks; FULL=1, FIRST=2,
    MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_config_metrics_summary_and_artifact(tracked_run):
    (run_file,) = glob.glob(str(tracked_run / "wandb" / "offline-run-*" / "run-*.wandb"))
    config, history, kinds, artifacts = {}, {}, set(), []
    for record in wandb_records(Path(run_file)):
        kind = record.WhichOneof("record_type")
        kinds.add(kind)
        if kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "artifact":
            artifacts.append((record.artifact.name, record.artifact.type))
    assert config["train.eval_every"] == 2 and config["model.token"] == REDACTED.decode()
    evals = {step: row["eval/accuracy"] for step, row in history.items() if "eval/accuracy" in row}
    assert evals == pytest.approx(_expected(tracked_run, "eval", "accuracy"))
    losses = {step: row["train/loss"] for step, row in history.items() if "train/loss" in row}
    assert losses == pytest.approx(_expected(tracked_run, "train", "loss"))
    assert "summary" in kinds and ("adapter", "model") in artifacts


def test_no_planted_secret_in_anything_a_tracker_wrote(tracked_run):
    files = [p for p in tracked_run.rglob("*") if p.is_file()]
    leaks = [str(p) for p in files if b"PLANTED" in p.read_bytes()]
    assert not leaks, leaks
    # The scan reads where each tracker put the config: the redacted token is there, in each.
    for folder in ("tensorboard", "mlruns", "wandb"):
        assert any(
            REDACTED in p.read_bytes() for p in (tracked_run / folder).rglob("*") if p.is_file()
        ), folder


def test_logger_list_validation_and_missing_library(monkeypatch, tmp_path):
    import importlib.util

    from framework.config.path import load_run
    from framework.config.schema import load_run_file
    from framework.core.errors import UserError

    run = load_run(
        "seq_cls_tiny_bert_lora",
        ["logger=[tensorboard,mlflow]", "logger.mlflow.tracking_uri=sqlite:///x.db"],
    )
    assert list(run.logger) == ["tensorboard", "mlflow"]
    assert run.logger["mlflow"].tracking_uri == "sqlite:///x.db"
    with pytest.raises(UserError, match="unknown logger preset"):
        load_run("seq_cls_tiny_bert_lora", ["logger=[tensorboard,mlflw]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(UserError) as error:
        load_run("seq_cls_tiny_bert_lora", ["logger=[tensorboard,mlflow]"])
    assert "logger=mlflow: the 'mlflow' library is not installed" in str(error.value)
    assert "pip install 'ft-peft[trackers]'" in str(error.value)
    monkeypatch.undo()
    # A run directory saved before several loggers existed ({name: tensorboard}) still loads.
    run = load_run("seq_cls_tiny_bert_lora", [])
    assert list(run.logger) == ["jsonl"]
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump({**run.raw, "logger": {"name": "tensorboard", "project": "p"}}))
    assert load_run_file(saved).logger["tensorboard"].project == "p"
