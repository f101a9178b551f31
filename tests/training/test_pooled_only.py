"""train.pooled_only (training/pooled_only.py): a BERT-style classifier's last encoder layer at
the pooled first position gives the loss and gradients of the whole layer, and is refused where
the head reads other positions."""

from __future__ import annotations

import pytest
import torch

from framework.training import pooled_only
from tests.helpers import tiny_llama_lora, train_recipe

VOCAB = 100


def tiny_bert_lora(task: str, attention: str) -> torch.nn.Module:
    """A 2-layer BERT (dropout 0, so both forwards are deterministic) with LoRA on query/value and
    a trained head, seeded."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        BertConfig,
    )

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    auto = {
        "SEQ_CLS": AutoModelForSequenceClassification,
        "TOKEN_CLS": AutoModelForTokenClassification,
    }
    torch.manual_seed(0)
    model = auto[task].from_config(config, attn_implementation=attention)
    lora = LoraConfig(
        task_type=task, target_modules=["query", "value"], r=4, init_lora_weights=False
    )
    return get_peft_model(model, lora)


def loss_and_gradients(model: torch.nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and trainable gradients on a padded batch of 3 rows of lengths 9, 5 and 2."""
    torch.manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[2, 2:] = 0
    model.zero_grad()
    model.train()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 2, 1]))
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(out.loss.detach()), grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_position_layer_gives_the_loss_and_gradients_of_the_whole_layer(attention):
    model = tiny_bert_lora("SEQ_CLS", attention)
    expected_loss, expected = loss_and_gradients(model)
    assert pooled_only.install(model, VOCAB)
    loss, grads = loss_and_gradients(model)
    assert loss == pytest.approx(expected_loss, abs=1e-5)
    assert set(grads) == set(expected) and any("lora_A" in n for n in grads)
    assert any("classifier" in n for n in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, expected[name], atol=1e-5), name
        assert float(expected[name].abs().max()) > 0, name  # every factor really trains

    pooled_only.uninstall(model)
    assert "forward" not in vars(pooled_only.last_encoder_layer(model))
    assert loss_and_gradients(model)[0] == pytest.approx(expected_loss, abs=1e-6)


def test_the_last_feed_forward_runs_at_one_position():
    model = tiny_bert_lora("SEQ_CLS", "sdpa")
    assert pooled_only.install(model, VOCAB)
    layers = model.get_base_model().bert.encoder.layer
    seen: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(layers):
        layer.intermediate.dense.register_forward_hook(
            lambda _m, args, _o, i=index: seen.__setitem__(f"layer{i}", tuple(args[0].shape))
        )
    loss_and_gradients(model)
    assert seen == {"layer0": (3, 9, 32), "layer1": (3, 1, 32)}  # [batch, positions, hidden]


def test_a_per_token_head_is_refused_and_left_as_it_was():
    model = tiny_bert_lora("TOKEN_CLS", "sdpa")
    layer = pooled_only.last_encoder_layer(model)
    assert layer is not None  # the layout matches: only the probe tells the head reads every token
    assert not pooled_only.install(model, VOCAB)
    assert "forward" not in vars(layer) and not hasattr(layer, pooled_only.ATTRIBUTE)


def test_a_decoder_is_not_an_encoder_layer():
    assert pooled_only.last_encoder_layer(tiny_llama_lora(VOCAB)) is None


def test_a_toy_classification_run_uses_it(tmp_path, one_torch_thread):
    run = train_recipe(
        "seq_cls_tiny_bert_lora",
        "train.max_steps=2",
        "data.max_train_examples=16",
        "data.max_eval_examples=4",
        output_root=tmp_path,
    )
    log = (run / "train.log").read_text()
    assert "pooled_only=True" in log, log
