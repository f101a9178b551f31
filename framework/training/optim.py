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
        return build_sgd(groups, run.train)
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


def build_sgd(groups: list[dict[str, Any]], train: Any) -> Any:
    """SGD with momentum 0.9; fused (train.fused_optimizer) where torch has the kernel, which also
    takes the on-device skip flag (training/steps.py). Its momentum buffers start at zero: torch's
    fused kernel allocates them uninitialised on a first step that found_inf skips and then reads
    them as a momentum (measured on torch 2.13 CPU); with a zero buffer and no dampening the first
    real step is the same as an unfused first step (buffer = gradient)."""
    import torch

    if train.fused_optimizer:
        try:
            optimizer = torch.optim.SGD(
                groups, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay, fused=True
            )
        except (RuntimeError, ValueError):
            pass
        else:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
            return optimizer
    return torch.optim.SGD(groups, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay)
