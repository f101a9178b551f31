"""The training loss and token count between two log steps, accumulated on the device so that
the step loop never waits for the device except at a log step."""

from __future__ import annotations

import time
from typing import Any, Dict


class LossMeter:
    """Sums per-micro-batch losses and real (attention-masked) tokens on the device."""

    def __init__(self, accelerator: Any):
        import torch

        self.accelerator = accelerator
        self.loss = torch.zeros((), device=accelerator.device)
        self.tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
        self.micro_batches = 0
        self.since = time.perf_counter()

    def add(self, loss: Any, batch: Dict[str, Any]) -> None:
        self.loss += loss.detach().float()
        if "attention_mask" in batch:
            self.tokens += batch["attention_mask"].sum()
        self.micro_batches += 1

    def flush(self) -> Dict[str, float]:
        """Mean loss per micro-batch (over all ranks), real tokens (all ranks), the interval's
        seconds and real tokens/s since the last flush; one host sync. Resets the sums. The
        intervals tile the step loop, so summing tokens and seconds over the train records gives
        the loop's throughput (bench/ reads them)."""
        now = time.perf_counter()
        mean_loss = float(self.accelerator.reduce(self.loss, "mean")) / max(self.micro_batches, 1)
        tokens = int(self.accelerator.reduce(self.tokens, "sum"))
        seconds = now - self.since
        result = {"loss": mean_loss, "tokens_per_s": tokens / max(seconds, 1e-9),
                  "tokens": tokens, "seconds": seconds}
        self.loss.zero_()
        self.tokens.zero_()
        self.micro_batches, self.since = 0, now
        return result
