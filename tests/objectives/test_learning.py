"""It learns on real text: the preference recipe on SmolLM2-135M-Instruct (chatterbot pairs,
held-out questions) takes held-out preference accuracy from 0.5 (policy == reference) to >= 0.8
with a rising margin, leaves the base weights bit-equal, and saves an adapter that plain
PeftModel.from_pretrained loads and that ranks the held-out pairs the same way. The pairwise
reward model (reward_smollm2_lora, the same pairs) rises from its random head to >= 0.8 too, and
its saved model scores pairs with plain transformers + PEFT. One slow test each (2-4 minutes on
an idle 2-core machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from framework.training import trainer
from tests.helpers import metrics, train_recipe

pytestmark = pytest.mark.slow
RECIPE = "dpo_smollm2_lora"
REWARD_RECIPE = "reward_smollm2_lora"  # the same pairs; a new head needs more steps


def keep_setup(monkeypatch: Any) -> dict[str, Any]:
    """The trainer's Setup of the next run, taken as finish() receives it."""
    captured: dict[str, Any] = {}
    original = trainer.finish

    def finish(setup: Any, position: Any, baseline: Any) -> Any:
        captured["setup"] = setup
        return original(setup, position, baseline)

    monkeypatch.setattr(trainer, "finish", finish)
    return captured


def padded(rows: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return ids, mask


def sequence_logps(out: Any, labels: Any) -> Any:
    """Summed log-probs of the labelled tokens, computed with plain torch from full logits."""
    import torch

    targets = labels[:, 1:]
    logps = torch.log_softmax(out.logits[:, :-1].float(), -1)
    picked = logps.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * (targets != -100)).sum(-1)


def test_dpo_recipe_learns_and_keeps_the_base(tmp_path: Path, monkeypatch: Any) -> None:
    import torch
    import transformers
    from peft import PeftModel

    captured = keep_setup(monkeypatch)
    run_dir = train_recipe(RECIPE, "train.eval_before=true", output_root=tmp_path)
    evals = metrics(run_dir, "eval")
    before, after = evals[0], evals[-1]
    assert before["step"] == 0 and before["rewards/accuracies"] == 0.5
    assert before["rewards/margins"] == 0.0
    assert after["rewards/accuracies"] >= 0.8, after
    assert after["rewards/margins"] > 0.0
    setup = captured["setup"]
    trained = setup.accelerator.unwrap_model(setup.model).get_base_model()
    checkpoint = trained.config._name_or_path
    base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    fresh = dict(base.named_parameters())
    kept = {
        name.replace(".base_layer", ""): p
        for name, p in trained.named_parameters()
        if "lora_" not in name
    }
    assert kept.keys() == fresh.keys()
    assert all(torch.equal(kept[n], fresh[n]) for n in fresh), "a base weight moved"
    # The saved adapter, loaded with plain peft, prefers the chosen answers of held-out pairs.
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    accurate = total = 0.0
    with torch.no_grad():
        (held_out,) = setup.eval_loaders.values()  # keyed by metric prefix: one held-out split
        for batch in held_out:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            with model.disable_adapter():
                ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            ratio = sequence_logps(logits, batch["labels"]) - sequence_logps(ref, batch["labels"])
            half = ratio.shape[0] // 2
            margin = ratio[:half] - ratio[half:]
            accurate += float((margin > 0).sum() + 0.5 * (margin == 0).sum())
            total += half
    assert accurate / total >= 0.8


def test_reward_model_learns_and_scores_with_plain_peft(tmp_path: Path) -> None:
    import torch
    import transformers
    from peft import PeftModel

    from framework.config.schema import load_run_file
    from framework.core.registry import TASKS
    from framework.data.loading import load_raw_splits
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    run_dir = train_recipe(REWARD_RECIPE, "train.eval_before=true", output_root=tmp_path)
    evals = metrics(run_dir, "eval")
    before, after = evals[0], evals[-1]
    assert (
        after["rewards/accuracies"] >= 0.8
        and after["rewards/accuracies"] > before["rewards/accuracies"] + 0.1
    ), (before, after)
    assert after["rewards/margins"] > before["rewards/margins"]
    # Plain transformers + PEFT: the one-output head scores held-out pairs as ft's eval did.
    run = load_run_file(run_dir / "config.yaml")
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    tokenizer = load_tokenizer(run.plugins.family, run.model, checkpoint)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(
        checkpoint, num_labels=1, pad_token_id=tokenizer.pad_token_id, dtype=torch.float32
    )
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    task = TASKS.get("reward_model")(run.task, run.data, tokenizer, run.plugins.family)
    task.use_objective(run.plugins.objective(run.objective, task), run.train)
    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    pairs = task.tokenize({"validation": raw.splits["validation"]})["validation"]
    ids, mask = padded(
        list(pairs["chosen_input_ids"]) + list(pairs["rejected_input_ids"]), tokenizer.pad_token_id
    )
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    margin = scores[: len(pairs)] - scores[len(pairs) :]
    plain = float((margin > 0).double().mean())
    assert abs(plain - after["rewards/accuracies"]) <= 1 / len(pairs) + 1e-9
