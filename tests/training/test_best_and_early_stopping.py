"""Best checkpoint (train.keep_best) and early stopping, on a tiny random Llama. The evaluation is
real, but its perplexity is replaced by a scripted, non-monotonic sequence so that which step wins
does not depend on floating-point details of the trajectory."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import metrics, train_recipe

RECIPE = "sft_tiny_llama_lora"
SMALL = [
    "data.max_train_examples=64",
    "data.max_eval_examples=16",
    "train.batch_size=4",
    "train.eval_every=1",
    "train.log_every=1",
    "train.scheduler=constant",
]


def script_perplexity(monkeypatch, values):
    """Each evaluation of the causal_lm task reports the next value of `values` as perplexity."""
    from framework.tasks.causal_lm import CausalLm

    real = getattr(CausalLm.evaluate, "real", CausalLm.evaluate)  # not an earlier script
    queue = list(values)

    def scripted(self, *args, **kwargs):
        return {**real(self, *args, **kwargs), "perplexity": queue.pop(0)}

    scripted.real = real
    monkeypatch.setattr(CausalLm, "evaluate", scripted)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _perplexities(run_dir: Path) -> dict:
    return {r["step"]: r["perplexity"] for r in metrics(run_dir, "eval")}


def test_keeper_direction_delta_and_patience():
    from framework.training.best import BestKeeper

    saved = []
    train = SimpleNamespace(keep_best=True, early_stopping_patience=2, early_stopping_delta=0.05)
    keeper = BestKeeper(train, "accuracy", greater_is_better=True)
    stops = [
        keeper.observe(step, {"accuracy": acc}, lambda s=step: saved.append(s))
        for step, acc in [(1, 0.5), (2, 0.6), (3, 0.64), (4, 0.61)]
    ]
    # 0.64 beats 0.6 by less than the delta: not an improvement; two of those stop the run.
    assert stops == [False, False, False, True] and saved == [1, 2]
    assert keeper.summary()["best"] == {
        "metric": "accuracy",
        "greater_is_better": True,
        "step": 2,
        "value": 0.6,
    }
    assert "early stopping at step 4" in keeper.summary()["stopped_early"]
    lower = BestKeeper(SimpleNamespace(keep_best=True), "eval_loss", greater_is_better=False)
    for step, loss in [(1, 2.0), (2, 1.0), (3, float("nan")), (4, 1.5)]:
        lower.observe(step, {"eval_loss": loss}, lambda: None)
    assert (lower.state.best_step, lower.state.best_value) == (2, 1.0)
    again = BestKeeper(SimpleNamespace(keep_best=True), "eval_loss", greater_is_better=False)
    again.load_state_dict(lower.state_dict())
    assert again.state == lower.state


def test_keep_best_and_early_stopping_need_eval_every():
    from framework.config.path import load_run
    from framework.core.errors import UserError

    with pytest.raises(UserError, match="train.keep_best=true: needs evaluations"):
        load_run(RECIPE, ["train.keep_best=true"])
    with pytest.raises(UserError, match="early_stopping_patience=0: must be >= 1"):
        load_run(RECIPE, ["train.eval_every=2", "train.early_stopping_patience=0"])


def test_keep_best_keeps_the_best_eval_adapter(tmp_path, monkeypatch, one_torch_thread):
    from peft import PeftConfig, PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    script_perplexity(monkeypatch, [50.0, 30.0, 20.0, 25.0, 40.0])
    run_dir = train_recipe(
        RECIPE,
        *SMALL,
        "train.max_steps=5",
        "train.lr=0.03",
        "train.keep_best=true",
        "train.save_every=1",
        "train.keep_last=10",
        output_root=tmp_path,
    )
    ppl = _perplexities(run_dir)
    best_step = 3
    assert min(ppl, key=ppl.get) == best_step, ppl
    best = _summary(run_dir)["best"]
    assert best == {
        "metric": "perplexity",
        "greater_is_better": False,
        "step": best_step,
        "value": ppl[best_step],
    }
    # adapter/ loads in plain PEFT and holds exactly the LoRA weights of the best step's state.
    adapter = run_dir / "adapter"
    base = AutoModelForCausalLM.from_pretrained(
        PeftConfig.from_pretrained(adapter).base_model_name_or_path
    )
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(base, adapter))
    at_best = load_file(
        str(run_dir / "checkpoints" / f"checkpoint-{best_step:08d}" / "model.safetensors")
    )
    assert loaded.keys() == {k.replace(".default", "") for k in at_best if "lora_" in k}
    for key, value in at_best.items():
        if "lora_" in key:
            assert torch.equal(loaded[key.replace(".default", "")], value), key
    last = load_file(str(run_dir / "adapter_last" / "adapter_model.safetensors"))
    assert any(not torch.equal(last[k], loaded[k]) for k in loaded), "adapter_last = last step"
    assert (run_dir / "adapter_last" / "tokenizer.json").exists()


def test_early_stopping_stops_says_why_and_survives_resume(tmp_path, monkeypatch, one_torch_thread):
    # Best at step 1, then three evaluations without improvement: stop at step 4 of 8.
    script_perplexity(monkeypatch, [10.0, 12.0, 11.0, 13.0])
    args = [
        *SMALL,
        "train.max_steps=8",
        "train.lr=0.03",
        "train.early_stopping_patience=3",
        "train.save_every=2",
        "train.keep_last=5",
    ]
    run_dir = train_recipe(RECIPE, *args, output_root=tmp_path)
    summary = _summary(run_dir)
    ppl = _perplexities(run_dir)
    assert summary["steps"] == 4 and sorted(ppl) == [1, 2, 3, 4], ppl
    assert summary["best"]["step"] == 1 and all(ppl[s] > ppl[1] for s in (2, 3, 4))
    assert summary["stopped_early"].startswith(
        "early stopping at step 4: perplexity did not improve by more than 0 for 3 evaluation(s)"
    )
    assert summary["stopped_early"] in (run_dir / "train.log").read_text()
    assert (run_dir / "checkpoints" / "checkpoint-00000004").is_dir()  # the final checkpoint
    assert (run_dir / "curves.png").stat().st_size > 10_000  # drawn at the end of training
    # Resume from step 2: the best (step 1) and the patience count come back from the
    # checkpoint, so the run stops at step 4 again (a fresh count would take step 3 as best).
    checkpoint = run_dir / "checkpoints" / "checkpoint-00000002"
    script_perplexity(monkeypatch, [11.0, 13.0])  # steps 3 and 4 again
    resumed = train_recipe(RECIPE, *args, f"resume={checkpoint}", output_root=tmp_path)
    assert resumed == run_dir
    again = _summary(run_dir)
    assert again["steps"] == 4 and again["best"] == summary["best"]
    assert again["stopped_early"] == summary["stopped_early"]


def test_the_kept_best_is_what_the_run_reports(tmp_path, monkeypatch, one_torch_thread):
    """keep_best under early stopping: summary.json's final, the run's returned metrics, ft report
    and the curves give the kept (best) adapter's evaluation; the last step's is recorded beside
    it. ft eval of adapter/ agrees with final, not with last (HF's load_best_model_at_end)."""
    from framework.commands.inference import evaluate_runs
    from framework.commands.report import report
    from framework.config.path import load_run
    from framework.run.execute import execute

    # Best at step 3, then two evaluations without improvement: stop at step 5 of 8. The last
    # value is for ft eval below.
    script_perplexity(monkeypatch, [50.0, 30.0, 20.0, 25.0, 40.0, 99.0])
    run = load_run(
        RECIPE,
        [
            *SMALL,
            "train.max_steps=8",
            "train.lr=0.03",
            "train.keep_best=true",
            "train.early_stopping_patience=2",
            f"output_root={tmp_path}",
        ],
    )
    finished = execute(run)
    run_dir = finished.run_dir
    summary = _summary(run_dir)
    evals = {
        r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")}
        for r in metrics(run_dir, "eval")
    }
    assert summary["steps"] == 5 and summary["stopped_early"], summary
    assert summary["final"]["perplexity"] == 20.0, "final is not the kept (best) evaluation"
    assert (summary["final_is"], summary["final_step"]) == ("best", 3)
    assert summary["final"] == evals[3]
    assert summary["last"] == evals[5] and summary["last"]["perplexity"] == 40.0
    assert finished.metrics == summary["final"], "a sweep's objective is the kept adapter's"
    # The two adapters differ, and adapter/ evaluates as final says (its real eval loss).
    assert summary["final"]["eval_loss"] != pytest.approx(summary["last"]["eval_loss"], abs=1e-4)
    again = evaluate_runs([run_dir], "validation", hardware="cpu")[str(run_dir)]
    assert again["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], abs=1e-5)
    # ft report: "after" is the kept adapter's, the last step's beside it.
    text = report(run_dir)
    row = next(line for line in text.splitlines() if line.startswith("perplexity"))
    assert row.split()[-2:] == ["20.0000", "40.0000"], text
    assert "the best evaluation at step 3" in text, text
    # Curves: the kept evaluation is marked on the primary metric's panel.
    from framework.training.curves import draw_runs

    figure = draw_runs([(run_dir.name, run_dir)])
    axis = next(a for a in figure.axes if a.get_title() == "perplexity")
    kept = [line for line in axis.get_lines() if line.get_label().startswith("kept")]
    assert [(list(k.get_xdata()), list(k.get_ydata())) for k in kept] == [([3], [20.0])]
    assert kept[0].get_label() == "kept (step 3)"


def test_a_full_disk_while_saving_a_new_best_keeps_the_previous_best(
    tmp_path, monkeypatch, one_torch_thread
):
    """ENOSPC while adapter/ is rewritten for a new best (step 3): the run stops with one line,
    and adapter/ still holds the best so far (step 2), whole; no partial adapter is left."""
    import errno
    import os

    import peft.peft_model
    from safetensors.torch import load_file

    from framework.core.errors import TrainingInterrupted

    script_perplexity(monkeypatch, [50.0, 30.0, 20.0, 25.0])
    real = peft.peft_model.safe_save_file
    exports = []

    def fill_disk_on_third_export(tensors, filename, *args, **kwargs):
        exports.append(filename)
        if len(exports) == 3:
            Path(filename).write_bytes(b"\0" * 10)  # cut short, as a full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(peft.peft_model, "safe_save_file", fill_disk_on_third_export)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_recipe(
            RECIPE,
            *SMALL,
            "train.max_steps=4",
            "train.lr=0.03",
            "train.keep_best=true",
            "train.save_every=1",
            "train.keep_last=10",
            f"run_dir={run_dir}",
            output_root=tmp_path,
        )
    message = str(stopped.value)
    assert stopped.value.exit_code == 1 and "\n" not in message
    assert f"could not write the adapter {run_dir / 'adapter'}" in message
    assert "No space left on device" in message and "MiB free there" in message
    assert f"{run_dir / 'adapter'} is unchanged" in message and "resume=auto" in message
    assert not list(run_dir.glob(".adapter*")), "a partial adapter was left behind"
    kept = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    at_step_2 = load_file(
        str(run_dir / "checkpoints" / "checkpoint-00000002" / "model.safetensors")
    )
    lora = {k.replace(".default", ""): v for k, v in at_step_2.items() if "lora_" in k}
    assert kept.keys() == lora.keys()
    assert all(torch.equal(kept[k], lora[k]) for k in kept), "adapter/ is not step 2's best"
