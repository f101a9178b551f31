"""The run's DataLoaders: workers and pinned memory from `train`, length-grouped batching
(train.group_by_length) for tasks that pad rather than pack, and token-budget micro-batches
(train.tokens_per_batch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

MEGABATCH = 50  # batches per length-sorted group (transformers' LengthGroupedSampler uses 50)


class LengthGroupedSampler:
    """A seeded shuffle, then each run of `group` (MEGABATCH x batch_size x processes) examples
    sorted by length and cut into batches of `batch` (batch_size x processes) examples, whose order
    is shuffled again: every batch (on every process) holds similar lengths, so padding is small,
    and long and short batches alternate through the epoch instead of running from the longest to
    the shortest (a curriculum that moved the result of a short run). The order is a function of
    (seed, epoch) only, so a resumed run (set_epoch, then skipping consumed batches) sees the same
    batches."""

    def __init__(self, lengths: Sequence[int], group: int, seed: int, batch: int = 1):
        self.lengths, self.seed, self.epoch = list(lengths), seed, 0
        self.batch = max(1, batch)
        self.group = max(self.batch, group)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order: list[int] = torch.randperm(len(self.lengths), generator=generator).tolist()
        for start in range(0, len(order), self.group):
            ranked = sorted(order[start : start + self.group], key=lambda i: -self.lengths[i])
            full = len(ranked) // self.batch  # a short last batch (epoch's end) stays last,
            batches = torch.randperm(full, generator=generator).tolist()  # or batches would shift
            if start == 0 and full:  # the epoch opens with its first group's longest batch: an
                batches.remove(0)  # out-of-memory shows at step 1, not mid-run
                batches.insert(0, 0)
            for index in batches:
                yield from ranked[index * self.batch : (index + 1) * self.batch]
            yield from ranked[full * self.batch :]


class TokenBudgetBatches:
    """A batch sampler: a seeded shuffle of the examples (or length-grouped order), cut into
    micro-batches of consecutive examples whose lengths add up to at most `budget` tokens (an
    example longer than the budget alone). The order is a function of (seed, epoch) only, so a
    resumed run sees the same batches; len() is exact for the current epoch."""

    def __init__(self, lengths: Sequence[int], budget: int, seed: int, order: Any = None):
        self.lengths, self.budget, self.seed, self.epoch = list(lengths), budget, seed, 0
        self.order = order  # a sampler with set_epoch (length grouping), else a plain shuffle
        self.sampler = self  # accelerate sets the epoch of `batch_sampler.sampler` when sharding

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.order is not None:
            self.order.set_epoch(epoch)

    def _indices(self) -> list[int]:
        import torch

        if self.order is not None:
            return list(self.order)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.lengths), generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        tokens = 0
        for index in self._indices():
            length = self.lengths[index]
            if batch and tokens + length > self.budget:
                yield batch
                batch, tokens = [], 0
            batch.append(index)
            tokens += length
        if batch:
            yield batch

    def __len__(self) -> int:
        return sum(1 for _ in self)


def example_lengths(dataset: Any) -> list[int]:
    """Tokens per example of a tokenized split (its input_ids, or the longest list column)."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [1] * len(dataset)


def build_loader(
    run: Any,
    dataset: Any,
    collate: Any,
    shuffle: bool,
    batch_size: int,
    processes: int,
    on_gpu: bool,
) -> Any:
    """A DataLoader with its own seeded generator (creating an iterator never draws from the
    global RNG, which dropout uses: resume replays the exact RNG stream). A stream (an
    IterableDataset: data.streaming) is read in its own order."""
    import torch

    train = run.train
    sampler = None
    if isinstance(dataset, torch.utils.data.IterableDataset):  # a stream shuffles itself
        shuffle = False
    elif shuffle and train.group_by_length and "input_ids" in dataset.column_names:
        sampler = LengthGroupedSampler(
            example_lengths(dataset),
            MEGABATCH * batch_size * processes,
            run.seed,
            batch=batch_size * processes,
        )
        shuffle = False
    if shuffle and train.tokens_per_batch and "input_ids" in dataset.column_names:
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=TokenBudgetBatches(
                example_lengths(dataset), train.tokens_per_batch, run.seed, sampler
            ),
            collate_fn=collate,
            num_workers=train.num_workers,
            pin_memory=train.pin_memory and on_gpu,
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=collate,
        num_workers=train.num_workers,
        pin_memory=train.pin_memory and on_gpu,
        generator=torch.Generator().manual_seed(run.seed),
    )
