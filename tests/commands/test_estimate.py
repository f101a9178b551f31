"""`ft estimate`: the memory arithmetic (fast, no model), the CLI on a tiny model (meta device),
the warning `ft train` logs, and one real accuracy check against measured peak RSS."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace

import pytest

from framework.commands.estimate import suggest
from framework.config.path import load_run
from framework.hardware.base import MemoryLayout, size_bytes
from framework.training.memory import (
    LOGITS_COPIES,
    DataShape,
    GiB,
    ModelFacts,
    Settings,
    estimate,
    logits_buffer_bytes,
    run_settings,
)
from tests.helpers import REPO

# A 1B-parameter Llama-like decoder with LoRA (numbers chosen by hand, no model is built).
FACTS = ModelFacts(
    total_params=1_010_000_000,
    trainable_params=10_000_000,
    quantizable_params=800_000_000,
    layers=16,
    hidden=2048,
    intermediate=8192,
    heads=32,
    kv_width=512,
    vocab=128_256,
    gated_mlp=True,
    attention_dropout=0.0,
    hidden_dropout=0.0,
    eager_attention=False,
    adapter_inputs=7 * 2048,
    adapter_masks=7 * 2048,
)
GPU = Settings(
    micro_batch=8,
    seq_len=1024,
    weight_bytes=2.0,
    activation_bytes=2,
    on_gpu=True,
    gradient_checkpointing=False,
    optimizer="adamw",
)


def test_zero3_across_4_processes_divides_the_sharded_parts_by_4():
    plain = estimate(FACTS, GPU).components
    zero3 = estimate(
        FACTS,
        replace(
            GPU,
            layout=MemoryLayout(
                shards=4, shard_optimizer=True, shard_gradients=True, shard_weights=True
            ),
        ),
    ).components
    for part in ("weights", "gradients", "optimizer"):
        assert zero3[part] == pytest.approx(plain[part] / 4, abs=1), part
    assert zero3["activations"] == plain["activations"] and zero3["logits"] == plain["logits"]


def test_the_hardware_profiles_answer_sharding_offload_and_checkpointing():
    """The profiles themselves say what they shard (asked, not named)."""
    cpu = ["hardware.device=cpu", "hardware.precision=no"]
    run = load_run("seq_cls_tiny_bert_lora", ["hardware=zero3", "hardware.num_processes=4", *cpu])
    layout = run_settings(run).layout
    assert (layout.shards, layout.shard_weights, layout.shard_gradients) == (4, True, True)
    run = load_run("seq_cls_tiny_bert_lora", ["hardware=zero2", *cpu])
    layout = run_settings(run).layout
    assert layout.shard_gradients and not layout.shard_weights and layout.shards == 2
    run = load_run(
        "seq_cls_tiny_bert_lora",
        [
            "hardware=device_map",
            "hardware.device=cpu",
            "hardware.precision=no",
            "hardware.max_memory={cpu: 1GiB}",
        ],
    )
    assert run_settings(run).layout.weights_cap == GiB
    run = load_run(
        "seq_cls_tiny_bert_lora",  # dry_run: planned for GPUs
        ["hardware=fsdp", "hardware.activation_checkpointing=true", "dry_run=true"],
    )
    settings = run_settings(run)
    assert settings.layout.shard_weights and settings.gradient_checkpointing
    offload = MemoryLayout(offload_optimizer="cpu", offload_weights="cpu")
    plain = estimate(FACTS, GPU).components
    offloaded = estimate(FACTS, replace(GPU, layout=offload))
    assert offloaded.components["optimizer"] == 0
    assert offloaded.components["weights"] == pytest.approx(plain["weights"] / 16, abs=1)
    # ... one of 16 blocks on the device; the rest, and the optimizer state, in host RAM.
    assert offloaded.offloaded == pytest.approx(plain["weights"] + plain["optimizer"], abs=2)


def test_gradient_checkpointing_lowers_activations():
    plain = estimate(FACTS, GPU).components["activations"]
    checkpointed = estimate(FACTS, replace(GPU, gradient_checkpointing=True)).components
    # Block inputs (16 x hidden) + one block recomputed, instead of 16 blocks.
    assert checkpointed["activations"] < plain / 4


def test_4bit_weights_are_about_a_quarter_of_bf16():
    from framework.core.registry import PEFT_METHODS

    qlora = PEFT_METHODS.get("qlora")
    params = qlora.Params(name="qlora")
    linear_only = replace(FACTS, quantizable_params=FACTS.total_params - FACTS.trainable_params)
    bf16 = estimate(linear_only, GPU).components["weights"]
    four_bit = estimate(
        linear_only,
        replace(
            GPU,
            quantized_bytes=qlora.base_weight_bytes(params, 2.0, True),
            other_base_bytes=qlora.base_weight_bytes(params, 2.0, False),
        ),
    ).components["weights"]
    adapters = FACTS.trainable_params * 4  # fp32 in both
    assert 0.25 <= (four_bit - adapters) / (bf16 - adapters) <= 0.26


def test_gemma_vocabulary_logits_are_3_bf16_copies_and_two_fp32_chunks():
    """262,144 vocabulary x 8 x 1024 tokens: 8 GiB per fp32 copy; the trainer keeps the logits
    in the compute dtype (bf16: 4 GiB a copy) and upcasts one 64-row chunk (64 MiB) at a time."""
    assert logits_buffer_bytes(8, 1024, 262_144) == 8 * GiB
    gemma = replace(FACTS, vocab=262_144)
    chunk = 64 * 262_144 * 4  # tasks/token_loss.CHUNK_ELEMENTS // vocabulary rows, fp32
    assert estimate(gemma, GPU).components["logits"] == LOGITS_COPIES * 4 * GiB + 2 * chunk
    # The fused-loss hook: the logits never exist whole, only the loss's fp32 chunks.
    assert estimate(gemma, replace(GPU, fused_loss=True)).components["logits"] == 2 * chunk


def test_the_data_shape_sizes_packed_rows_and_label_positions():
    """With the data: activations follow the longest micro-batch's real tokens (packed: the sum of
    the longest examples; padded: micro-batch x the longest), the LM head its label positions."""
    data = DataShape(lengths=(900, 700, 300, 100), labels=(200, 150, 90, 10))
    batch = replace(GPU, micro_batch=2, seq_len=1024)
    full = estimate(FACTS, batch).components
    packed = estimate(FACTS, replace(batch, data=data, packed=True, logits_only=True))
    assert packed.settings.tokens() == 1600 and packed.settings.lm_positions() == 350
    padded = estimate(FACTS, replace(batch, data=data, logits_only=True))
    assert padded.settings.tokens() == 1800 and padded.settings.lm_positions() == 1800
    per_token = full["activations"] / 2048
    assert packed.components["activations"] == pytest.approx(1600 * per_token, rel=1e-6)
    assert padded.components["activations"] == pytest.approx(1800 * per_token, rel=1e-6)
    rows = (1 << 24) // FACTS.vocab  # fp32 rows of one loss chunk
    assert packed.components["logits"] == 3 * 350 * FACTS.vocab * 2 + 2 * rows * FACTS.vocab * 4
    assert packed.total < padded.total < estimate(FACTS, batch).total


def test_the_disk_per_checkpoint_is_the_trainable_part_unless_the_profile_saves_the_base():
    from framework.store.checkpoint import METADATA_BYTES

    adapter_only = estimate(FACTS, GPU).checkpoint
    assert adapter_only == FACTS.trainable_params * (4 + 8) + METADATA_BYTES
    whole = estimate(FACTS, replace(GPU, checkpoint_holds_base=True)).checkpoint
    base = (FACTS.total_params - FACTS.trainable_params) * 2  # bf16
    assert whole == adapter_only + base


def test_cheapest_fit_takes_the_first_preset_then_the_largest_micro_batch():
    one_gpu = replace(GPU, micro_batch=16)
    sharded = replace(
        one_gpu,
        layout=MemoryLayout(
            shards=2, shard_optimizer=True, shard_gradients=True, shard_weights=True
        ),
    )
    order = {"gpu": one_gpu, "zero3": sharded}
    # Room for the weights and a few sequences: the one-GPU preset, a smaller micro-batch.
    preset, batch, checkpointing, found = suggest(FACTS, order, 24 * GiB)
    assert preset == "gpu" and not checkpointing and 1 <= batch < 16 and found.total <= 24 * GiB
    assert estimate(FACTS, replace(one_gpu, micro_batch=batch * 2)).total > 24 * GiB
    # Less than the smallest one-GPU setting (micro-batch 1, checkpointed): only sharding fits.
    smallest = estimate(FACTS, replace(one_gpu, micro_batch=1, gradient_checkpointing=True))
    assert suggest(FACTS, order, smallest.total - 1)[0] == "zero3"
    assert suggest(FACTS, order, 1024) is None


def test_sizes_parse():
    assert size_bytes("24GiB") == 24 * GiB and size_bytes("500MB") == 500_000_000
    for bad in ("lots", "abc", "1.2.3GB"):  # one clear message, never float()'s own
        with pytest.raises(ValueError, match="not a size"):
            size_bytes(bad)


def test_cli_prints_the_table_verdict_and_cheapest_fit(capsys):
    from framework.cli.app import main

    code = main(["estimate", "seq_cls_tiny_bert_lora", "--device-memory", "600MiB"])
    out = capsys.readouterr().out
    assert code == 0, out
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "total"):
        assert part in out
    assert "fits:" in out and "cheapest fit: train.batch_size=" in out
    assert "data: not read (--data reads it)" in out and "checkpoint " in out
    code = main(
        ["estimate", "sft_tiny_llama_lora", "train.batch_size=64", "--device-memory", "520MiB"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "does NOT fit" in out and "activations and logits dominate" in out
    assert "train.gradient_checkpointing=true" in out.splitlines()[-2]
    assert main(["estimate", "seq_cls_tiny_bert_lora", "--device-memory", "lots"]) == 2


def test_train_warns_when_the_estimate_exceeds_the_device(monkeypatch, caplog):
    from framework.training import memory as module

    run = load_run("seq_cls_tiny_bert_lora", [])
    monkeypatch.setattr(module, "device_memory", lambda: (2**20, "test device"))
    with caplog.at_level(logging.DEBUG, logger="ft"):
        module.warn_if_too_big(run)
    assert any(r.levelno == logging.WARNING and "test device" in r.message for r in caplog.records)

    def broken(_run):
        raise RuntimeError("no config")

    monkeypatch.setattr(module, "model_facts", broken)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ft"):
        module.warn_if_too_big(run)  # never raises: the run goes on
    assert any("skipped: no config" in r.message for r in caplog.records)


@pytest.mark.slow
def test_estimate_is_within_25_percent_of_measured_peak_rss(tmp_path):
    """MiniLM + LoRA (r=16) seq_cls, 32 x 48 tokens, 2 steps in a fresh process: the estimate's
    training-time bytes vs peak RSS over the loaded process."""
    sys.path.insert(0, str(REPO))
    from bench.estimate_accuracy import compare

    row = compare(
        "minilm",
        "seq_cls_minilm_lora",
        [
            "train.batch_size=32",
            "data.max_length=48",
            "data.max_train_examples=256",
            "data.max_eval_examples=32",
        ],
        steps=2,
    )
    (tmp_path / "row.json").write_text(json.dumps(row))
    assert set(row["batch_widths"]) == {48}  # the data fills max_length, as estimated
    assert abs(row["error_pct"]) <= 25, row


def test_estimate_with_data_sizes_the_runs_own_longest_micro_batch(capsys):
    """--data tokenizes the train split (no weight is read): packed rows of the real examples
    and the LM head at their label positions only, so the estimate is below the config-only
    one, which assumes full micro-batches labelled everywhere."""
    from framework.cli.app import main
    from framework.training.memory import estimate_run, read_data_shape

    args = ["sft_tiny_llama_lora", "train.batch_size=8", "data.max_length=128"]
    assert main(["estimate", *args, "--device-memory", "8GiB", "--data"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("data:"))
    assert "longest micro-batch, packed" in line and "label positions only" in line, out
    run = load_run(args[0], args[1:])
    shape = read_data_shape(run)
    with_data, without = estimate_run(run, data=shape), estimate_run(run)
    assert with_data.settings.tokens() == sum(shape.lengths[:8]) <= 8 * 128
    assert with_data.settings.lm_positions() == sum(shape.labels[:8])
    assert with_data.settings.lm_positions() < with_data.settings.tokens()
    assert with_data.total < without.total


# Causal-LM SFT with ft's defaults (packing, logits_only, per-example attention): SmolLM2-135M
# + LoRA r=8 on all 7 projections, chats that fill data.max_length. (micro-batch, overrides)
SFT_CONFIGS = {
    "b4_s64": (4, ["data.max_length=64"]),
    "b4_s128": (4, ["data.max_length=128", "data.source.exchanges=4"]),
    "b8_s64_lora_dropout0": (8, ["data.max_length=64", "peft.dropout=0"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SFT_CONFIGS))
def test_estimate_with_data_is_within_25_percent_of_measured_peak_rss_on_sft(name, tmp_path):
    """`ft estimate --data` on three SFT configurations against peak RSS over the loaded
    process during 2 training steps in a fresh process (bench/estimate_accuracy.measure). The
    train split is one micro-batch, so the longest micro-batch the estimate sizes is the one
    measured (with more data, 2 steps see random batches below the longest: README)."""
    sys.path.insert(0, str(REPO))
    from bench.estimate_accuracy import COMMON, measure
    from framework.training.memory import estimate_run, read_data_shape

    batch, extra = SFT_CONFIGS[name]
    overrides = [
        f"train.batch_size={batch}",
        f"data.max_train_examples={batch}",
        *extra,
        "task.generate_eval=false",
    ]
    run = load_run("sft_smollm2_chat_lora", overrides + COMMON)
    found = estimate_run(run, data=read_data_shape(run))
    measured = measure("sft_smollm2_chat_lora", overrides, 2)
    error = 100 * (found.training_bytes - measured["measured"]) / measured["measured"]
    row = {"name": name, "estimate": found.training_bytes, **measured, "error_pct": error}
    (tmp_path / "row.json").write_text(json.dumps(row))
    print(
        f"{name}: estimate {found.training_bytes >> 20} MiB ({found.settings.tokens()} tokens, "
        f"{found.settings.lm_positions()} LM-head positions), measured "
        f"{measured['measured'] >> 20} MiB, {error:+.1f}%"
    )
    assert set(measured["batch_widths"]) == {found.settings.tokens()}  # the same packed row
    assert abs(error) <= 25, row
