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


def test_gemma_vocabulary_logits_buffer_is_8_gib():
    """262,144 vocabulary x 8 x 1024 tokens x 4 bytes (fp32) = 8 GiB per copy."""
    assert logits_buffer_bytes(8, 1024, 262_144) == 8 * GiB
    gemma = replace(FACTS, vocab=262_144)
    assert estimate(gemma, GPU).components["logits"] == LOGITS_COPIES * 8 * GiB


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
