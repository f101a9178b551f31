"""The training loss and token count between two log steps, accumulated on the device so that
the step loop never waits for the device except at a log step."""

from __future__ import annotations

import time
from typing import Any


class LossMeter:
    """Sums micro-batch losses (each a sum over its items), item counts and real tokens on the
    device; the logged loss is the item-weighted mean over all ranks."""

    def __init__(self, accelerator: Any):
        import torch

        self.accelerator = accelerator
        # [summed loss, items (label tokens or examples), real tokens], float64 on the device
        self.sums = torch.zeros(3, device=accelerator.device, dtype=torch.float64)
        self.host_tokens = 0
        self.since = time.perf_counter()

    def add(self, loss_sum: Any, items: Any, tokens: Any) -> None:
        """tokens: a device tensor (attention-mask sum) or a host int (a packed row's length)."""
        import torch

        if isinstance(tokens, int):  # known on the host: no host-to-device copy
            self.host_tokens += tokens
            tokens = torch.zeros((), device=self.sums.device)
        self.sums += torch.stack([v.to(torch.float64) for v in (loss_sum.detach(), items, tokens)])

    def flush(self) -> dict[str, float]:
        """Mean loss per item (over all ranks), real tokens (all ranks), the interval's seconds
        and real tokens/s since the last flush; one host sync. Resets the sums. The intervals
        tile the step loop, so summing tokens and seconds over the train records gives the
        loop's throughput (bench/ reads them)."""
        now = time.perf_counter()
        sums = self.sums.clone()
        sums[2] += self.host_tokens
        loss, items, tokens = self.accelerator.reduce(sums, "sum").tolist()
        seconds = now - self.since
        result = {
            "loss": loss / max(items, 1e-12),
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "tokens": int(tokens),
            "seconds": seconds,
        }
        self.sums.zero_()
        self.host_tokens, self.since = 0, now
        return result
