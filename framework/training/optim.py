"""Optimizer and learning-rate schedule of a run. Steps are optimizer steps."""

from __future__ import annotations

from typing import Any


def build_optimizer(run: Any, model: Any) -> Any:
    """The PEFT method's parameter groups (LoRA+: B matrices at their own lr) in the hardware
    profile's optimizer when it needs one (DeepSpeed's CPU Adam for ZeRO-Offload), else torch's."""
    import torch

    groups = run.plugins.method.param_groups(run.peft, model, run.train)
    profile_optimizer = run.plugins.profile.build_optimizer(run.hardware, groups, run.train)
    if profile_optimizer is not None:
        return profile_optimizer
    if run.train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=run.train.lr, momentum=0.9, weight_decay=run.train.weight_decay
        )
    if run.train.fused_optimizer:
        # One kernel per device for the whole update; it also takes the on-device skip flag
        # (training/steps.py). Falls back where a parameter's dtype or device has no fused kernel.
        try:
            return torch.optim.AdamW(
                groups, lr=run.train.lr, weight_decay=run.train.weight_decay, fused=True
            )
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, lr=run.train.lr, weight_decay=run.train.weight_decay)


def build_scheduler(run: Any, optimizer: Any, total_steps: int) -> Any:
    """transformers' schedule by name, warming up for train.warmup_ratio of the steps."""
    from transformers import get_scheduler

    return get_scheduler(
        run.train.scheduler,
        optimizer,
        num_warmup_steps=int(run.train.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
