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

# Model keyword carrying a packed row's example lengths (a tuple of host ints) down to the
# attention function (training/packed_attention.py: one attention call per example).
LENGTHS_KEY = "packed_lengths"
# Keys DataCollatorWithFlattening(return_flash_attn_kwargs=True) adds: the boundaries ft reads
# LENGTHS_KEY from, not sent to the model.
FLASH_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


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


def pack(features: list[dict[str, Any]], with_lengths: bool = False) -> dict[str, Any]:
    """One [1, total tokens] row of input_ids, labels and position_ids (int64) from a list of
    examples (each with input_ids and labels of the same length; empty ones are left out, as the
    collator does), and with_lengths: the examples' lengths under LENGTHS_KEY. transformers reads
    packed position ids only without a KV cache: the loss passes use_cache=False."""
    batch = flattening_collator(with_lengths)(features)
    if with_lengths:
        bounds = batch["cu_seq_lens_q"]  # int32 on the host, [examples + 1]
        for key in FLASH_KEYS:
            del batch[key]
        batch[LENGTHS_KEY] = tuple(bounds.diff().tolist())
    return batch


def packing_works(
    model: Any, vocab_size: int, lengths: tuple[int, ...] = (5, 3), with_lengths: bool = False
) -> bool:
    """Whether `model` gives a packed row (from `pack`, as the collator sends it) the logits it
    gives each example alone (no gradient, eval mode, RNG untouched; a few tokens). False when the
    forward refuses the inputs. with_lengths: the packed row also carries its example lengths."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    rows = [torch.arange(3, 3 + n).remainder(vocab_size).tolist() for n in lengths]
    features = [{"input_ids": row, "labels": row} for row in rows]
    packed_row = pack(features, with_lengths=with_lengths)
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
    # fp32: differences are float rounding (~1e-6); a row attending across examples differs by
    # the size of the logits themselves. bf16/fp16 weights round to ~1e-2 of the scale.
    exact = next(model.parameters()).dtype == torch.float32
    scale = float(apart.abs().max().clamp(min=1.0))
    return float((packed - apart).abs().max()) <= (1e-4 if exact else 3e-2) * scale
