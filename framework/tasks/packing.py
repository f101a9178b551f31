"""Padding-free packing for causal LM: the examples of a micro-batch become one row, with
`position_ids` restarting at 0 for each example and no attention mask. transformers then builds
a block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices;
flash-attention varlen reads the same boundaries), so no token attends across examples and no
compute is spent on padding. The first label of every example is masked, so the last token of one
example is never trained to predict the first token of the next (as DataCollatorWithFlattening).

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
# The same boundaries as a tensor [examples + 1] of offsets (int32): under torch.compile a tuple of
# ints would be guarded value by value (a recompile for every new set of lengths), a tensor by
# its size only.
CU_SEQLENS_KEY = "packed_cu_seqlens"
# Host int: the real tokens of a row padded up to a shape bucket (the padding is not counted).
REAL_TOKENS_KEY = "real_tokens"


def pack(
    features: list[dict[str, Any]],
    with_lengths: bool = False,
    with_offsets: bool = False,
    pad_to: int | None = None,
    pad_id: int = 0,
) -> dict[str, Any]:
    """One [1, total tokens] row of input_ids, labels and position_ids from a list of examples
    (each with input_ids and labels of the same length); with_lengths: the examples' lengths
    under LENGTHS_KEY; with_offsets: their boundaries under CU_SEQLENS_KEY; pad_to: the row padded
    up to that many tokens by one more "example" of pad ids without labels, with its own
    positions (no real token attends to it, it adds nothing to the loss), and the real tokens
    under REAL_TOKENS_KEY. transformers reads packed position ids only without a KV cache: the
    loss passes use_cache=False."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    lengths = [len(feature["input_ids"]) for feature in features]
    for feature, n in zip(features, lengths):
        ids += list(feature["input_ids"])
        labels += [IGNORE_INDEX] + list(feature["labels"][1:n])
        positions += range(n)
    real = len(ids)
    if pad_to is not None and pad_to > real:
        extra = pad_to - real
        ids += [pad_id] * extra
        labels += [IGNORE_INDEX] * extra
        positions += range(extra)
        lengths.append(extra)
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
    }
    if with_lengths:
        batch[LENGTHS_KEY] = tuple(lengths)
    if with_offsets:
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        batch[CU_SEQLENS_KEY] = torch.tensor(offsets, dtype=torch.int32)
        # Its size (examples + 1) varies from row to row: dynamic for torch.compile from the start
        # rather than after a recompile.
        torch._dynamo.maybe_mark_dynamic(batch[CU_SEQLENS_KEY], 0)
    if pad_to is not None:
        batch[REAL_TOKENS_KEY] = real
    return batch


def packing_works(
    model: Any,
    vocab_size: int,
    lengths: tuple = (5, 3),
    with_lengths: bool = False,
    with_offsets: bool = False,
) -> bool:
    """Whether `model` gives a packed row the logits it gives each example alone (no gradient,
    eval mode, RNG untouched; a few tokens). False when the forward refuses the inputs.
    with_lengths / with_offsets: the packed row also carries its example lengths (host ints) /
    boundaries (a tensor), as the collator sends them."""
    import torch

    device = next(p.device for p in model.parameters() if p.device.type != "meta")
    rows = [torch.arange(3, 3 + n, device=device).remainder(vocab_size)[None] for n in lengths]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            apart = torch.cat(
                [model(input_ids=row, use_cache=False).logits[0].float() for row in rows]
            )
            positions = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
            extra: dict[str, Any] = {LENGTHS_KEY: tuple(lengths)} if with_lengths else {}
            if with_offsets:
                bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
                extra[CU_SEQLENS_KEY] = torch.tensor(bounds, dtype=torch.int32, device=device)
            packed = (
                model(
                    input_ids=torch.cat(rows, dim=1),
                    position_ids=positions,
                    use_cache=False,
                    **extra,
                )
                .logits[0]
                .float()
            )
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
