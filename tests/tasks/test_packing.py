"""ft's packed row is transformers' DataCollatorWithFlattening: the same tensors for the same
features (so the two cannot drift), plus the examples' lengths as host ints for the per-example
attention. The model-level checks (packed losses equal padded ones, the start-up probe) are in
tests/training/test_speed_paths.py."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorWithFlattening

from framework.tasks import packing
from framework.tasks.chat import IGNORE_INDEX


def features() -> list[dict]:
    """Examples of different lengths: a prompt (label -100) then an answer; one whose first label
    is a real token (the packed row must mask it), one empty (left out), one given as tensors."""
    return [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9]},
        {"input_ids": [11, 12, 13], "labels": [11, 12, 13]},
        {"input_ids": [], "labels": []},
        {"input_ids": torch.tensor([21, 22, 23, 24]), "labels": torch.tensor([-100, 22, 23, 24])},
        {"input_ids": [31], "labels": [31]},
    ]


def reference(**options) -> dict:
    """What transformers' collator itself returns for `features()` with ft's settings."""
    collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100, **options)
    return collator(features(), return_tensors="pt")


def assert_same_tensors(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), (key, got[key], value)


def test_packed_row_is_what_data_collator_with_flattening_returns():
    batch = packing.pack(features())
    assert_same_tensors(batch, reference())


@pytest.mark.parametrize("with_lengths", [False, True])
def test_packed_row_keeps_fts_contract(with_lengths):
    """[1, total] int64 rows; the first label of every example masked, the rest its own labels;
    positions restarting at 0 per example."""
    batch = packing.pack(features(), with_lengths=with_lengths)
    total = 5 + 3 + 4 + 1
    for key in ("input_ids", "labels", "position_ids"):
        assert batch[key].shape == (1, total) and batch[key].dtype == torch.long, key
    assert batch["input_ids"][0].tolist() == [5, 6, 7, 8, 9, 11, 12, 13, 21, 22, 23, 24, 31]
    assert batch["labels"][0].tolist() == [
        -100,
        -100,
        7,
        8,
        9,
        -100,
        12,
        13,
        -100,
        22,
        23,
        24,
        -100,
    ]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0]
    assert (packing.LENGTHS_KEY in batch) == with_lengths


def test_lengths_are_the_collators_boundaries_as_host_ints():
    """The lengths come from the collator's cu_seq_lens (empty examples left out as it leaves them
    out); they are plain ints, so the attention reads them without waiting for the device, and
    the collator's flash-attention keys stay out of the batch."""
    batch = packing.pack(features(), with_lengths=True)
    lengths = batch.pop(packing.LENGTHS_KEY)
    want = reference(return_flash_attn_kwargs=True)
    assert lengths == tuple(want["cu_seq_lens_q"].diff().tolist()) == (5, 3, 4, 1)
    assert all(type(n) is int for n in lengths)
    assert_same_tensors(batch, {k: v for k, v in want.items() if k not in packing.FLASH_KEYS})


def test_a_batch_of_only_empty_examples_is_refused():
    with pytest.raises(ValueError, match="empty"):
        packing.pack([{"input_ids": [], "labels": []}])
