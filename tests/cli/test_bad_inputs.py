"""The bad-input catalogue: every user mistake gives one line naming the key/file/split/column and
the fix, exit code 2, no traceback, and nothing already written is lost. Plus the secret scan.
(Config-level cases — malformed YAML, misspelled keys, wrong types, missing values, unknown
presets, impossible combinations — are in test_config.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.cli.app import main
from tests.helpers import toy_sentiment_files, toy_sentiment_rows, write_jsonl

RECIPE = "seq_cls_tiny_bert_lora"


def files_args(train: Path, validation: Path = None, *extra: str):
    args = ["data=files", f"+data.source.train={train}"]
    if validation is not None:
        args.append(f"data.source.validation={validation}")
    return [*args, "train.max_steps=2", *extra]


def check_user_error(capsys, args, *fragments):
    code = main(["train", RECIPE, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def good(tmp_path):
    return toy_sentiment_files(tmp_path)


def test_missing_data_file(tmp_path, capsys):
    check_user_error(
        capsys,
        files_args(tmp_path / "nope.jsonl", None, f"output_root={tmp_path}"),
        "data.source.train",
        "no such file",
        "nope.jsonl",
    )


def test_unreadable_data_file(tmp_path, good, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "pos"}\n{this is not json\n')
    check_user_error(
        capsys,
        files_args(bad, good["validation"], f"output_root={tmp_path}"),
        "data.source.train",
        "cannot read",
        "bad.jsonl",
        "line 2:",
    )


def test_empty_data_file(tmp_path, good, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    check_user_error(
        capsys, files_args(good["train"], empty, f"output_root={tmp_path}"), "empty.jsonl"
    )


def test_missing_column(tmp_path, good, capsys):
    check_user_error(
        capsys,
        files_args(
            good["train"], good["validation"], f"output_root={tmp_path}", "data.columns.text=review"
        ),
        "data.columns.text",
        "'review' not found",
        "split 'train'",
        "train.jsonl",
    )


def test_label_outside_label_set(tmp_path, good, capsys):
    rows = toy_sentiment_rows(8, 1)
    rows[3]["label"] = "neutral"
    val = write_jsonl(tmp_path / "val_bad.jsonl", rows)
    check_user_error(
        capsys,
        files_args(good["train"], val, f"output_root={tmp_path}"),
        "label 'neutral'",
        "split 'validation'",
        "row 3",
        "val_bad.jsonl",
    )


def test_every_example_too_long_without_truncation(tmp_path, good, capsys):
    long_rows = [
        {"text": r["text"] + " and the whole long evening went on" * 3, "label": r["label"]}
        for r in toy_sentiment_rows(16, 2)
    ]
    train = write_jsonl(tmp_path / "long.jsonl", long_rows)
    check_user_error(
        capsys,
        files_args(
            train,
            good["validation"],
            f"output_root={tmp_path}",
            "data.truncation=false",
            "data.max_length=16",
        ),
        "data.max_length=16",
        "data.truncation=false",
        "split 'train'",
    )


def test_target_modules_not_found_lists_the_real_ones(tmp_path, good, capsys):
    line = check_user_error(
        capsys,
        files_args(
            good["train"],
            good["validation"],
            f"output_root={tmp_path}",
            "peft.target_modules=[q_proj,v_proj]",
        ),
        "peft.target_modules",
        "q_proj",
    )
    assert "query" in line and "value" in line, "the error must list the model's linear layers"


def test_checkpoint_path_that_does_not_exist(tmp_path, good, capsys):
    check_user_error(
        capsys,
        files_args(
            good["train"],
            good["validation"],
            f"output_root={tmp_path}",
            "model=minilm",
            f"model.checkpoint={tmp_path}/no_model",
        ),
        "model.checkpoint",
        "no such directory",
    )


def test_checkpoint_path_that_is_not_a_model(tmp_path, good, capsys):
    (tmp_path / "just_a_folder").mkdir()
    check_user_error(
        capsys,
        files_args(
            good["train"],
            good["validation"],
            f"output_root={tmp_path}",
            "model=minilm",
            f"model.checkpoint={tmp_path}/just_a_folder",
        ),
        "model.checkpoint",
        "not a model directory",
    )


def test_output_dir_holding_another_run_is_refused(tmp_path, good, capsys):
    run_dir = tmp_path / "run"
    assert (
        main(
            ["train", RECIPE, *files_args(good["train"], good["validation"], f"run_dir={run_dir}")]
        )
        == 0
    )
    capsys.readouterr()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    check_user_error(
        capsys,
        files_args(good["train"], good["validation"], f"run_dir={run_dir}"),
        "run_dir=",
        "already holds a run",
        "overwrite=true",
    )
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before, "a refused run changed files of the existing one"


def test_secrets_never_reach_the_run_dir(tmp_path, good, capsys):
    token = "hf_" + "Q" * 34
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            RECIPE,
            *files_args(
                good["train"], good["validation"], f"run_dir={run_dir}", f"model.token={token}"
            ),
        ]
    )
    assert code == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert token not in out + err
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert not leaked, f"token written to {leaked}"
    assert "***REDACTED***" in (run_dir / "config.yaml").read_text()


def test_redaction_rules():
    from framework.store.redaction import redact, redact_text

    config = {
        "model": {"token": "abc", "max_new_tokens": 5, "tokenizer": "x/y"},
        "logger": {"api_key": "k", "wandb_secret": "s", "password": "p"},
        "note": "use hf_ABCDEFGHIJKLMNOPQRSTUVWX please",
    }
    clean = redact(config)
    assert clean["model"]["token"] == clean["logger"]["api_key"] == "***REDACTED***"
    assert clean["logger"]["wandb_secret"] == clean["logger"]["password"] == "***REDACTED***"
    assert clean["model"]["max_new_tokens"] == 5 and clean["model"]["tokenizer"] == "x/y"
    assert "hf_ABC" not in clean["note"]
    assert "hf_" not in redact_text("model.token=hf_ABCDEFGHIJKLMNOPQRSTUVWX")
    assert redact_text("logger.api_key=abc123") == "logger.api_key=***REDACTED***"
