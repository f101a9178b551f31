"""The streamed training split (data.streaming): a `datasets.IterableDataset` (read, tokenized and
mixed lazily by datasets) shuffled in windows, with a position that resumes exactly.

datasets' own shuffle buffer cannot be resumed exactly (its content is not in state_dict(); a
resumed run refills it with other examples). So the stream is shuffled here, one window of
data.shuffle_buffer examples at a time, by a permutation that depends only on (seed, epoch,
window): the position after K examples of an epoch is the upstream state_dict() taken before its
window was read, plus the offset into that window. A resumed run loads that state (datasets skips
what came before by the examples consumed, never re-tokenizing it), reads the one window again
and continues at the offset: bit-equal to an uninterrupted run, whatever the trainer prefetched.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

import numpy as np
import torch

from framework.core.errors import UserError

UNSHUFFLED_WINDOW = 1024  # data.shuffle_buffer=0: examples per saved position (stream order)


class WindowShuffledStream(torch.utils.data.IterableDataset):
    """An upstream datasets.IterableDataset shuffled window by window, resumable at any
    example count (state_at / resume_at)."""

    def __init__(self, upstream: Any, shuffle_buffer: int, seed: int, lookahead: int):
        """lookahead: the most examples the loaders may have read beyond those the trainer
        consumed (prefetched batches); positions that far back stay available."""
        super().__init__()
        self.upstream = upstream
        self.shuffles = shuffle_buffer > 1
        self.window = shuffle_buffer if self.shuffles else UNSHUFFLED_WINDOW
        self.seed = seed
        self.epoch = 0
        self.keep = 2 + math.ceil(lookahead / self.window)  # window starts kept for state_at
        self._starts: dict[int, Any] = {}  # window -> upstream state before it (None: the start)
        self._pending: dict[str, Any] | None = None  # where the next iteration resumes

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (a new permutation of every window)."""
        self.epoch = epoch

    def state_at(self, consumed: int) -> dict[str, Any]:
        """The position after `consumed` examples of the current epoch (JSON-safe)."""
        window, offset = divmod(consumed, self.window)
        if window not in self._starts:
            raise RuntimeError(
                f"stream position {consumed} of epoch {self.epoch} is no longer known (windows "
                f"kept: {sorted(self._starts)}); the loaders read further ahead than expected"
            )
        return {
            "epoch": self.epoch,
            "window": window,
            "offset": offset,
            "upstream": self._starts[window],
        }

    def resume_at(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue at a position state_at() gave."""
        self._pending = state

    def _order(self, window: int, size: int) -> list[int]:
        if not self.shuffles:
            return list(range(size))
        generator = np.random.default_rng([self.seed, self.epoch, window])
        return generator.permutation(size).tolist()

    def _read(self, rows: Any, window: int) -> list[Any]:
        try:
            return list(islice(rows, self.window))
        except UserError:
            raise
        except Exception as error:  # a bad row mid-file: datasets raises from its reader
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(
                f"data: the training stream failed in epoch {self.epoch} after about "
                f"{window * self.window} examples: {type(error).__name__}: {message}. Fix the "
                f"data, then resume (the last checkpoint is kept)"
            ) from None

    def __iter__(self) -> Any:
        state, self._pending = self._pending, None
        self.upstream.set_epoch(self.epoch)
        window, skip = 0, 0
        if state is not None:
            if state["epoch"] != self.epoch:
                raise RuntimeError(f"stream position of epoch {state['epoch']} in {self.epoch}")
            if state["upstream"] is not None:
                self.upstream.load_state_dict(state["upstream"])
            window, skip = state["window"], state["offset"]
        self._starts = {window: None if state is None else state["upstream"]}
        rows = iter(self.upstream)
        while True:
            examples = self._read(rows, window)
            if not examples:
                return
            self._starts[window + 1] = self.upstream.state_dict()
            for old in [w for w in self._starts if w <= window + 1 - self.keep]:
                del self._starts[old]
            for index in self._order(window, len(examples))[skip:]:
                yield examples[index]
            window, skip = window + 1, 0
