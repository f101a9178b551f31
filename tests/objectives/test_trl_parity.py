"""Parity with TRL 1.16 (the test-only reference): the same tiny random Llama, the same pairs in
the same single batch, the same LoRA initialisation, learning rate, schedule and clipping, no
dropout; per-step training losses within 1e-4 for 5 steps. DPO (sigmoid) against DPOTrainer,
KTO against KTOTrainer, and SimPO (reference-free) against TRL's CPOTrainer(loss_type=simpo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import metrics, train_recipe, write_jsonl

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

STEPS, LR, BETA = 5, 5e-3, 0.1
# ChatML without a newline after <|im_end|>: TRL scores every token after the prompt, ft the
# assistant turn (content + end marker); with nothing after the marker the two are the same.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTIONS = [
    ("what is your name", "my name is ft", "the sky is blue"),
    ("do you like music", "yes i love music", "seven apples"),
    ("where do you live", "i live in a computer", "no thank you"),
    ("how old are you", "i am very young", "the train is late"),
]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def ft_run(tmp: Path, objective: str, data: Path, *extra: str) -> tuple[list[float], Any]:
    recipe = tmp / "parity.yaml"  # the template in YAML: a command line would escape its \n
    recipe.write_text(
        yaml.safe_dump(
            {"defaults": ["dpo_tiny_llama_lora", "_self_"], "task": {"chat_template": TEMPLATE}}
        )
    )
    run_dir = train_recipe(
        str(recipe),
        f"objective={objective}",
        "data=files",
        f"data.source.train={data}",
        f"data.source.validation={data}",  # no validation carved out of the 4 rows
        "peft.dropout=0.0",
        f"train.max_steps={STEPS}",
        f"train.lr={LR}",
        "train.batch_size=4",
        "train.log_every=1",
        "train.warmup_ratio=0.0",
        "train.scheduler=linear",
        *extra,
        output_root=tmp / f"ft-{objective}",
    )
    return [r["loss"] for r in metrics(run_dir, "train")], run_dir


def base_and_lora(tmp: Path) -> tuple[Any, Any, Any]:
    """The tiny Llama (as ft resolves it), its tokenizer with TEMPLATE, and ft's own LoraConfig
    for it; seeded exactly as ft seeds before adding the adapter."""
    import transformers

    from framework.config.path import load_run
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    run = load_run("dpo_tiny_llama_lora", [f"output_root={tmp / 'unused'}", "peft.dropout=0.0"])
    family = run.plugins.family
    checkpoint = resolve_checkpoint(family, run.model)
    tokenizer = load_tokenizer(family, run.model, checkpoint)
    tokenizer.chat_template = TEMPLATE
    base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint)
    config = run.plugins.method.build(run.peft, run.task.name, family, base.config)
    return base, tokenizer, config


def trl_losses(trainer: Any) -> list[float]:
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def trl_args(config_class: Any, tmp: Path, **extra: Any) -> Any:
    return config_class(
        output_dir=str(tmp / "trl"),
        per_device_train_batch_size=4,
        max_steps=STEPS,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        **extra,
    )


def peft_model(base: Any, config: Any) -> Any:
    from accelerate.utils import set_seed
    from peft import get_peft_model

    set_seed(0)  # as ft does right before get_peft_model (run.seed=0)
    return get_peft_model(base, config)


def test_dpo_sigmoid_matches_trl_dpo_trainer(tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [
        {"prompt": user(q), "chosen": assistant(c), "rejected": assistant(r)}
        for q, c, r in QUESTIONS
    ]
    ours, _ = ft_run(tmp_path, "dpo", write_jsonl(tmp_path / "pairs.jsonl", rows))
    base, tokenizer, config = base_and_lora(tmp_path)
    trainer = DPOTrainer(
        model=peft_model(base, config),
        args=trl_args(DPOConfig, tmp_path, beta=BETA, max_length=None, loss_type=["sigmoid"]),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    theirs = trl_losses(trainer)
    print(f"max |ft - TRL| per-step loss: {max(abs(a - b) for a, b in zip(ours, theirs)):.2e}")
    assert len(ours) == len(theirs) == STEPS
    assert abs(ours[0] - 0.6931471805599453) < 1e-6  # ln 2: policy == reference at step 0
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4, (ours, theirs)
    assert ours[-1] < ours[0] - 1e-3  # it moved: the comparison is not of constants


def test_kto_matches_trl_kto_trainer(tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    rows = [
        {"prompt": user(q), "completion": assistant(c if i % 2 == 0 else r), "label": i % 2 == 0}
        for i, (q, c, r) in enumerate(QUESTIONS)
    ]
    ours, _ = ft_run(tmp_path, "kto", write_jsonl(tmp_path / "unpaired.jsonl", rows))
    base, tokenizer, config = base_and_lora(tmp_path)
    trainer = KTOTrainer(
        model=peft_model(base, config),
        args=trl_args(KTOConfig, tmp_path, beta=BETA, max_length=None),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    theirs = trl_losses(trainer)
    print(f"max |ft - TRL| per-step loss: {max(abs(a - b) for a, b in zip(ours, theirs)):.2e}")
    assert len(ours) == len(theirs) == STEPS
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4, (ours, theirs)
    assert ours[-1] < ours[0] - 1e-4


def test_simpo_matches_trl_cpo_trainer_with_simpo_loss(tmp_path: Path) -> None:
    """Reference-free: SimPO as TRL implements it (CPOTrainer, loss_type=simpo, no NLL term).
    CPO renders plain text (bos + prompt + completion + eos): ft's task.chat_template=none."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    rows = [{"prompt": q + "\n", "chosen": c, "rejected": r} for q, c, r in QUESTIONS]
    data = write_jsonl(tmp_path / "plain.jsonl", rows)
    ours, _ = ft_run(tmp_path, "simpo", data, "task.chat_template=none")
    base, tokenizer, config = base_and_lora(tmp_path)
    trainer = CPOTrainer(
        model=peft_model(base, config),
        args=trl_args(
            CPOConfig, tmp_path, loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    theirs = trl_losses(trainer)
    print(f"max |ft - TRL| per-step loss: {max(abs(a - b) for a, b in zip(ours, theirs)):.2e}")
    assert len(ours) == len(theirs) == STEPS
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4, (ours, theirs)
