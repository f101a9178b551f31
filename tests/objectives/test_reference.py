"""The reference policy, correctly: with a fresh LoRA the policy is the reference (DPO's step-0
loss is ln 2, every margin 0); the reference forward (adapter disabled) gives the log-probs of a
separately loaded base; with model.adapter it gives the starting adapter's (loaded apart with
plain PeftModel.from_pretrained), not the bare base's, and DPO starts at ln 2 again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import train_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LN2 = math.log(2)


def set_up_run(tmp: Path, *overrides: str) -> Any:
    from framework.config.path import load_run
    from framework.training.trainer import set_up

    run = load_run(
        "dpo_tiny_llama_lora", [f"output_root={tmp / 'out'}", "train.batch_size=8", *overrides]
    )
    (tmp / "run").mkdir(exist_ok=True)
    setup = set_up(run, tmp / "run")
    setup.objective.before_loop(setup.context)  # as train() does: dropout off
    return setup


def plain_logps(model: Any, batch: dict[str, Any]) -> Any:
    """Per-token log-probs computed outside ft's objective code (full logits, fp32 log-softmax)
    at the positions ft's forward scores, 0 where nothing is scored."""
    import torch

    from framework.core.batch_keys import TARGETS_KEY

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (targets != -100)
    positions = batch.get(TARGETS_KEY)
    return picked if positions is None else picked.index_select(1, positions)


def policy_and_reference(setup: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per-token log-probs [rows, positions] of the policy and of the reference forward."""
    import torch

    from framework.objectives.logps import token_logps

    context = setup.context
    with torch.no_grad():
        policy, _ = token_logps(context.model, batch, context.logits_only)
    with context.reference():
        reference, _ = token_logps(context.model, batch, context.logits_only)
    return policy, reference


def test_fresh_lora_dpo_starts_at_ln2_with_zero_margins(tmp_path: Path) -> None:
    setup = set_up_run(tmp_path)
    batch = next(iter(setup.train_loader))
    loss, items, metrics = setup.objective.loss_terms(setup.context, batch)
    assert abs(float(loss / items) - LN2) < 1e-6
    policy, reference = policy_and_reference(setup, batch)
    assert policy.shape[0] == 16  # 8 pairs, chosen and rejected in one forward
    margins = (policy - reference).sum(-1)
    assert float(margins.abs().max()) == 0.0  # every pair's margin is 0
    assert float(metrics["rewards/margins"]) == 0.0


def test_reference_is_a_separately_loaded_base(tmp_path: Path) -> None:
    import transformers

    from framework.models.loading import resolve_checkpoint

    setup = set_up_run(tmp_path)
    batch = next(iter(setup.train_loader))
    run = setup.run
    base = transformers.AutoModelForCausalLM.from_pretrained(
        resolve_checkpoint(run.plugins.family, run.model), dtype="float32"
    ).eval()
    _, reference = policy_and_reference(setup, batch)
    assert float((reference - plain_logps(base, batch)).abs().max()) <= 1e-6


def test_reference_with_model_adapter_is_the_starting_adapter(tmp_path: Path) -> None:
    """SFT first (3 steps, a large lr so the adapter is far from the identity), then DPO on top:
    policy and reference both start as that adapter; the bare base differs from them."""
    import transformers
    from peft import PeftModel

    from framework.models.loading import resolve_checkpoint

    sft = train_recipe(
        "sft_tiny_llama_lora",
        "train.max_steps=3",
        "train.lr=0.05",
        "train.eval_every=0",
        output_root=tmp_path / "sft",
    )
    setup = set_up_run(tmp_path, f"model.adapter={sft}")
    batch = next(iter(setup.train_loader))
    policy, reference = policy_and_reference(setup, batch)
    run = setup.run
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype="float32").eval()
    bare = plain_logps(base, batch)
    started = PeftModel.from_pretrained(base, str(sft / "adapter")).eval()
    starting = plain_logps(started, batch)
    assert float((reference - starting).abs().max()) <= 1e-6
    assert float((policy - starting).abs().max()) <= 1e-6
    assert float((reference - bare).abs().max()) > 1e-2  # the reference is not the bare base
    loss, items, _ = setup.objective.loss_terms(setup.context, batch)
    assert abs(float(loss / items) - LN2) < 1e-6


def test_dpo_on_top_of_sft_trains_and_saves_one_adapter(tmp_path: Path) -> None:
    """The whole SFT -> DPO walk-through on a tiny model: the DPO run saves only the trained
    adapter (not the frozen reference), loadable on the base with plain PeftModel."""
    import json

    import transformers
    from peft import PeftModel

    sft = train_recipe("sft_tiny_llama_lora", "train.max_steps=2", output_root=tmp_path / "sft")
    dpo = train_recipe(
        "dpo_tiny_llama_lora", f"model.adapter={sft}", "train.max_steps=2", output_root=tmp_path
    )
    records = [json.loads(line) for line in (dpo / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r.get("split") == "train")
    assert abs(first["loss"] - LN2) < 1e-6 and first["rewards/margins"] == 0.0
    adapter = dpo / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "reference").exists()
    summary = json.loads((dpo / "summary.json").read_text())
    assert summary["primary_metric"] == "rewards/accuracies"
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = transformers.AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    PeftModel.from_pretrained(base, str(adapter))
