"""Every refused preference combination is one line naming the key, the value and the fix, exit 2,
and nothing written: each method that is not the identity at initialisation x each
reference-based objective, beta <= 0, an adapter of another base or method, an objective whose
batches the task does not give."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.core.errors import UserError
from framework.core.plugins import load_all
from framework.core.registry import OBJECTIVES, PEFT_METHODS
from tests.helpers import REPO, ft_cli, train_recipe

load_all()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REFERENCE_BASED = [n for n in OBJECTIVES.names() if OBJECTIVES.get(n).reference_based]
# conf/peft presets (and LoRA inits) that are not the identity at initialisation, on CPU
NOT_IDENTITY = [
    ("pissa", ()),
    ("olora", ()),
    ("lora", ("peft.init=false",)),
    ("prompt_tuning", ()),
    ("p_tuning", ()),
    ("prefix_tuning", ()),
    ("c3a", ()),
    ("fourierft", ()),
    ("vblora", ()),
]


def refusal(tmp: Path, *overrides: str, recipe: str = "dpo_tiny_llama_lora") -> str:
    """The UserError of validating the recipe with overrides, checked to be one line."""
    from framework.config.path import load_run

    with pytest.raises(UserError) as caught:
        load_run(recipe, [f"output_root={tmp / 'out'}", *overrides])
    message = str(caught.value)
    assert "\n" not in message, message
    assert not (tmp / "out").exists()
    return message


def test_the_list_covers_every_method_that_is_not_the_identity() -> None:
    """NOT_IDENTITY holds every CPU method whose default preset answers not identity."""
    import yaml

    declared = set()
    for path in (REPO / "conf" / "peft").glob("*.yaml"):
        node = yaml.safe_load(path.read_text())
        method = PEFT_METHODS.get(node["name"])
        params = method.Params(**node)
        if not method.needs_cuda and not method.identity_at_init(params):
            declared.add(path.stem)
    assert declared == {p for p, extra in NOT_IDENTITY if not extra}


@pytest.mark.parametrize("objective", REFERENCE_BASED)
@pytest.mark.parametrize("preset,extra", NOT_IDENTITY, ids=[p for p, _ in NOT_IDENTITY])
def test_non_identity_method_with_reference_based_objective(
    tmp_path: Path, preset: str, extra: tuple, objective: str
) -> None:
    message = refusal(tmp_path, f"peft={preset}", f"objective={objective}", *extra)
    assert f"with objective={objective}" in message and "peft=" in message
    assert "Fix: peft=lora with peft.init=true" in message
    if OBJECTIVES.get(objective).data_kind == "pairs":  # the reference-free ones are offered
        assert "or objective=simpo" in message and "or objective=orpo" in message


@pytest.mark.parametrize("objective", ["dpo", "kto", "simpo", "orpo"])
@pytest.mark.parametrize("beta", ["0", "-0.1"])
def test_beta_must_be_positive(tmp_path: Path, objective: str, beta: str) -> None:
    message = refusal(tmp_path, f"objective={objective}", f"objective.beta={beta}")
    assert f"objective.beta={float(beta)}" in message and "Fix: objective.beta=" in message


def test_an_objective_the_task_cannot_feed(tmp_path: Path) -> None:
    message = refusal(tmp_path, "objective=dpo", recipe="sft_tiny_llama_lora")
    assert "objective=dpo with task=causal_lm" in message and "Fix: task=preference" in message
    message = refusal(tmp_path, "objective=bradley_terry")
    assert "Fix: task=reward_model" in message


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    return train_recipe(
        "sft_tiny_llama_lora", "train.max_steps=1", output_root=tmp_path_factory.mktemp("sft")
    )


def test_an_adapter_of_another_base(tmp_path: Path, sft_run: Path) -> None:
    message = refusal(tmp_path, f"model.adapter={sft_run}", "model.random_init.hidden_size=32")
    assert f"model.adapter={sft_run}: trained on another base" in message
    assert "model.random_init" in message and "Fix:" in message
    message = refusal(tmp_path, f"model.adapter={sft_run}", "model=tiny_gpt2")
    assert "model.name: adapter's 'llama', this run's 'gpt2'" in message


def test_an_adapter_of_another_method_or_no_adapter(tmp_path: Path, sft_run: Path) -> None:
    message = refusal(tmp_path, f"model.adapter={sft_run}", "peft=ia3")
    assert "a LORA adapter, but peft=ia3 makes IA3 adapters" in message
    message = refusal(tmp_path, f"model.adapter={tmp_path}")
    assert "no adapter there" in message


def test_the_command_line_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = ft_cli("train", "dpo_tiny_llama_lora", "peft=pissa", f"output_root={out}")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "peft.init=pissa" in lines[0] and "objective=dpo" in lines[0], (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not out.exists()
