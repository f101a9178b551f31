"""Padding-free packing for causal LM: the examples of a micro-batch become one row, with
`position_ids` restarting at 0 for each example and no attention mask. transformers then builds
a block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices;
flash-attention varlen reads the same boundaries), so no token attends across examples and no
compute is spent on padding. The first label of every example is masked, so the last token of one
example is never trained to predict the first token of the next.

The row itself is transformers' `DataCollatorWithFlattening`. What ft adds beside it: the examples'
lengths as a tuple of host ints (LENGTHS_KEY), for the per-example attention of
training/packed_attention.py. The collator's own boundaries (`cu_seq_lens_q`) are a tensor, which
the trainer moves to the device with the rest of the batch; reading it there, once per attention
layer, would wait for the device. So the lengths are read from that tensor here, on the host,
and the collator's flash-attention keys are left out of the batch: rows with lengths go only to
models on SDPA (with the per-example attention), which do not read them.

Whether a model honours packed position ids is not written anywhere (absolute-position and alibi
models, prompt-learning adapters do not): `packing_works` runs the model once on a packed row and on
the same examples apart, and the trainer packs only when both agree.
"""

from __future__ import annotations

from typing import Any

from framework.tasks.chat import IGNORE_INDEX
from framework.tasks.probe import agrees

# Model keyword carrying a packed row's example lengths (a tuple of host ints) down to the
# attention function (training/packed_attention.py: one attention call per example).
LENGTHS_KEY = "packed_lengths"
# Keys DataCollatorWithFlattening(return_flash_attn_kwargs=True) adds: the boundaries ft reads
# LENGTHS_KEY from, not sent to the model.
FLASH_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
# The same boundaries as a tensor [examples + 1] of offsets (int32): under torch.compile a tuple of
# ints would be guarded value by value (a recompile for every new set of lengths), a tensor by
# its size only.
CU_SEQLENS_KEY = "packed_cu_seqlens"
# Host int: the real tokens of a row padded up to a shape bucket (the padding is not counted).
REAL_TOKENS_KEY = "real_tokens"


def flattening_collator(with_lengths: bool = False) -> Any:
    """transformers' DataCollatorWithFlattening as ft packs: position ids restarting at 0 per
    example, IGNORE_INDEX as the first label of each, torch tensors; with_lengths: also the
    examples' boundaries (cu_seq_lens_q), which `pack` turns into LENGTHS_KEY."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(
        return_position_ids=True,
        separator_id=IGNORE_INDEX,
        return_flash_attn_kwargs=with_lengths,
        return_tensors="pt",
    )


def pack(
    features: list[dict[str, Any]],
    with_lengths: bool = False,
    with_offsets: bool = False,
    pad_to: int | None = None,
    pad_id: int = 0,
) -> dict[str, Any]:
    """One [1, total tokens] row of input_ids, labels and position_ids (int64) from a list of
    examples (each with input_ids and labels of the same length; empty ones are left out, as the
    collator does); with_lengths: the examples' lengths under LENGTHS_KEY; with_offsets: their
    boundaries as a tensor under CU_SEQLENS_KEY; pad_to: the row padded up to that many tokens by
    one more "example" of pad ids without labels, with its own positions (no real token attends
    to it, it adds nothing to the loss), and the real tokens under REAL_TOKENS_KEY. transformers
    reads packed position ids only without a KV cache: the loss passes use_cache=False."""
    real = sum(len(feature["input_ids"]) for feature in features)
    if pad_to is not None and pad_to > real:
        padding = pad_to - real
        features = [
            *features,
            {"input_ids": [pad_id] * padding, "labels": [IGNORE_INDEX] * padding},
        ]
    bounded = with_lengths or with_offsets
    batch = flattening_collator(bounded)(features)
    if bounded:
        bounds = batch["cu_seq_lens_q"]  # int32 on the host, [examples + 1]
        for key in FLASH_KEYS:
            del batch[key]
        if with_lengths:
            batch[LENGTHS_KEY] = tuple(bounds.diff().tolist())
        if with_offsets:
            import torch

            batch[CU_SEQLENS_KEY] = bounds
            # Its size (examples + 1) varies from row to row: dynamic for torch.compile from the
            # start rather than after a recompile.
            torch._dynamo.maybe_mark_dynamic(bounds, 0)
    if pad_to is not None:
        batch[REAL_TOKENS_KEY] = real
    return batch


def packing_works(
    model: Any,
    vocab_size: int,
    lengths: tuple[int, ...] = (5, 3),
    with_lengths: bool = False,
    with_offsets: bool = False,
) -> bool:
    """Whether `model` gives a packed row (from `pack`, as the collator sends it) the logits it
    gives each example alone (no gradient, eval mode, RNG untouched; a few tokens). False when the
    forward refuses the inputs. with_lengths / with_offsets: the packed row also carries its
    example lengths (host ints) / boundaries (a tensor)."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    rows = [torch.arange(3, 3 + n).remainder(vocab_size).tolist() for n in lengths]
    features = [{"input_ids": row, "labels": row} for row in rows]
    packed_row = pack(features, with_lengths=with_lengths, with_offsets=with_offsets)
    inputs = {
        key: value.to(device) if isinstance(value, torch.Tensor) else value
        for key, value in packed_row.items()
        if key != "labels"
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            apart = torch.cat(
                [
                    model(input_ids=torch.tensor([row], device=device), use_cache=False)
                    .logits[0]
                    .float()
                    for row in rows
                ]
            )
            packed = model(**inputs, use_cache=False).logits[0].float()
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)
    if packed.shape != apart.shape:
        return False
    return agrees(apart, packed, model)  # a row attending across examples differs by the scale
