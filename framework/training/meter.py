"""The training loss and token count between two log steps, accumulated on the device so that
the step loop never waits for the device except at a log step."""

from __future__ import annotations

import time
from typing import Any


class LossMeter:
    """Sums micro-batch losses (each a sum over its items), item counts and real tokens on the
    device; the logged loss is the item-weighted mean over all ranks. Named step metrics of the
    objective (rewards/chosen, margins, accuracies, ...) are summed the same way, each with its
    own count, and logged beside the loss."""

    def __init__(self, accelerator: Any):
        import torch

        self.accelerator = accelerator
        # [summed loss, items (label tokens or examples), real tokens], float64 on the device
        self.sums = torch.zeros(3, device=accelerator.device, dtype=torch.float64)
        self.host_tokens = 0
        self.since = time.perf_counter()
        self.metrics: dict[str, Any] = {}  # name -> [sum, count], float64 on the device

    def add(
        self, loss_sum: Any, items: Any, tokens: Any, metrics: dict[str, Any] | None = None
    ) -> None:
        """tokens: a device tensor (attention-mask sum) or a host int (a packed row's length);
        metrics: the objective's {name: sum over the items, or (sum, count)}."""
        import torch

        if metrics:
            from framework.objectives.base import metric_sums

            for name, (total, count) in metric_sums(metrics, items).items():
                pair = torch.stack([total, count])
                self.metrics[name] = self.metrics[name] + pair if name in self.metrics else pair

        if isinstance(tokens, int):  # known on the host: no host-to-device copy
            self.host_tokens += tokens
            tokens = torch.zeros((), device=self.sums.device)
        self.sums += torch.stack([v.to(torch.float64) for v in (loss_sum.detach(), items, tokens)])

    def flush(self) -> dict[str, float]:
        """Mean loss per item (over all ranks), real tokens (all ranks), the interval's seconds
        and real tokens/s since the last flush, and each named metric's mean; one host sync.
        Resets the sums. The intervals tile the step loop, so summing tokens and seconds over the
        train records gives the loop's throughput (bench/ reads them)."""
        import torch

        now = time.perf_counter()
        names = sorted(self.metrics)
        sums = torch.cat([self.sums, *[self.metrics[name] for name in names]])
        sums[2] += self.host_tokens
        loss, items, tokens, *named = self.accelerator.reduce(sums, "sum").tolist()
        seconds = now - self.since
        result = {
            "loss": loss / max(items, 1e-12),
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "tokens": int(tokens),
            "seconds": seconds,
        }
        for index, name in enumerate(names):
            result[name] = named[2 * index] / max(named[2 * index + 1], 1e-12)
        self.metrics = {}
        self.sums.zero_()
        self.host_tokens, self.since = 0, now
        return result
