"""The peer routes of `make bench`: HF Trainer + PEFT written the documented way
(transformers' fine-tuning tutorial and peft's LoRA quicktour: AutoModelFor*, get_peft_model with
a LoraConfig, a datasets.Dataset, TrainingArguments, a data collator, Trainer.train()), plain or
with the speed options a speed-minded user turns on, or TRL's SFTTrainer padding-free.

    python bench/hf_baseline.py SPEC.json

Routes (spec "route"; CONFIGURATIONS below says each one's settings in words):
  hf_plain   Trainer defaults; padding per batch (DataCollatorWithPadding / ForSeq2Seq)
  hf_tuned   + logging_nan_inf_filter=False (no host sync per step for the NaN filter), and for
             SFT DataCollatorWithFlattening (padding-free rows, position ids restarting per
             example: transformers' documented way); classification gets length-grouped batches
             (the order file below holds them)
  trl        SFT only: trl.SFTTrainer with padding_free=True (TRL's padding-free collator and its
             fused LM head), logging_nan_inf_filter=False
Every route reads its rows from train_file in the order they are written and trains them in that
order (train_sampling_strategy="sequential"): cpu_bench.py writes ft's own order, so every route
sees the same batches as ft.

SPEC.json (written by bench/cpu_bench.py from the ft recipe's resolved config, so that both
routes use the same checkpoint, examples, LoRA settings, lr, schedule and steps):
  task            seq_cls | causal_lm
  checkpoint      local model directory
  train_file      JSON Lines: seq_cls rows {text, label (id)}; causal_lm rows {input_ids, labels}
                  (chat-templated by ft's tokenizer code, labels -100 outside assistant turns:
                  plain transformers has no assistant-only masking for a template without
                  {% generation %} tags, so both routes take the same token ids)
  num_labels, max_length, pad_token_id, lora {r, alpha, dropout, target_modules},
  train {batch_size, grad_accum, epochs, lr, weight_decay, warmup_steps, max_grad_norm,
         scheduler, seed}
  output_dir      where the adapter (adapter/) and result.json go

result.json: train_seconds (Trainer.train's loop, from on_train_begin to on_train_end, the
same span ft's train records cover), steps, train_loss.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CONFIGURATIONS = {
    "hf_plain": "HF Trainer + PEFT, defaults (padding per batch)",
    "hf_tuned": (
        "HF Trainer + PEFT tuned: logging_nan_inf_filter=False; SFT: DataCollatorWithFlattening "
        "(padding-free); classification: length-grouped batches (ft's grouped order)"
    ),
    "trl": "TRL SFTTrainer, padding_free=True (its fused LM head), logging_nan_inf_filter=False",
}


def main(spec_path: str) -> int:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    spec = json.loads(Path(spec_path).read_text())
    route = spec.get("route", "hf_plain")
    tuned = route in ("hf_tuned", "trl")
    out = Path(spec["output_dir"])
    lora, train = spec["lora"], spec["train"]
    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_dataset("json", data_files=spec["train_file"], split="train")

    if spec["task"] == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(
            spec["checkpoint"], num_labels=spec["num_labels"], dtype=torch.float32
        )
        task_type = TaskType.SEQ_CLS
        dataset = dataset.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=spec["max_length"]),
            batched=True,
            remove_columns=["text"],
        )
        collator = DataCollatorWithPadding(tokenizer)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
        task_type = TaskType.CAUSAL_LM
        # Rows carry input_ids and labels (-100 outside the trained turns): the collator for
        # inputs with labels pads input_ids with the pad id and labels with -100.
        tokenizer.pad_token_id = spec["pad_token_id"]
        collator = (
            DataCollatorWithFlattening()  # one row, position ids per example, first label -100
            if route == "hf_tuned"
            else DataCollatorForSeq2Seq(tokenizer, padding=True)
        )

    lora_config = LoraConfig(
        task_type=task_type,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
    )
    if route != "trl":  # SFTTrainer wraps the model itself from peft_config
        model = get_peft_model(model, lora_config)

    class Timer(TrainerCallback):
        """Wall time of the training loop (seconds), without model loading and saving."""

        start = seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    common = {
        "output_dir": str(out / "trainer"),
        "per_device_train_batch_size": train["batch_size"],
        "gradient_accumulation_steps": train["grad_accum"],
        "num_train_epochs": train["epochs"],
        "learning_rate": train["lr"],
        "weight_decay": train["weight_decay"],
        "lr_scheduler_type": train["scheduler"],
        "warmup_steps": train["warmup_steps"],
        "max_grad_norm": train["max_grad_norm"],
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "seed": train["seed"],
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": True,
        "train_sampling_strategy": "sequential",  # the rows' order is ft's (see the docstring)
        "logging_nan_inf_filter": not tuned,
    }
    if route == "trl":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(
                **common,
                padding_free=True,
                max_length=None,  # rows arrive cut to ft's max_length
                dataset_num_proc=None,
            ),
            train_dataset=dataset,  # input_ids + labels: TRL takes them as they are
            processing_class=tokenizer,
            peft_config=lora_config,
            callbacks=[timer],
        )
        model = trainer.model
    else:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=dataset,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
        )
    result = trainer.train()
    model.save_pretrained(str(out / "adapter"))
    (out / "result.json").write_text(
        json.dumps(
            {
                "train_seconds": timer.seconds,
                "steps": result.global_step,
                "train_loss": result.training_loss,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
