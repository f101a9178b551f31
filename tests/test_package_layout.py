"""The architecture holds: imports point one way (import-linter), functions stay short, and a task
is added by one module plus one YAML, with nothing else edited."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, toy_sentiment_files

MAX_FUNCTION_LINES = 120


def test_import_layers_hold() -> None:
    """lint-imports checks the layered contract in pyproject.toml (function-level imports too)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_layer_contract_sees_function_level_imports(tmp_path: Path) -> None:
    """A registry that imports the trainer inside a function breaks the contract."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "framework", copy / "framework", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    registry = copy / "framework" / "core" / "registry.py"
    registry.write_text(
        registry.read_text()
        + textwrap.dedent("""

        def _sneaky():
            from framework.training.trainer import train  # noqa: F401
        """)
    )
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint)],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "framework.core.registry -> framework.training.trainer" in result.stdout


def test_no_function_is_longer_than_120_lines() -> None:
    too_long = []
    for path in sorted((REPO / "framework").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not too_long, too_long


def test_hardware_profiles_answer_questions_instead_of_being_named() -> None:
    """Other code asks a profile what it does; no module tests a profile's or method's name."""
    import re

    from framework.core.plugins import load_all
    from framework.core.registry import HARDWARE, PEFT_METHODS

    load_all()
    names = "|".join(HARDWARE.names() + PEFT_METHODS.names())
    by_name = re.compile(rf'name\s*(==|!=|in)\s*\(?"({names})"')
    for path in (REPO / "framework").rglob("*.py"):
        found = by_name.findall(path.read_text())
        assert not found, f"{path.relative_to(REPO)} checks a plug-in by name: {found}"
    train = yaml.safe_load((REPO / "conf" / "train" / "default.yaml").read_text())
    from framework.core.params import TrainConfig

    train_config = TrainConfig(**{k: v for k, v in train.items() if k != "defaults"})
    deepspeed = HARDWARE.get("deepspeed")
    params = deepspeed.Params(name="deepspeed", deepspeed={"zero_optimization": {"stage": 3}})
    assert deepspeed.shards_parameters(params, train_config)
    assert deepspeed.resume_fingerprint(params, train_config)["hardware.zero_stage"] == 3
    assert not HARDWARE.get("cpu").shards_parameters(
        HARDWARE.get("cpu").Params(name="cpu"), train_config
    )


# ---- a throw-away task: one module plus one YAML -------------------------------------------
TASK_MODULE = '''
"""A throw-away task for the architecture test: sentiment as keyword spotting."""
from framework.core.registry import TASKS
from framework.tasks.seq_cls import SeqCls


@TASKS.register("keyword_cls")
class KeywordCls(SeqCls):
    peft_task_type = "SEQ_CLS"
    summary = "throw-away test task"
'''

TASK_PRESET = "name: keyword_cls\n"


@pytest.mark.slow
def test_a_new_task_is_one_module_plus_one_yaml(tmp_path: Path, one_torch_thread) -> None:
    """Drop a module into the tasks package path and a preset into a config dir: the task is
    listed, validated against every family and method, and trains, with no other file edited."""
    import framework.tasks
    from framework.config.path import load_run
    from framework.core.plugins import load_all
    from framework.core.registry import TASKS
    from framework.peft.base import peft_task_type
    from framework.run.execute import execute

    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "keyword_cls.py").write_text(TASK_MODULE)
    recipes = tmp_path / "recipes"
    (recipes / "task").mkdir(parents=True)
    (recipes / "task" / "keyword_cls.yaml").write_text(TASK_PRESET)
    data = toy_sentiment_files(tmp_path)
    recipe = recipes / "keyword.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "defaults": ["seq_cls_tiny_bert_lora", {"override task": "keyword_cls"}, "_self_"],
                "data": {
                    "name": "files",
                    "source": {"train": str(data["train"]), "validation": str(data["validation"])},
                },
                "train": {"max_steps": 2, "log_every": 1},
            }
        )
    )

    framework.tasks.__path__.append(str(plugin_dir))
    try:
        load_all()
        assert "keyword_cls" in TASKS.names()
        assert peft_task_type("keyword_cls") == "SEQ_CLS"
        run = load_run(str(recipe), [f"output_root={tmp_path / 'out'}"])
        assert run.task.name == "keyword_cls" and run.origin.choices["task"] == "keyword_cls"
        finished = execute(run)
        summary = yaml.safe_load((finished.run_dir / "summary.json").read_text())
        assert summary["steps"] == 2 and "accuracy" in summary["final"]
        adapter = yaml.safe_load((finished.run_dir / "adapter" / "adapter_config.json").read_text())
        assert adapter["task_type"] == "SEQ_CLS"
    finally:
        framework.tasks.__path__.remove(str(plugin_dir))
        TASKS._entries.pop("keyword_cls", None)
        sys.modules.pop("framework.tasks.keyword_cls", None)


# ---- one module resolves a run's presets -----------------------------------------------------
REGISTRY_LOOKUP = re.compile(
    r"\b(MODELS|PEFT_METHODS|TASKS|HARDWARE|DATASETS|LOGGERS)\.get\(\s*"
    r"(?:[\w.]*\brun\b[\w.]*|[\w.]+\.name\b)"  # an argument that is (part of) a run, or X.name
)


def test_registry_lookups_by_a_runs_preset_names_happen_in_the_schema_only() -> None:
    """framework/config/schema.py resolves every preset of a run once (run.plugins); anywhere
    else, a lookup such as HARDWARE.get(run.hardware.name) would resolve it again."""
    schema = REPO / "framework" / "config" / "schema.py"
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "framework").rglob("*.py"))
        if path != schema
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if REGISTRY_LOOKUP.search(line)
    ]
    assert not found, found
    assert REGISTRY_LOOKUP.search(schema.read_text()), "the schema no longer resolves presets?"
    # the pattern does see the usual spellings
    for spelled in (
        "HARDWARE.get(run.hardware.name)",
        "MODELS.get(params.name, key='x')",
        "TASKS.get(self.run.task.name)",
        "DATASETS.get(data.name)",
    ):
        assert REGISTRY_LOOKUP.search(spelled), spelled
