"""The speed options keep the numbers: packed rows give the per-token losses of padded rows,
attention per example gives the losses and gradients of the block mask, logits-only gives the
full-logits loss and gradients, the token-normalised loss does not depend on grad_accum, a
compiled run trains, and a non-finite step is skipped on the device."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from framework.tasks import packing, token_loss
from framework.tasks.chat import IGNORE_INDEX
from tests.helpers import metrics, tiny_llama_lora, train_recipe

VOCAB = 96


@pytest.fixture(scope="module")
def tiny_llama(one_torch_thread):
    """A 2-layer fp32 Llama (SDPA) with LoRA on q/v and on lm_head, dropout off."""
    return tiny_llama_lora(VOCAB)


def examples(lengths: list[int], seed: int = 0) -> list[dict[str, list[int]]]:
    """Examples whose first tokens are a prompt (label -100) and the rest an answer."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        prompt = n // 2
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return rows


def padded(features: list[dict[str, list[int]]]) -> dict[str, Any]:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = (
            torch.tensor(f["input_ids"]),
            torch.tensor(f["labels"]),
            1,
        )
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def per_token_losses(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Cross-entropy of every labelled token, in row-major order."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses[targets.reshape(-1) != IGNORE_INDEX]


def test_packed_row_gives_the_per_token_losses_of_padded_rows(tiny_llama):
    features = examples([9, 4, 13, 6])
    with torch.no_grad():
        apart = per_token_losses(tiny_llama, padded(features))
        together = per_token_losses(tiny_llama, packing.pack(features))
    assert (
        apart.numel()
        == together.numel()
        == sum(len(f["input_ids"]) - len(f["input_ids"]) // 2 for f in features)
    )
    assert torch.allclose(apart, together, atol=1e-5, rtol=0), (apart - together).abs().max()
    assert packing.packing_works(tiny_llama, VOCAB)


def test_per_example_attention_gives_the_losses_and_gradients_of_the_block_mask(
    tiny_llama, monkeypatch
):
    """train.packed_attention: one causal SDPA call per example of a packed row (no mask) gives
    the loss and every LoRA gradient of SDPA over the row's block-diagonal mask (fp32, CPU)."""
    from framework.training import packed_attention

    features = examples([9, 4, 13, 6], seed=2)
    calls: list[bool] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(
            kwargs.get("is_causal") is True
            and args[3:4] in ((), (None,))
            and kwargs.get("attn_mask") is None
        )
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    results = []
    try:
        for per_example in (False, True):
            if per_example:
                assert packed_attention.install(tiny_llama)
                assert packing.packing_works(tiny_llama, VOCAB, with_lengths=True)
            calls.clear()
            tiny_llama.zero_grad()
            batch = packing.pack(features, with_lengths=per_example)
            total, count = token_loss.causal_lm_loss(tiny_llama, batch, logits_only=False)
            (total / count).backward()
            results.append(
                (
                    total.detach(),
                    calls.copy(),
                    {
                        n: p.grad.clone()
                        for n, p in tiny_llama.named_parameters()
                        if p.grad is not None
                    },
                )
            )
    finally:
        packed_attention.uninstall(tiny_llama)
    (mask_loss, mask_calls, mask_grads), (loss, example_calls, grads) = results
    assert mask_calls == [False, False]  # 2 layers, one masked call over the whole row each
    assert example_calls == [True] * 8  # 2 layers x 4 examples, causal, no mask
    assert torch.allclose(mask_loss, loss, atol=1e-5, rtol=0), (mask_loss, loss)
    assert mask_grads.keys() == grads.keys() and len(grads) == 10  # (2 x (q, v) + lm_head) x (A, B)
    for name, grad in grads.items():
        assert torch.allclose(mask_grads[name], grad, atol=1e-5, rtol=1e-4), name
    assert tiny_llama.get_base_model().config._attn_implementation == "sdpa"


def test_per_example_attention_defers_to_sdpa_where_it_does_not_apply():
    """A sliding window shorter than an example, or no lengths: transformers' SDPA, mask and all."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from framework.training import packed_attention

    module = torch.nn.Module()
    module.is_causal = True
    q, k, v = (
        torch.randn(1, 2, 8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)
    )
    band = torch.ones(8, 8, dtype=torch.bool).tril() & ~torch.ones(8, 8, dtype=torch.bool).tril(-3)
    mask = band[None, None]  # what the model would build for a 3-token window
    for extra in ({"sliding_window": 3, packing.LENGTHS_KEY: (5, 3)}, {}):
        got, _ = packed_attention.attention(module, q, k, v, mask, **extra)
        want, _ = sdpa_attention_forward(module, q, k, v, mask)
        assert torch.equal(got, want)
    per_example, _ = packed_attention.attention(
        module, q, k, v, mask, sliding_window=8, **{packing.LENGTHS_KEY: (5, 3)}
    )
    assert not torch.allclose(per_example, want)  # the window covers each example: per example


@pytest.mark.parametrize("head_dim", [16, 272])  # 272 > 256: keys repeated, not SDPA's GQA
def test_per_example_attention_equals_sdpa_over_the_block_mask(head_dim, monkeypatch):
    from transformers.integrations import sdpa_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from framework.training import packed_attention

    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 2
    g = torch.Generator().manual_seed(head_dim)
    q = torch.randn(1, 4, 9, head_dim, generator=g)
    k, v = (torch.randn(1, 2, 9, head_dim, generator=g) for _ in range(2))
    example = torch.tensor([0] * 5 + [1] * 3 + [2])
    mask = (example[:, None] == example[None, :]) & torch.ones(9, 9, dtype=torch.bool).tril()
    want, _ = sdpa_attention_forward(module, q, k, v, mask[None, None], scaling=0.3)

    def not_this_way(*args, **kwargs):
        raise AssertionError("deferred to transformers' SDPA over the mask")

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", not_this_way)
    got, _ = packed_attention.attention(
        module, q, k, v, mask[None, None], scaling=0.3, **{packing.LENGTHS_KEY: (5, 3, 1)}
    )
    assert got.shape == want.shape == (1, 9, 4, head_dim)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_packing_is_refused_for_a_model_that_attends_across_examples():
    class Leaky(torch.nn.Module):
        """Each position sees the running mean of every earlier token, boundaries or not."""

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, VOCAB)
            self.config = None

        def forward(self, input_ids, position_ids=None, use_cache=None):
            x = self.embed(input_ids).cumsum(1)
            return type("Out", (), {"logits": x / torch.arange(1, x.shape[1] + 1)[None, :, None]})

    assert not packing.packing_works(Leaky(), VOCAB)


@pytest.mark.parametrize("form", ["padded", "packed"])
def test_logits_only_loss_and_gradients_equal_full_logits(tiny_llama, form, monkeypatch):
    features = examples([7, 12, 5], seed=1)
    batch = packing.pack(features) if form == "packed" else padded(features)
    results = []
    for logits_only in (False, True):
        if logits_only:
            batch = {**batch, token_loss.TARGETS_KEY: token_loss.target_positions(batch["labels"])}
            monkeypatch.setattr(token_loss, "CHUNK_ELEMENTS", 4 * VOCAB)  # several fp32 chunks
        tiny_llama.zero_grad()
        total, count = token_loss.causal_lm_loss(tiny_llama, batch, logits_only)
        (total / count).backward()
        grads = {n: p.grad.clone() for n, p in tiny_llama.named_parameters() if p.grad is not None}
        results.append((total.detach(), count, grads))
    (full, n_full, g_full), (only, n_only, g_only) = results
    assert n_full == n_only == sum(len(f["input_ids"]) - len(f["input_ids"]) // 2 for f in features)
    assert torch.allclose(full, only, atol=1e-5, rtol=1e-6), (full, only)
    assert g_full.keys() == g_only.keys() and any("lm_head" in n for n in g_full)
    for name in g_full:
        assert torch.allclose(g_full[name], g_only[name], atol=1e-6, rtol=1e-5), name
    if form == "packed":  # the head ran only where labels are: fewer rows than tokens
        positions = batch[token_loss.TARGETS_KEY]
        assert positions.numel() == n_only < batch["input_ids"].shape[1] - 1


# ---- whole runs (in-process, tiny Llama, 2 optimizer steps) ------------------------------------
LEAN = [
    "train.max_steps=2",
    "train.log_every=1",
    "data.max_train_examples=16",
    "data.max_eval_examples=4",
    "data.max_length=48",
    "peft.dropout=0",
]


def adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_token_normalised_loss_is_invariant_to_grad_accum(tmp_path, one_torch_thread):
    """Global batch 4 as 4 x 1, 2 x 2 and 1 x 4: micro-batches hold different numbers of label
    tokens, yet every token weighs the same, so SGD (linear in the gradient) makes the same
    update and the logged per-token losses agree."""
    runs = [
        train_recipe(
            "sft_tiny_llama_lora",
            *LEAN,
            f"train.batch_size={b}",
            f"train.grad_accum={a}",
            "train.optimizer=sgd",
            "train.lr=0.5",
            output_root=tmp_path / f"{b}x{a}",
        )
        for b, a in ((4, 1), (2, 2), (1, 4))
    ]
    reference = adapter(runs[0])
    losses = [[r["loss"] for r in metrics(run, "train")] for run in runs]
    for run, run_losses in zip(runs[1:], losses[1:]):
        assert max(abs(a - b) for a, b in zip(run_losses, losses[0])) < 1e-5, losses
        weights = adapter(run)
        for name, tensor in reference.items():
            assert torch.allclose(weights[name], tensor, atol=1e-5, rtol=0), name
    assert any(t.abs().max() > 0 for k, t in reference.items() if "lora_B" in k)


def test_compiled_tiny_run_trains(tmp_path, one_torch_thread):
    """train.compile through accelerate's dynamo plugin; aot_eager keeps the test lean (inductor's
    C++ code generation takes minutes on 2 cores) while dynamo still traces every step."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run = train_recipe(
        "sft_tiny_llama_lora",
        *LEAN,
        "train.batch_size=2",
        "train.compile=true",
        "train.compile_backend=aot_eager",
        output_root=tmp_path,
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    losses = [r["loss"] for r in metrics(run, "train")]
    assert len(losses) == 2 and all(loss == loss and loss < 1e3 for loss in losses)
    torch._dynamo.reset()


def test_length_grouped_batches_are_seeded_and_pad_less():
    from framework.training.loaders import LengthGroupedSampler

    lengths = [
        int(x) for x in torch.randint(5, 200, (404,), generator=torch.Generator().manual_seed(3))
    ]
    sampler = LengthGroupedSampler(lengths, group=200, seed=7, batch=8)
    sampler.set_epoch(1)
    order = list(sampler)
    assert sorted(order) == list(range(404))
    again = LengthGroupedSampler(lengths, group=200, seed=7, batch=8)  # a resumed run: same order
    again.set_epoch(1)
    assert list(again) == order
    sampler.set_epoch(2)
    assert list(sampler) != order

    batches = [order[k : k + 8] for k in range(0, len(order), 8)]
    assert len(batches[-1]) == 4  # the short batch closes the epoch; none in between

    def padded_tokens(indices):
        return sum(
            max(lengths[i] for i in indices[k : k + 8]) * len(indices[k : k + 8])
            for k in range(0, len(indices), 8)
        )

    shuffled = torch.randperm(404, generator=torch.Generator().manual_seed(7)).tolist()
    assert padded_tokens(order) < 0.8 * padded_tokens(shuffled)
    # The epoch opens with the longest batch of its first group (out of memory at step 1), then
    # long and short batches alternate rather than running longest to shortest.
    longest = [max(lengths[i] for i in batch) for batch in batches]
    assert longest[0] == max(lengths[i] for i in order[:200])
    first_group = longest[1:25]
    assert first_group != sorted(first_group, reverse=True)


def test_profile_writes_a_trace_and_the_top_ops(tmp_path, one_torch_thread):
    run = train_recipe(
        "seq_cls_tiny_bert_lora",
        "train.max_steps=5",
        "train.profile=true",
        "data.max_train_examples=48",
        "data.max_eval_examples=4",
        output_root=tmp_path,
    )
    assert (run / "profile" / "trace.json").stat().st_size > 0
    assert "Self CPU" in (run / "profile" / "top_ops.txt").read_text()
