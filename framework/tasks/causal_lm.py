"""CAUSAL_LM: instruction/response SFT with the loss on response tokens only (through the
tokenizer's chat template when it has one), or plain-text language modelling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional

from framework.registry import TASKS
from framework.tasks.base import Task, TaskParams, safe_exp

IGNORE_INDEX = -100  # label value the loss skips


@dataclass(kw_only=True)
class CausalLmParams(TaskParams):
    mode: Literal["sft", "lm"] = "sft"  # sft: prompt -> response pairs; lm: plain text
    use_chat_template: bool = True  # wrap SFT turns in the tokenizer's chat template if it has one
    system_prompt: Optional[str] = None  # prepended as a system turn (chat template only)
    generate_eval: bool = False  # also generate answers on eval and score exact match / ROUGE-L
    max_new_tokens: int = 32  # tokens generated per eval example when generate_eval
    max_generate_examples: int = 64  # eval examples scored by generation (it is slow)


@TASKS.register("causal_lm")
class CausalLm(Task):
    Params = CausalLmParams
    auto_model = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    model_kinds = frozenset({"decoder"})
    primary_metric = "perplexity"
    greater_is_better = False
    summary = "SFT (loss on responses only, chat template) or plain LM; perplexity"

    def roles(self) -> Dict[str, bool]:
        if self.params.mode == "sft":
            return {"prompt": True, "response": True}
        return {"text": True}

    def artifacts(self) -> Dict[str, Any]:
        return {"task": "causal_lm", "mode": self.params.mode}

    # ---- prompts -----------------------------------------------------------------------------
    def _use_template(self) -> bool:
        return self.params.use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_text(self, prompt: str) -> str:
        """The text the model sees before its answer (plain text in lm mode)."""
        if self.params.mode == "lm":
            return prompt
        if self._use_template():
            messages = ([{"role": "system", "content": self.params.system_prompt}]
                        if self.params.system_prompt else [])
            messages.append({"role": "user", "content": prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        return f"{prompt}\n"

    def _answer_suffix(self) -> str:
        # With ChatML-like templates the turn closes with an end marker the model must learn.
        if self._use_template() and "<|im_end|>" in self.tokenizer.get_vocab():
            return "<|im_end|>"
        return ""

    def _ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_sft(self, prompt: str, response: str) -> Dict[str, List[int]]:
        """input_ids = [bos] prompt response [end] eos; labels mask everything but the response."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None \
            and not self._use_template() else []
        prompt_ids = bos + self._ids(self.prompt_text(prompt))
        answer_ids = self._ids(response + self._answer_suffix()) + [self.tokenizer.eos_token_id]
        input_ids = (prompt_ids + answer_ids)
        labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        if self.data.truncation:
            input_ids, labels = input_ids[:self.data.max_length], labels[:self.data.max_length]
        return {"input_ids": input_ids, "labels": labels}

    def encode_lm(self, text: str) -> Dict[str, List[int]]:
        ids = self.tokenizer(text)["input_ids"] + [self.tokenizer.eos_token_id]
        if self.data.truncation:
            ids = ids[:self.data.max_length]
        return {"input_ids": ids, "labels": list(ids)}

    # ---- data --------------------------------------------------------------------------------
    def tokenize(self, splits: Any) -> Any:
        def encode(batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
            if self.params.mode == "sft":
                rows = [self.encode_sft(str(p), str(r)) for p, r in
                        zip(batch[self.column("prompt")], batch[self.column("response")])]
            else:
                rows = [self.encode_lm(str(t)) for t in batch[self.column("text")]]
            return {"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]}

        tokenized = {}
        for split, dataset in splits.items():
            encoded = self.encode_split(dataset, split, encode)
            # An example whose response was cut off entirely teaches nothing: drop it.
            tokenized[split] = encoded.filter(lambda ex: any(l != IGNORE_INDEX for l in ex["labels"]))
        return tokenized

    def collate(self, features: List[Dict[str, Any]]) -> Dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):  # right padding for training
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: Any, loader: Any, accelerator: Any, raw: Any = None) -> Dict[str, float]:
        import torch

        # Token-weighted mean loss, so perplexity is per token, not per batch.
        totals = torch.zeros(2, device=accelerator.device)
        with torch.no_grad():
            for batch in loader:
                loss = model(**batch).loss.float()
                tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
                totals += torch.stack([loss * tokens, tokens.float()])
        totals = accelerator.reduce(totals, reduction="sum")
        mean = float(totals[0] / totals[1].clamp(min=1))
        result = {"eval_loss": mean, "perplexity": safe_exp(mean)}
        if self.params.generate_eval and self.params.mode == "sft" and raw is not None:
            result.update(self.generation_metrics(accelerator.unwrap_model(model), raw,
                                                  accelerator.device))
        return result

    def generate(self, model: Any, prompts: List[str], device: Any) -> List[str]:
        """Greedy answers for prompts, batched with left padding."""
        import torch

        self.tokenizer.padding_side = "left"
        try:
            texts = [self.prompt_text(p) for p in prompts]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True,
                                 add_special_tokens=not (self._use_template() and self.params.mode == "sft")).to(device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=self.params.max_new_tokens,
                                     do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        finally:
            self.tokenizer.padding_side = "right"
        answers = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                              skip_special_tokens=True)
        return [a.split("<|im_end|>")[0].strip() for a in answers]

    def generation_metrics(self, model: Any, raw: Any, device: Any) -> Dict[str, float]:
        from framework import metrics

        rows = raw.select(range(min(len(raw), self.params.max_generate_examples)))
        prompts = [str(p) for p in rows[self.column("prompt")]]
        golds = [str(r) for r in rows[self.column("response")]]
        answers: List[str] = []
        for start in range(0, len(prompts), 16):
            answers += self.generate(model, prompts[start:start + 16], device)
        scores = metrics.squad_metrics(answers, [[g] for g in golds])
        return {"exact_match": scores["exact_match"],
                "rougeL": metrics.rouge_scores(answers, golds)["rougeL"]}

    def predict(self, model: Any, rows: List[Dict[str, Any]], device: Any) -> List[Dict[str, Any]]:
        column = self.column("prompt") if self.params.mode == "sft" else self.column("text")
        return [{"generated": text} for text in self.generate(model, [str(r[column]) for r in rows],
                                                              device)]
