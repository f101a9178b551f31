"""Preference runs as a whole: kill -9 then resume=auto is bit-equal to an uninterrupted run; a
new objective is one module plus one YAML; DDP and ZeRO-3 over 2 CPU processes follow the
1-process DPO run; `ft validate --data` reports pairs it drops; `ft estimate` counts forwards."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_multiprocess import free_port
from tests.e2e.test_resume_and_failures import (
    assert_bit_identical,
    checkpoint_events,
    run,
    start,
    wait_for,
)
from tests.helpers import ft_cli, metrics, train_losses, train_recipe, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RECIPE = "dpo_tiny_llama_lora"


# ---- kill -9 + resume=auto -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, objective: str) -> None:
    """Dropout stays on in the policy (disable_dropout=false, LoRA dropout 0.1) so that the RNG
    stream matters; grad_accum 2 and a kill mid-epoch."""
    extra = [
        f"objective={objective}",
        "objective.disable_dropout=false",
        "peft.dropout=0.1",
        "train.max_steps=10",
        "train.grad_accum=2",
        "train.batch_size=2",
        "train.save_every=3",
        "train.log_every=1",
        "data.max_train_examples=48",
    ]
    reference = tmp_path / "reference"
    code, _, err = run(["train", RECIPE, f"run_dir={reference}", *extra])
    assert code == 0, err
    killed = tmp_path / "killed"
    proc = start(["train", RECIPE, f"run_dir={killed}", *extra])
    seen = wait_for(lambda: any(e["step"] >= 3 for e in checkpoint_events(killed)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert seen and not (killed / "summary.json").exists()
    code, _, err = run(["train", RECIPE, f"run_dir={killed}", *extra, "resume=auto"])
    assert code == 0, err
    assert "resumed from" in err
    assert_bit_identical(reference, killed)
    ours = {r["step"]: r for r in metrics(killed, "train")}
    theirs = {r["step"]: r for r in metrics(reference, "train")}
    for step in (9, 10):  # steps trained after the resume: the same loss and rewards
        for key in ("loss", "rewards/chosen", "rewards/accuracies"):
            assert ours[step][key] == theirs[step][key], (step, key)


# ---- a new objective: one module + one YAML ----------------------------------------------------
OBJECTIVE_MODULE = '''
"""A throw-away objective for the architecture test: the chosen completions' NLL only."""
from framework.core.registry import OBJECTIVES
from framework.objectives.base import PAIRS, Objective
from framework.objectives.logps import sequence_logps, split_pairs


@OBJECTIVES.register("chosen_nll")
class ChosenNll(Objective):
    data_kind = PAIRS
    sequences_per_example = 2
    primary_metric = "nll/chosen"
    greater_is_better = False
    summary = "throw-away test objective"

    def loss_terms(self, context, batch):
        logps, tokens = sequence_logps(context.model, batch, context.logits_only)
        chosen, _ = split_pairs(logps / tokens.clamp(min=1))
        return -chosen.sum(), self.count_items(batch), {"nll/chosen": -chosen.detach().sum()}
'''


@pytest.mark.slow
def test_a_new_objective_is_one_module_plus_one_yaml(tmp_path: Path) -> None:
    import framework.objectives
    from framework.config.path import load_run
    from framework.core.plugins import load_all
    from framework.core.registry import OBJECTIVES
    from framework.run.execute import execute

    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "chosen_nll.py").write_text(OBJECTIVE_MODULE)
    recipes = tmp_path / "recipes"
    (recipes / "objective").mkdir(parents=True)
    (recipes / "objective" / "chosen_nll.yaml").write_text("name: chosen_nll\n")
    recipe = recipes / "nll.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "defaults": [RECIPE, {"override objective": "chosen_nll"}, "_self_"],
                "train": {"max_steps": 2, "log_every": 1},
            }
        )
    )
    framework.objectives.__path__.append(str(plugin_dir))
    try:
        load_all()
        assert "chosen_nll" in OBJECTIVES.names()
        run = load_run(str(recipe), [f"output_root={tmp_path / 'out'}"])
        assert run.origin.choices["objective"] == "chosen_nll"
        finished = execute(run)
        rows = metrics(finished.run_dir, "train")
        assert [r["step"] for r in rows] == [1, 2]
        assert all(
            r["nll/chosen"] > 0 and r["loss"] == pytest.approx(r["nll/chosen"]) for r in rows
        )
        summary = json.loads((finished.run_dir / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["primary_metric"] == "nll/chosen"
        assert "nll/chosen" in summary["final"]
    finally:
        framework.objectives.__path__.remove(str(plugin_dir))
        OBJECTIVES._entries.pop("chosen_nll", None)
        sys.modules.pop("framework.objectives.chosen_nll", None)


# ---- DDP and ZeRO-3 ------------------------------------------------------------------------------
COMMON = [
    "train.max_steps=4",
    "train.log_every=1",
    "peft.dropout=0",
    "data.max_train_examples=64",
    "train.scheduler=linear",
]


@pytest.fixture(scope="module")
def single_dpo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single-dpo")
    return train_recipe(RECIPE, *COMMON, "train.batch_size=8", output_root=out)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ddp", "zero3"])
def test_two_processes_follow_one_process(preset: str, single_dpo: Path, tmp_path: Path) -> None:
    """2 CPU processes x 4 pairs against 1 x 8: the same pairs per step, the reference forward
    included (ZeRO-3 gathers the sharded weights for it too)."""
    launched = train_recipe(
        RECIPE,
        *COMMON,
        f"hardware={preset}",
        "train.batch_size=4",
        "hardware.device=cpu",
        "hardware.num_processes=2",
        f"hardware.main_process_port={free_port()}",
        output_root=tmp_path,
    )
    ours, reference = train_losses(launched), train_losses(single_dpo)
    assert len(ours) == len(reference) == 4
    assert max(abs(a - b) for a, b in zip(ours, reference)) < 1e-5, (ours, reference)
    margins = [r["rewards/margins"] for r in metrics(launched, "train")]
    expected = [r["rewards/margins"] for r in metrics(single_dpo, "train")]
    assert max(abs(a - b) for a, b in zip(margins, expected)) < 1e-5


# ---- ft validate --data and ft estimate --------------------------------------------------------
def test_validate_data_reports_bad_pairs(tmp_path: Path) -> None:
    rows = [
        {"prompt": "hi", "chosen": "hello there", "rejected": "go away"},
        {"prompt": "hi", "chosen": "same", "rejected": "same"},
        {"prompt": "hi", "chosen": "", "rejected": "no"},
        {"prompt": "bye", "chosen": "see you", "rejected": "what"},
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    done = ft_cli(
        "validate",
        RECIPE,
        "--data",
        "data=files",
        f"data.source.train={data}",
        f"data.source.validation={data}",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "1 dropped: identical chosen and rejected" in out, out
    assert "1 dropped: an empty completion" in out, out
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "hi", "chosen": "x"}])
    done = ft_cli(
        "validate",
        RECIPE,
        "--data",
        "data=files",
        f"data.source.train={missing}",
        f"data.source.validation={missing}",
    )
    assert done.returncode == 2 and "no preference columns" in done.stderr, done.stderr


def test_estimate_counts_the_objectives_forwards() -> None:
    done = ft_cli("estimate", RECIPE, "train.batch_size=4")
    assert done.returncode == 0, done.stderr
    assert "2 sequences per example in one forward with gradients (8 rows)" in done.stdout
    assert "1 forward(s) without" in done.stdout
