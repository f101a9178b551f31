"""`pip install` is a real install: a wheel built from the source holds the presets and recipes,
installs into a fresh virtual environment (no editable install, the repository nowhere on
sys.path) and works from another directory: `ft list`, `ft validate` of a shipped recipe and of a
user's recipe with the user's own preset, a 3-step `ft train` of a tiny model, tab completion.

The fresh venv reuses the already installed dependencies (torch, transformers, ...) through a .pth
file naming this interpreter's site-packages: only ft itself comes from the wheel (installed with
--no-deps). Python does not process .pth files inside a directory added that way, so an editable
install of ft in the shared environment stays invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

SOURCES = ("framework", "conf", "recipes", "pyproject.toml", "README.md")


def test_the_wheel_package_list_covers_the_source_tree() -> None:
    """pyproject.toml lists packages explicitly (conf/ and recipes/ map into framework/): every
    Python package and every config group of the tree must be in it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    code = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "framework").rglob("__init__.py")
    }
    groups = {
        "framework.conf." + ".".join(p.relative_to(REPO / "conf").parts)
        for p in (REPO / "conf").rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    assert code | groups | {"framework.conf", "framework.recipes"} == listed


def _run(args, cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_elsewhere(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(
            REPO / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}),
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip"]
    _run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        tmp_path,
        env,
    )
    wheel = next((tmp_path / "dist").glob("ft_peft-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).stdout.strip()
    )
    (site / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"
    (work / "model").mkdir(parents=True)
    ft = str(venv / "bin" / "ft")
    where = _run([str(python), "-c", "import framework; print(framework.__file__)"], work, env)
    assert where.stdout.startswith(str(site)), where.stdout

    listing = _run([ft, "list"], work, env).stdout
    assert "sft_smollm2_chat_lora" in listing and "[peft] presets" in listing
    shipped = _run([ft, "validate", "seq_cls_tiny_bert_lora"], work, env).stdout
    assert f"{site}/framework/recipes/seq_cls_tiny_bert_lora.yaml is valid" in shipped

    # A user's recipe extending a shipped one, with the user's own model preset beside it: a tiny
    # Qwen2 no ft family describes (model.name=auto).
    (work / "model" / "tiny_qwen.yaml").write_text("name: auto\nrandom_init: {model_type: qwen2}\n")
    (work / "my_recipe.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          - seq_cls_tiny_bert_lora
          - override model: tiny_qwen
          - _self_
        data: {max_train_examples: 32, max_eval_examples: 8, max_length: 48}
        train: {max_steps: 3, eval_before: false, log_every: 1}
        """)
    )
    mine = _run([ft, "validate", "my_recipe.yaml"], work, env).stdout
    assert "model=tiny_qwen" in mine
    _run([ft, "train", "my_recipe.yaml", "output_root=runs"], work, env, timeout=600)
    summary = json.loads(next((work / "runs" / "my_recipe").glob("*/summary.json")).read_text())
    assert summary["steps"] == 3 and "accuracy" in summary["final"]

    script = _run([ft, "--completion", "bash"], work, env).stdout
    hydra_style = _run([ft, "-sc", "install=bash"], work, env).stdout
    assert script == hydra_style and "complete -o nospace -F _ft_complete ft" in script
    completed = _run(
        [
            "bash",
            "-c",
            script
            + textwrap.dedent("""
        COMP_LINE="ft train seq_cls_tiny_b"; COMP_POINT=${#COMP_LINE}
        COMP_WORDS=(ft train seq_cls_tiny_b); COMP_CWORD=2
        _ft_complete; printf '%s\\n' "${COMPREPLY[@]}"
        COMP_LINE="ft validate my_recipe.yaml peft=lo"; COMP_POINT=${#COMP_LINE}
        _ft_complete; printf '%s\\n' "${COMPREPLY[@]}"
        """),
        ],
        work,
        {**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"},
    ).stdout.splitlines()
    assert "seq_cls_tiny_bert_lora " in completed and "peft=lora " in completed


def test_presets_newer_than_the_installed_peft_are_unavailable(monkeypatch, capsys) -> None:
    """On the lowest peft the wheel allows, the methods that need a newer one are listed as
    unavailable with the version they need, and refused by validation with that sentence."""
    import re

    from framework.commands.listing import print_listing
    from framework.config.path import load_run
    from framework.core.errors import UserError
    from framework.core.plugins import load_all
    from framework.core.registry import PEFT_METHODS
    from framework.peft import base

    load_all()
    floor = re.search(r'"peft>=([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    monkeypatch.setattr(base, "installed_peft", lambda: floor)
    newer = {n for n in PEFT_METHODS.names() if PEFT_METHODS.get(n).unavailable()}
    assert newer == {"gralora", "hira"}, newer  # GraLoRA and HiRA arrived in peft 0.19
    print_listing("peft")
    listed = capsys.readouterr().out
    assert re.search(
        r"gralora +-> gralora +\[unavailable: needs peft >= 0\.19\.0 \(GraloraConfig\), "
        rf"but the installed peft is {floor}",
        listed,
    )
    with pytest.raises(
        UserError,
        match=r"peft=hira: needs peft >= 0\.19\.0 \(HiraConfig\), but the "
        rf"installed peft is {floor}\. Fix: pip install 'peft>=0\.19\.0'",
    ):
        load_run("seq_cls_tiny_bert_lora", ["peft=hira"])
    load_run("seq_cls_tiny_bert_lora", ["peft=delora"])  # 0.18: fine on the floor


@pytest.mark.parametrize("section", ["Your own data", "Your own model", "Your own chat data"])
def test_readme_recipes_validate_as_written(section: str, tmp_path: Path) -> None:
    """The copy-paste recipes of the README's "your own" sections compose and validate as they
    stand (data paths relative to where the user runs ft)."""
    import re

    from framework.config.path import load_run

    readme = (REPO / "README.md").read_text()
    body = re.split(rf"^## {re.escape(section)}\n", readme, maxsplit=1, flags=re.M)[1]
    body = re.split(r"^#{2,} ", body, maxsplit=1, flags=re.M)[0]  # up to the next heading
    recipe = re.search(r"```yaml\n(.*?)```", body, re.S).group(1)
    name = re.search(r"# (\S+\.yaml)", recipe).group(1)
    (tmp_path / name).write_text(recipe)
    sharegpt_chat = {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    }
    for folder, split, row in (
        ("chats", "train.jsonl", sharegpt_chat),
        ("chats", "dev.jsonl", sharegpt_chat),
        ("data", "train.csv", None),
        ("data", "dev.csv", None),
    ):
        (tmp_path / folder).mkdir(exist_ok=True)
        text = json.dumps(row) + "\n" if row else "review,sentiment\ngreat film,pos\n"
        (tmp_path / folder / split).write_text(text)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        run = load_run(str(tmp_path / name), [])
    finally:
        os.chdir(cwd)
    if section == "Your own data":
        assert run.data.name == "files" and run.data.columns == {
            "text": "review",
            "label": "sentiment",
        }
        assert run.data.max_train_examples is None and run.train.epochs == 3
    elif section == "Your own model":
        assert run.model.name == "auto" and run.model.checkpoint == "Qwen/Qwen2.5-0.5B-Instruct"
        assert run.task.name == "seq_cls" and run.peft.target_modules == "all-linear"
    else:
        assert run.task.name == "causal_lm" and run.data.columns == {"messages": "conversations"}
        assert run.model.gguf_file and run.task.train_on == "assistant"
        assert run.train.max_steps is None


def test_user_config_dirs_override_shipped_presets_by_name(tmp_path: Path, capsys) -> None:
    """A user's preset named like a shipped one wins: from the recipe's own directory, from
    `--config-dir`, and from `hydra.searchpath` in the recipe (relative to it)."""
    from framework.cli.app import config_dirs_to_override
    from framework.config.path import load_run

    for folder, rank in (("beside", 3), ("mine", 5), ("declared", 7)):
        (tmp_path / folder / "peft").mkdir(parents=True)
        (tmp_path / folder / "peft" / "lora.yaml").write_text(f"name: lora\nr: {rank}\n")
    (tmp_path / "beside" / "recipe.yaml").write_text(
        "defaults:\n  - seq_cls_tiny_bert_lora\n  - _self_\n"
    )
    run = load_run(str(tmp_path / "beside" / "recipe.yaml"), [])
    assert run.peft.r == 3

    argv = config_dirs_to_override(
        [
            "validate",
            "seq_cls_tiny_bert_lora",
            "--config-dir",
            str(tmp_path / "mine"),
            "train.lr=1e-3",
        ]
    )
    assert argv[:3] == ["validate", "seq_cls_tiny_bert_lora", "train.lr=1e-3"]
    run = load_run(argv[1], argv[2:])
    assert run.peft.r == 5 and run.train.lr == 1e-3

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "declared.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          - seq_cls_tiny_bert_lora
          - _self_
        hydra:
          searchpath: [../declared]
        """)
    )
    run = load_run(str(tmp_path / "recipes" / "declared.yaml"), [])
    assert run.peft.r == 7
    # The same through Hydra's own app (what `ft train` and sweeps run): the recipe's declared
    # dirs are searched there too, before the shipped presets.
    from framework.cli.app import main

    capsys.readouterr()
    assert main(["train", str(tmp_path / "recipes" / "declared.yaml"), "--cfg", "job"]) == 0
    assert "\n  r: 7\n" in capsys.readouterr().out
