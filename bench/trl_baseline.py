"""The peer route of `make bench`'s preference workload: TRL's DPOTrainer + PEFT written the plain
documented way (TRL's DPO quickstart: AutoModelForCausalLM, a LoraConfig passed as peft_config,
a datasets.Dataset of prompt/chosen/rejected conversations, DPOConfig, DPOTrainer.train()), with
the settings that make it fastest on this machine: no gradient checkpointing (the memory fits).

    python bench/trl_baseline.py SPEC.json

SPEC.json (written by bench/cpu_bench.py from the ft recipe's resolved config):
  checkpoint      local model directory
  train_file      JSON Lines rows {prompt, chosen, rejected} as lists of role/content turns:
                  the same pairs, in the same order, as the ft route trains on
  max_length, lora {r, alpha, dropout, target_modules}, beta,
  train {batch_size, grad_accum, epochs, lr, weight_decay, warmup_steps, max_grad_norm,
         scheduler, seed}
  output_dir      where the adapter (adapter/) and result.json go

result.json: train_seconds (DPOTrainer.train's loop, on_train_begin to on_train_end: the span
ft's train records cover), steps, train_loss.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(spec_path: str) -> int:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, TaskType
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["output_dir"])
    lora, train = spec["lora"], spec["train"]
    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_dataset("json", data_files=spec["train_file"], split="train")
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    peft_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
    )

    class Timer(TrainerCallback):
        """Wall time of the training loop (seconds), without model loading and saving."""

        start = seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    args = DPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=train["batch_size"],
        gradient_accumulation_steps=train["grad_accum"],
        num_train_epochs=train["epochs"],
        learning_rate=train["lr"],
        weight_decay=train["weight_decay"],
        lr_scheduler_type=train["scheduler"],
        warmup_steps=train["warmup_steps"],
        max_grad_norm=train["max_grad_norm"],
        beta=spec["beta"],
        max_length=spec["max_length"],
        gradient_checkpointing=False,  # TRL's default is on; off is faster where memory fits
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=train["seed"],
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    result = trainer.train()
    trainer.model.save_pretrained(str(out / "adapter"))
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
