"""Continued pretraining: tokenized documents (each ending in the end-of-document token) joined
end to end and cut into blocks of exactly data.block_size tokens, every token a label. As in
transformers' language-modelling examples, the tail of each map batch that is shorter than a block
is dropped (at most block_size - 1 tokens per DOCS_PER_BATCH documents)."""

from __future__ import annotations

from itertools import chain
from typing import Any

from framework.core.errors import UserError
from framework.core.streams import is_stream

DOCS_PER_BATCH = 1000  # documents joined before cutting (the dropped tail is per batch)


def group_into_blocks(batch: dict[str, list[Any]], block_size: int) -> dict[str, list[Any]]:
    """The batch's documents joined and cut into full blocks of block_size tokens."""
    ids = list(chain.from_iterable(batch["input_ids"]))
    usable = len(ids) - len(ids) % block_size
    blocks = [ids[start : start + block_size] for start in range(0, usable, block_size)]
    return {"input_ids": blocks, "labels": [list(block) for block in blocks]}


def cut_into_blocks(encoded: Any, columns: list[str], block_size: int, split: str) -> Any:
    """A tokenized split (input_ids of whole documents; its `columns` are replaced: a mapped
    stream does not know its own) as blocks; lazily for a stream."""
    streamed = is_stream(encoded)
    blocks = encoded.map(
        group_into_blocks,
        batched=True,
        batch_size=DOCS_PER_BATCH,
        remove_columns=columns,
        fn_kwargs={"block_size": block_size},
        **({} if streamed else {"desc": f"cutting {split} into {block_size}-token blocks"}),
    )
    if not streamed and len(blocks) == 0:
        raise UserError(
            f"data.block_size={block_size}: split '{split}' holds fewer tokens than one block. "
            f"Fix: a smaller data.block_size, or more text"
        )
    return blocks
