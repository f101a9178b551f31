"""Streaming (data.streaming): memory does not grow with the corpus, and a streamed run killed
with SIGKILL resumes (resume=auto) bit-equal to one that was never interrupted, mixing and
packing included."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest

from tests.e2e.test_resume_and_failures import (
    assert_bit_identical,
    checkpoint_events,
    run,
    start,
    wait_for,
)
from tests.helpers import REPO

RECIPE = "sft_tiny_llama_lora"
WORDS = [
    "the",
    "a",
    "river",
    "mill",
    "sea",
    "bread",
    "salt",
    "water",
    "stars",
    "count",
    "slow",
    "over",
    "pass",
    "winter",
    "light",
]


def write_corpus(path, rows: int, seed: int = 0):
    """`rows` jsonl text documents of 4-20 words, written with plain Python."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(rows):
            words = rng.choices(WORDS, k=rng.randint(4, 20))
            out.write(json.dumps({"text": " ".join(words)}) + "\n")
    return path


def peak_rss_mib(args) -> float:
    """Peak RSS of an `ft` process (ru_maxrss via os.wait4, as bench/cpu_bench.py measures)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    err = process.stderr.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0, err[-3000:]
    return usage.ru_maxrss / 1024  # Linux: KiB


def streamed(train, run_dir, *extra):
    return [
        "data=files",
        f"data.source.train={train}",
        "data.streaming=true",
        "data.max_eval_examples=16",
        "task.format=text",
        "data.max_length=32",
        f"run_dir={run_dir}",
        *extra,
    ]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_streamed_corpus(tmp_path):
    small = write_corpus(tmp_path / "small.jsonl", 10_000)
    large = write_corpus(tmp_path / "large.jsonl", 1_000_000)
    assert large.stat().st_size > 50 * small.stat().st_size
    steps = ["train.max_steps=4", "train.batch_size=8", "data.shuffle_buffer=1000"]
    rss_small = peak_rss_mib(["train", RECIPE, *streamed(small, tmp_path / "s", *steps)])
    rss_large = peak_rss_mib(["train", RECIPE, *streamed(large, tmp_path / "l", *steps)])
    print(f"peak RSS: 10k rows {rss_small:.0f} MiB, 1M rows {rss_large:.0f} MiB")
    assert rss_large <= 1.2 * rss_small, (rss_small, rss_large)


def mixed_stream(folder, run_dir, *extra):
    """Two streamed text sources by weight, cut into 16-token blocks (about 2 per document),
    packed (train.packing is on by default), shuffled in windows of 24 blocks; LoRA dropout on,
    so the RNG matters too. The second source (0.3) runs out after about 15 steps: epoch 1."""
    first = write_corpus(folder / "first.jsonl", 40, seed=1)
    second = write_corpus(folder / "second.jsonl", 17, seed=2)
    entries = (
        f"[{{name: files, source: {{train: {first}}}, weight: 0.7}}, "
        f"{{name: files, source: {{train: {second}}}, weight: 0.3}}]"
    )
    return [
        "data=mix",
        f"data.sources={entries}",
        "data.streaming=true",
        "data.max_eval_examples=8",
        "data.shuffle_buffer=24",
        "task.format=text",
        "data.block_size=16",
        "train.batch_size=4",
        "train.lr=3e-3",
        "peft.dropout=0.1",
        "train.log_every=1",
        "train.max_steps=24",
        "train.save_every=4",
        f"run_dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def streamed_reference(tmp_path_factory):
    """The uninterrupted streamed run, and the folder of its data."""
    folder = tmp_path_factory.mktemp("stream-data")
    reference = folder / "reference"
    code, _, err = run(["train", RECIPE, *mixed_stream(folder, reference)])
    assert code == 0, err
    epochs = {r.get("epoch") for r in map(json.loads, (reference / "metrics.jsonl").open())}
    assert {0, 1} <= epochs, epochs  # the weighted mix ran out and a second epoch began
    return folder, reference


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step, epoch", [(8, 0), (20, 1)])
def test_a_killed_streamed_run_resumes_bit_equal(
    streamed_reference, tmp_path, kill_after_step, epoch
):
    folder, reference = streamed_reference
    killed = tmp_path / "killed"
    proc = start(["train", RECIPE, *mixed_stream(folder, killed)])
    seen = wait_for(
        lambda: any(e["step"] >= kill_after_step for e in checkpoint_events(killed)), proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert seen, "the run ended before a checkpoint was written"
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    from framework.store.checkpoint import latest_checkpoint, read_trainer_state

    state = read_trainer_state(latest_checkpoint(killed))
    stream = state["stream"]
    assert state["epoch"] == stream["epoch"] == epoch, state
    # The position is the examples consumed this epoch (batches x batch size), inside a window
    # of 24 blocks, with datasets' upstream state before that window (null only for window 0).
    assert state["batch_in_epoch"] * 4 == stream["window"] * 24 + stream["offset"], state
    assert (stream["upstream"] is None) == (stream["window"] == 0), stream
    # An adapter-only checkpoint: the LoRA factors and no frozen base weight beside the position.
    from safetensors.torch import load_file

    saved = load_file(str(latest_checkpoint(killed) / "model.safetensors"))
    assert saved and all("lora_" in name for name in saved), sorted(saved)[:5]

    code, _, err = run(["train", RECIPE, *mixed_stream(folder, killed), "resume=auto"])
    assert code == 0, err
    assert f"stream resumed at window {stream['window']}, example {stream['offset']}" in err, err
    assert_bit_identical(reference, killed)


def test_streaming_refusals_name_the_key(tmp_path):
    from framework.config.path import load_run
    from framework.core.errors import UserError

    corpus = write_corpus(tmp_path / "c.jsonl", 10)
    base = ["data=files", f"data.source.train={corpus}", "data.streaming=true"]
    with pytest.raises(UserError) as caught:
        load_run(
            RECIPE,
            [*base, "train.max_steps=null", "train.num_workers=2", "train.group_by_length=true"],
        )
    text = str(caught.value)
    assert (
        "data.streaming=true: a stream has no length to count epochs in; set train.max_steps"
        in text
    )
    assert (
        "train.num_workers=2: data.streaming=true reads the stream in the training process" in text
    )
    assert "train.group_by_length=true: a stream has no lengths to sort by" in text
    with pytest.raises(UserError, match=r"data.streaming=true: task=seq_cls reads its whole"):
        load_run("seq_cls_tiny_bert_lora", [*base, "train.max_steps=2"])
    with pytest.raises(
        UserError, match=r"data.sources: data.streaming=true interleaves streams by weight"
    ):
        load_run(
            RECIPE,
            [
                "data=mix",
                f"data.sources=[{{name: files, source: {{train: {corpus}}}}}, {{name: files, source: {{train: {corpus}}}}}]",
                "data.streaming=true",
            ],
        )
    with pytest.raises(UserError, match=r"data.sources\[0\].count: data.streaming=true reads"):
        load_run(
            RECIPE,
            [
                "data=mix",
                f"data.sources=[{{name: files, source: {{train: {corpus}}}, count: 5}}]",
                "data.streaming=true",
                "train.max_steps=2",
            ],
        )
    # No validation split and nothing to hold out of a stream: at data time, naming the key.
    with pytest.raises(
        UserError, match=r"data.max_eval_examples: the data of data.source has no validation split"
    ):
        from framework.data.loading import load_sources

        run_config = load_run(RECIPE, [*base, "train.max_steps=2", "data.max_eval_examples=null"])
        load_sources(run_config)
