"""Composition and validation: every recipe validates, registries and presets match one to one,
and every user error exits 2 with one clear line naming the key, the value and the fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from framework.cli.app import main
from framework.commands.listing import REGISTRY_OF_GROUP
from framework.config.recipe import CONF_DIR, group_presets, recipe_names
from framework.core.plugins import load_all
from tests.helpers import REPO, ft_cli


def run_cli(capsys, *args: str):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_composes_and_validates(recipe, capsys):
    code, out, err = run_cli(capsys, "validate", recipe)
    assert code == 0, err
    assert out.startswith("ok: ")


def test_every_registry_entry_has_a_preset_and_every_preset_an_entry():
    load_all()
    for group, registry in REGISTRY_OF_GROUP.items():
        preset_names = set()
        for preset in group_presets(group):
            text = (CONF_DIR / group / f"{preset}.yaml").read_text()
            node = yaml.safe_load(text) or {}
            # Logger presets compose under their own key (logger=[tensorboard,mlflow]): the
            # package header names the entry.
            package = re.match(rf"# @package {group}\.(\w+)\n", text)
            if package:
                node = {"name": package.group(1), **node}
            assert "name" in node, f"conf/{group}/{preset}.yaml has no 'name'"
            assert node["name"] in registry, (
                f"conf/{group}/{preset}.yaml names unknown '{node['name']}'"
            )
            preset_names.add(node["name"])
        # Data sources 'files'/'hub' and built-ins each need a preset too.
        missing = set(registry.names()) - preset_names
        assert not missing, f"{group}: registry entries without a preset: {sorted(missing)}"


def test_presets_hold_no_import_paths():
    import re

    for path in CONF_DIR.rglob("*.yaml"):
        if path.relative_to(CONF_DIR).parts[0] == "hydra":
            continue  # Hydra's own plugin configs (launchers), not ft's pieces
        text = path.read_text()
        assert not re.search(r"^\s*_target_\s*:", text, re.M), (
            f"{path} uses _target_: ft's pieces are named through registries"
        )


def _bad_recipe(tmp_path: Path, body: str) -> str:
    path = tmp_path / "my_recipe.yaml"
    path.write_text(body)
    return str(path)


BASE = """\
defaults:
  - model: tiny_bert
  - peft: lora
  - task: seq_cls
  - hardware: cpu
  - data: rotten_tomatoes
  - train: quick
  - logger: jsonl
  - _self_
"""


@pytest.mark.parametrize(
    "case, extra_args, body_extra, expected",
    [
        (
            "misspelled key on the command line",
            ["peft.rr=4"],
            "",
            ["peft.rr=4: unknown key (did you mean 'r'?)", "command line", "valid keys here"],
        ),
        (
            "misspelled key in the recipe file",
            [],
            "train:\n  lrr: 0.1\n",
            ["train.lrr: unknown key (did you mean 'lr'?)", "my_recipe.yaml"],
        ),
        (
            "misspelled key in a group, added with +",
            ["+peft.alhpa=3"],
            "",
            ["peft.alhpa: unknown key (did you mean 'alpha'?)", "command line"],
        ),
        ("wrong type", ["train.lr=abc"], "", ["train.lr: must be a number, got 'abc'"]),
        (
            "wrong type, bool",
            ["train.eval_before=maybe"],
            "",
            ["train.eval_before: must be true or false"],
        ),
        (
            "literal choice",
            ["train.scheduler=cosin"],
            "",
            ["train.scheduler", "did you mean 'cosine'?"],
        ),
        (
            "unknown preset",
            ["peft=lorra"],
            "",
            ["peft=lorra: unknown peft preset (did you mean 'lora'?)"],
        ),
        ("unknown group", ["pef=lora"], "", ["pef=lora: unknown key (did you mean 'peft'?)"]),
        (
            "key of another preset",
            ["peft=ia3", "peft.r=8"],
            "",
            ["peft.r=8: unknown key for peft=ia3", "valid keys here: feedforward_modules"],
        ),
        (
            "misspelled group in a key",
            ["trian.lr=0.1"],
            "",
            ["trian.lr=0.1: unknown key 'trian' (did you mean 'train.lr'?)", "valid keys here"],
        ),
        (
            "impossible combination: task vs family",
            ["task=causal_lm"],
            "",
            ["task=causal_lm with model family 'bert': not supported"],
        ),
        (
            "mixed precision on CPU",
            ["hardware.precision=bf16"],
            "",
            ["hardware.precision=bf16: mixed precision needs a GPU"],
        ),
        ("bad value", ["train.batch_size=0"], "", ["train.batch_size=0: must be >= 1"]),
        (
            "bad interval",
            ["train.save_every_minutes=0"],
            "",
            ["train.save_every_minutes=0.0: must be > 0"],
        ),
        (
            "missing data file",
            ["data=files", "+data.source.train=/nope/train.jsonl"],
            "",
            ["data.source.train='/nope/train.jsonl': no such file"],
        ),
    ],
)
def test_user_errors_exit_2_with_one_clear_message(
    case, extra_args, body_extra, expected, tmp_path, capsys
):
    recipe = _bad_recipe(tmp_path, BASE + body_extra)
    code, out, err = run_cli(capsys, "validate", recipe, *extra_args)
    assert code == 2, f"{case}: exit {code}\n{err}"
    assert err.startswith("error: ")
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{case}: {fragment!r} not in {err!r}"


def test_missing_values_are_all_reported_together(tmp_path, capsys):
    recipe = _bad_recipe(
        tmp_path,
        BASE.replace("  - data: rotten_tomatoes\n", "  - data: files\n")
        + "model:\n  random_init: null\n  checkpoint: ???\nseed: ???\n",
    )
    code, _, err = run_cli(capsys, "validate", recipe)
    assert code == 2
    for key in ("model.checkpoint", "seed", "data.source.train"):
        assert f"{key}: missing" in err or f"{key}: missing value" in err, err


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    recipe = _bad_recipe(tmp_path, BASE + "train:\n  lr: [1, 2\n  batch_size: 3\n")
    code, _, err = run_cli(capsys, "validate", recipe)
    assert code == 2
    assert "my_recipe.yaml:" in err and "malformed YAML" in err
    line = int(err.split("my_recipe.yaml:")[1].split(":")[0])
    assert 10 <= line <= 13, err


def test_unknown_recipe_suggests_the_closest(capsys):
    code, _, err = run_cli(capsys, "validate", "seq_cls_minilm_lroa")
    assert code == 2
    assert "did you mean 'seq_cls_minilm_lora'?" in err


def test_validate_never_imports_torch_and_is_fast():
    code = (
        "import sys, time; from framework.cli.app import main; t=time.perf_counter(); "
        "rc = main(['validate', 'seq_cls_minilm_lora']); "
        "print(f'{time.perf_counter()-t:.3f}'); "
        "assert rc == 0; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'accelerate', 'datasets') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seconds = float(result.stdout.strip().splitlines()[-1])
    # 0.3 s on an idle machine (README); the bound leaves room for a loaded CI machine.
    assert seconds < 2.0, f"ft validate took {seconds:.2f}s"


def test_cli_subprocess_error_has_no_traceback():
    result = ft_cli("validate", "seq_cls_tiny_bert_lora", "train.lr=abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[0].startswith("error:")


def test_show_prints_resolved_config_with_overrides(capsys):
    code, out, _ = run_cli(capsys, "show", "seq_cls_tiny_bert_lora", "peft.r=32", "train.lr=3e-4")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["peft"]["r"] == 32 and shown["train"]["lr"] == pytest.approx(3e-4)
    assert shown["recipe"] == "seq_cls_tiny_bert_lora"


def test_list_shows_groups_and_presets(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for group in ("model", "peft", "task", "hardware", "data", "train", "logger"):
        assert f"[{group}]" in out
    code, out, _ = run_cli(capsys, "list", "peft")
    assert code == 0 and "lora" in out and "[model]" not in out
    code, _, err = run_cli(capsys, "list", "pef")
    assert code == 2 and "did you mean 'peft'?" in err


def test_help_lists_groups_presets_and_override_syntax():
    result = ft_cli("train", "--help")
    assert result.returncode == 0
    assert "config groups and presets" in result.stdout
    assert "peft" in result.stdout and "group.key=value" in result.stdout


def test_hydra_cfg_flag_prints_the_composed_job_config():
    result = ft_cli("train", "seq_cls_tiny_bert_lora", "--cfg", "job", "peft.r=4")
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["peft"]["r"] == 4


def test_user_recipe_file_can_extend_a_shipped_recipe(tmp_path, capsys):
    recipe = _bad_recipe(
        tmp_path, "defaults:\n  - seq_cls_tiny_bert_lora\n  - _self_\ntrain:\n  lr: 0.01\n"
    )
    code, out, err = run_cli(capsys, "show", recipe)
    assert code == 0, err
    assert yaml.safe_load(out)["train"]["lr"] == 0.01


@pytest.mark.parametrize("method", ["ia3", "dora", "adalora", "loha", "prompt_tuning"])
def test_a_recipe_can_switch_peft_method(method, capsys):
    code, _, err = run_cli(capsys, "validate", "seq_cls_minilm_lora", f"peft={method}")
    assert code == 0, err


def test_a_run_saved_by_an_older_ft_still_loads(tmp_path):
    """ft eval / predict / resume read saved configs; renamed keys are upgraded, not refused."""
    import yaml

    from framework.config.path import load_run
    from framework.config.schema import load_saved_run

    run = load_run("sft_tiny_llama_lora", [])
    old = dict(run.raw, task={"name": "causal_lm", "mode": "sft", "use_chat_template": False})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    run = load_saved_run(tmp_path)
    assert run.task.format == "prompt_completion" and run.task.chat_template == "none"
