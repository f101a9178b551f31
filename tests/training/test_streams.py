"""The streamed training split (training/streams.py): shuffled window by window, and resumed at
any example count exactly, by the upstream position datasets saves, not by reading again."""

from __future__ import annotations

import json

import pytest

from framework.training.streams import WindowShuffledStream


def write_rows(path, n):
    path.write_text("".join(json.dumps({"n": i, "text": f"row {i}"}) + "\n" for i in range(n)))
    return path


def upstream(path, mapped: list[int] | None = None):
    """The rows of a jsonl file as a datasets stream; `mapped` collects the rows the (stand-in
    tokenization) map is run on."""
    import datasets

    def encode(batch):
        if mapped is not None:
            mapped.extend(batch["n"])
        return {"ids": [[n, n + 1] for n in batch["n"]]}

    stream = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
    return stream.map(encode, batched=True, batch_size=100, remove_columns=["text"])


@pytest.mark.parametrize("window", [0, 64])
def test_a_resumed_stream_continues_exactly_without_reading_from_the_start(tmp_path, window):
    path = write_rows(tmp_path / "rows.jsonl", 5000)
    whole = [row["n"] for row in WindowShuffledStream(upstream(path), window, 7, lookahead=16)]
    assert sorted(whole) == list(range(5000))  # every row once
    if window:  # shuffled, but only within windows of 64 rows
        assert whole != list(range(5000))
        assert all(whole[i] // 64 == i // 64 for i in range(0, 5000, 97))
    else:
        assert whole == list(range(5000))

    for consumed in (0, 1, 63, 64, 1000, 4321, 4999, 5000):
        first = WindowShuffledStream(upstream(path), window, 7, lookahead=16)
        rows = iter(first)
        read = [next(rows)["n"] for _ in range(min(consumed + 16, 5000))]  # prefetched ahead
        assert read == whole[: len(read)]
        state = json.loads(json.dumps(first.state_at(consumed)))  # as a checkpoint keeps it
        mapped: list[int] = []
        second = WindowShuffledStream(upstream(path, mapped), window, 7, lookahead=16)
        second.resume_at(state)
        rest = [row["n"] for row in second]
        assert rest == whole[consumed:], consumed
        if consumed >= 1000:  # the rows before the saved window were neither mapped nor yielded
            assert min(mapped) >= consumed - consumed % (window or 1024) - 100, (consumed, window)


def test_epochs_reshuffle_and_a_position_names_its_epoch(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", 300)
    stream = WindowShuffledStream(upstream(path), 100, 3, lookahead=8)
    first = [row["n"] for row in stream]
    stream.set_epoch(1)
    second = [row["n"] for row in stream]
    assert sorted(first) == sorted(second) and first != second
    state = stream.state_at(150)
    assert (state["epoch"], state["window"], state["offset"]) == (1, 1, 50)
    again = WindowShuffledStream(upstream(path), 100, 3, lookahead=8)
    again.set_epoch(1)
    again.resume_at(state)
    assert [row["n"] for row in again] == second[150:]


def test_a_bad_row_mid_stream_is_one_line_naming_the_position(tmp_path):
    from framework.core.errors import UserError

    path = write_rows(tmp_path / "rows.jsonl", 3000)
    path.write_text(path.read_text() + "{not json\n")
    stream = WindowShuffledStream(upstream(path), 0, 0, lookahead=8)
    with pytest.raises(UserError, match="the training stream failed in epoch 0 after about"):
        list(stream)
