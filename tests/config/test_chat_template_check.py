"""TRL's conventions for strings, checked before anything is loaded (issue 20, Must show 5; issue
22's `ft validate` bullet): a base checkpoint with no chat template trains on string
prompt/response rows with no extra key, and conversational rows (lists of turns) for it are
refused by `ft validate` itself, without --data and without torch, in one line with the fix. The
tokenizer's template is read from its files (tokenizer_config.json, chat_template.jinja); a hub
tokenizer not in the local cache is said to be not checkable yet, never downloaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework.data.peek import first_row
from framework.models.loading import read_has_chat_template
from framework.models.params import ModelParams
from tests.helpers import REPO, metrics, train_recipe, write_jsonl

RECIPE = "sft_tiny_llama_lora"
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
PAIRS = [
    {"prompt": f"Question {i}: what is {i} plus {i}?", "response": f"It is {2 * i}."}
    for i in range(24)
]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """The tiny Llama saved as a base model would be: its files, without a chat template."""
    from framework.core.plugins import load_all
    from framework.core.registry import MODELS
    from framework.models.loading import resolve_checkpoint
    from framework.models.params import TinySpec

    load_all()
    family = MODELS.get("llama")
    tiny = Path(resolve_checkpoint(family, ModelParams(name="llama", random_init=TinySpec())))
    base = tmp_path_factory.mktemp("base") / "tiny-llama-base"
    shutil.copytree(tiny, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    return base


def validate(*overrides: str, recipe: str = RECIPE) -> subprocess.CompletedProcess:
    """`ft validate RECIPE OVERRIDES` in a fresh interpreter that then reports whether torch (or
    transformers, datasets) got imported."""
    code = (
        "import sys; from framework.cli.app import main; "
        f"rc = main(['validate', {recipe!r}, *{list(overrides)!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
        "print('heavy:', heavy); sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def files(path: Path) -> list[str]:
    return ["data=files", f"+data.source.train={path}"]


# ---- Must show 5: conversational rows without a template fail in ft validate ----------------
def test_validate_refuses_turns_for_a_tokenizer_without_template(base_checkpoint, tmp_path) -> None:
    model = f"model.checkpoint={base_checkpoint}"
    messages = write_jsonl(tmp_path / "chat.jsonl", [{"messages": TURNS}] * 4)
    turn_pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": TURNS[:1], "completion": TURNS[1:]}] * 4
    )
    for overrides in (
        [model, *files(messages)],  # format=auto, decided by the file's first row
        [model, *files(turn_pairs)],  # conversational prompt/completion
        [model, "task.format=messages"],  # the recipe's built-in data, format given
    ):
        result = validate(*overrides)
        assert result.returncode == 2, (overrides, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert (
            f"the tokenizer of model.checkpoint='{base_checkpoint}' has no chat template"
            in (errors[0])
        )
        assert "conversational (lists of turns)" in errors[0]
        assert "Fix: task.chat_template=chatml" in errors[0]
        assert "heavy: []" in result.stdout, result.stdout
    # the fixes named in that line pass, and so do string rows and the tiny model's own template
    strings = write_jsonl(tmp_path / "strings.jsonl", PAIRS)
    for overrides in (
        [model, *files(messages), "task.chat_template=chatml"],
        [model, *files(strings)],
        files(messages),
    ):
        result = validate(*overrides)
        assert result.returncode == 0, (overrides, result.stderr)
        assert "heavy: []" in result.stdout


def test_validate_refuses_preference_turns_for_a_tokenizer_without_template(
    base_checkpoint, tmp_path
) -> None:
    """The same check for preference pairs (tasks/preference.py renders through causal_lm)."""
    model = f"model.checkpoint={base_checkpoint}"
    turns = write_jsonl(
        tmp_path / "turn_pairs.jsonl",
        [{"prompt": TURNS[:1], "chosen": TURNS[1:], "rejected": [TURNS[1] | {"content": "Rome."}]}]
        * 4,
    )
    strings = write_jsonl(
        tmp_path / "string_pairs.jsonl",
        [{"prompt": p["prompt"], "chosen": p["response"], "rejected": "No."} for p in PAIRS],
    )
    refused = validate(model, *files(turns), recipe="dpo_tiny_llama_lora")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Fix: task.chat_template=chatml" in errors[0], refused.stderr
    assert "conversational (lists of turns)" in errors[0]
    for overrides in (
        [model, *files(strings)],
        [model, *files(turns), "task.chat_template=chatml"],
    ):
        result = validate(*overrides, recipe="dpo_tiny_llama_lora")
        assert result.returncode == 0, (overrides, result.stderr)
        assert "heavy: []" in result.stdout


def test_a_hub_tokenizer_not_in_the_cache_is_not_checkable_yet(tmp_path) -> None:
    messages = write_jsonl(tmp_path / "chat.jsonl", [{"messages": TURNS}] * 4)
    result = validate("model.checkpoint=ft-tests/not-downloaded-model", *files(messages))
    assert result.returncode == 0, result.stderr
    assert "cannot be checked yet (its files are not in the local cache)" in result.stdout


# ---- Must show 5: a base checkpoint trains on strings with no extra key ----------------------
@pytest.mark.slow
def test_a_base_checkpoint_trains_on_string_pairs_as_plain_text(
    base_checkpoint, tmp_path, one_torch_thread
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    run_dir = train_recipe(
        RECIPE,
        f"model.checkpoint={base_checkpoint}",
        *files(train),
        "train.max_steps=2",
        "train.log_every=1",
        output_root=tmp_path / "out",
    )
    log = (run_dir / "train.log").read_text()
    assert "plain text: prompt + completion + eos (no chat template" in log
    losses = [row["loss"] for row in metrics(run_dir, "train")]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    saved = (run_dir / "config.yaml").read_text()
    assert "chat_template: null" in saved  # no extra key was needed


# ---- reading a tokenizer's template without torch ---------------------------------------------
def test_template_is_read_from_the_tokenizer_files(base_checkpoint, tmp_path) -> None:
    family = type("Family", (), {"tiny_model_type": staticmethod(lambda spec: "llama")})
    params = ModelParams(name="llama", checkpoint=str(base_checkpoint))
    assert read_has_chat_template(family, params) is False
    with_file = Path(shutil.copytree(base_checkpoint, tmp_path / "with-file"))
    (with_file / "chat_template.jinja").write_text("{{ messages }}")
    assert read_has_chat_template(family, ModelParams(name="x", checkpoint=str(with_file))) is True
    with_key = Path(shutil.copytree(base_checkpoint, tmp_path / "with-key"))
    config = json.loads((with_key / "tokenizer_config.json").read_text())
    (with_key / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "x"}))
    assert read_has_chat_template(family, ModelParams(name="x", checkpoint=str(with_key))) is True


def test_a_hub_cache_answers_only_what_it_knows(tmp_path, monkeypatch) -> None:
    """A hub snapshot: the template in tokenizer_config.json settles it; without it, only the
    cache's record that chat_template.jinja/.json do not exist says 'no template'."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    family = type("Family", (), {})
    revision = "0" * 40

    def snapshot(repo: str, config: dict, absent: tuple[str, ...] = ()) -> ModelParams:
        folder = tmp_path / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(revision)
        (folder / "snapshots" / revision).mkdir(parents=True)
        (folder / "snapshots" / revision / "tokenizer_config.json").write_text(json.dumps(config))
        for name in absent:
            (folder / ".no_exist" / revision).mkdir(parents=True, exist_ok=True)
            (folder / ".no_exist" / revision / name).touch()
        return ModelParams(name="auto", checkpoint=repo)

    assert read_has_chat_template(family, snapshot("a/chat", {"chat_template": "x"})) is True
    assert read_has_chat_template(family, snapshot("a/unknown", {})) is None
    absent = ("chat_template.jinja", "chat_template.json")
    assert read_has_chat_template(family, snapshot("a/base", {}, absent)) is False
    assert read_has_chat_template(family, ModelParams(name="auto", checkpoint="a/none")) is None


def test_the_first_row_is_read_without_loading_the_file(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": TURNS}, {"messages": TURNS[:1]}]
    assert first_row(write_jsonl(tmp_path / "a.jsonl", rows), "json") == rows[0]
    (tmp_path / "b.json").write_text(json.dumps(rows, indent=2))
    assert first_row(tmp_path / "b.json", "json") == rows[0]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    assert first_row(tmp_path / "c.parquet", "parquet") == rows[0]
    (tmp_path / "d.csv").write_text("prompt,response\nhi,hello\n")
    assert first_row(tmp_path / "d.csv", "csv") == {"prompt": "hi", "response": "hello"}
    (tmp_path / "e.json").write_text('{"not": "rows"')
    assert first_row(tmp_path / "e.json", "json") is None
