"""One optimizer step: its micro-batches, the loss normalisation across them, and an update that
never makes the host wait for the device.

Loss normalisation. Each micro-batch's loss is a sum over its items (label tokens for token tasks,
examples otherwise) and the step divides by the items of all its micro-batches on all processes,
counted before the first forward (the `num_items_in_batch` approach). A token then weighs the same
whatever the batch size, grad_accum or world size. The micro-batches of a step are read ahead, so
the step decides itself which micro-batch synchronises gradients (accelerate's `accumulate` would
decide from the dataloader's end, which a read-ahead reaches early).

Non-finite steps. A fused torch optimizer (AdamW, SGD) takes a `found_inf` tensor, as from a
GradScaler: its kernel skips the whole update, step counter included, on the device. The guard
feeds it `not isfinite(grad_norm)` and counts skipped steps on the device; the host reads the count
only at settle points (log, eval, checkpoint, last step). Under nan_policy=stop the flag stays up
until settled, so every update after the first bad one is skipped and the settled state is the
last good one. DeepSpeed steps (or skips, by its own overflow check) inside backward, before ft
sees the norm: its non-finite norms are counted on the device as well and read at settle points.
Two cases keep one host sync per step: fp16 with a GradScaler (the scaler's own found_inf decides
the step, and ft would have to merge its flag into the scaler's private per-optimizer state), and
a method whose on_step reads the gradients (AdaLoRA's importance scores must never see a skipped
step's gradients, and peft's budget allocation reads a threshold to the host itself).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any


def micro_batch_groups(batches: Iterable, size: int) -> Iterator[list[dict[str, Any]]]:
    """The micro-batches of successive optimizer steps: `size` at a time, fewer at the end."""
    group: list[dict[str, Any]] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def loss_scale(objective: Any, group: list[dict[str, Any]], accelerator: Any) -> Any:
    """The factor turning a micro-batch's summed loss into its share of the step's mean: processes x
    grad_accum / items of the step (accelerate divides by grad_accum, DDP averages over processes).
    A device tensor; counting needs no host sync (a collective with several processes)."""
    count = sum(objective.count_items(batch) for batch in group)
    if accelerator.num_processes > 1:
        count = accelerator.reduce(count, "sum")
    return (accelerator.num_processes * accelerator.gradient_accumulation_steps) / count.clamp(
        min=1
    )


def syncing(accelerator: Any, model: Any, sync: bool) -> Any:
    """What accelerate's `accumulate` does, for a sync decision made by the caller: gradients
    reduce across processes (and the optimizer steps) only at the step's last micro-batch."""
    accelerator.gradient_state._set_sync_gradients(sync)  # as transformers' Trainer does
    return contextlib.nullcontext() if sync else accelerator.no_sync(model)


def tokens_in(batch: dict[str, Any]) -> Any:
    """Real tokens of a batch: attention-masked ones, or all of a padding-free packed row."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    ids = batch.get("input_ids")
    return int(ids.numel()) if ids is not None else 0  # shapes are known on the host


class UpdateGuard:
    """Clip, check and apply one update; see the module docstring."""

    def __init__(self, accelerator: Any, optimizer: Any, method: Any, train: Any):
        import torch
        from accelerate.utils import DistributedType

        self.accelerator, self.optimizer, self.train = accelerator, optimizer, train
        self.inner = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper
        # DeepSpeed stepped inside accelerator.backward already: the guard only counts.
        self.library_steps = accelerator.distributed_type == DistributedType.DEEPSPEED
        self.on_device = self.library_steps or (
            bool(getattr(self.inner, "_step_supports_amp_scaling", False))
            and getattr(self.inner, "defaults", {}).get("fused", False)
            and accelerator.scaler is None
            and not method.reads_gradients
        )
        device = accelerator.device
        self.skipped = torch.zeros((), device=device, dtype=torch.long)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)

    def grad_norm(self, model: Any) -> Any:
        clip = self.train.max_grad_norm
        return self.accelerator.clip_grad_norm_(
            model.parameters(), clip if clip is not None else float("inf")
        )

    def update(self, model: Any, step: int) -> bool | None:
        """At the step's last micro-batch: clip and step. Returns whether the update was finite
        (host path), or None when that is known on the device only (see settle)."""
        import torch

        grad_norm = self.grad_norm(model)
        if not self.on_device:
            # One host sync per step: the price of never stepping on NaN without found_inf.
            finite = grad_norm is None or math.isfinite(float(grad_norm))  # DeepSpeed: a float
            if finite:
                self.optimizer.step()
            return finite
        if grad_norm is None:  # DeepSpeed without a norm (ZeRO-1/2 norm computation off)
            self.optimizer.step()
            return None
        bad = ~torch.isfinite(torch.as_tensor(grad_norm, device=self.skipped.device))
        self.first_bad = torch.where(bad & (self.first_bad < 0), step + 1, self.first_bad)
        self.skipped += bad
        if self.library_steps:
            self.optimizer.step()  # a no-op: DeepSpeed's engine stepped in backward
            return None
        if self.train.nan_policy == "stop":
            bad = bad | (self.skipped > 0)  # once bad, skip until settled: keep the last good state
        self.inner.grad_scale = None
        self.inner.found_inf = bad.float()
        self.optimizer.step()
        return None

    def settle(self) -> tuple[int, int]:
        """(steps skipped since the last settle, first skipped step or -1); one host sync."""
        import torch

        if not self.on_device:
            return 0, -1
        skipped, first = torch.stack([self.skipped, self.first_bad]).tolist()
        self.skipped.zero_()
        self.first_bad.fill_(-1)
        return int(skipped), int(first)
